"""Rendering a reconstructed face from several viewpoints (``render_3d_face.py``).

:class:`ViewMesh` is a display mesh with UVs; faces whose UVs fall outside
the [0, 1]^2 texture tile (the ICT head and neck) are drawn in one flat skin
colour taken from the albedo map. :func:`render_views` orbits the camera
around the head (yaw angles) and draws it unlit, lit with SH lighting, or as
a normal map, on a transparent background.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from utils.errors import FileFormatError
from utils.mesh_io import read_obj, triangulate

from .camera import PinholeCamera
from .config import SHADING_MODES, RenderSettings
from .face_model import FaceModel
from .face_ops import euler_angles_to_matrix, vertex_normals
from .renderer import Renderer

__all__ = ["ViewMesh", "mesh_from_face_model", "mesh_from_obj", "head_texture", "render_views", "contact_sheet"]



@dataclass
class ViewMesh:
    """A triangle mesh with UVs.

    Attributes:
        vertices: (V, 3). faces: (F, 3). faces_uv: (F, 3). uvs: (T, 2).
    """

    vertices: torch.Tensor
    faces: torch.Tensor
    faces_uv: torch.Tensor
    uvs: torch.Tensor

    @property
    def textured(self) -> torch.Tensor:
        """(F,) True for faces whose UVs lie in the texture tile."""
        corners = self.uvs[self.faces_uv]  # (F, 3, 2)
        return ((corners >= -1e-4) & (corners <= 1 + 1e-4)).all(-1).all(-1)


def mesh_from_face_model(face_model: FaceModel, identity=None, expression=None) -> ViewMesh:
    """The face model's head mesh (unposed) for the given coefficients (mean shape by default)."""
    with torch.no_grad():
        vertices = face_model.shape(identity, expression)[0]
    return ViewMesh(vertices, face_model.head_faces, face_model.head_faces_uv, face_model.uvs)


def mesh_from_obj(path) -> ViewMesh:
    """A mesh read from an OBJ with texture coordinates (e.g. our ``mesh.obj``)."""
    try:
        obj = read_obj(path)
    except OSError as err:
        raise FileFormatError(path, f"cannot be read ({err.strerror or err})") from None
    if not len(obj.uvs) or any((t < 0).any() for t in obj.polygon_uvs):
        raise FileFormatError(path, "the mesh has no texture coordinates (vt) on every face")
    faces, faces_uv, _ = triangulate(obj.polygons, obj.polygon_uvs)
    return ViewMesh(torch.as_tensor(obj.vertices), torch.as_tensor(faces), torch.as_tensor(faces_uv),
                    torch.as_tensor(obj.uvs))


def _skin_colour(albedo_map: torch.Tensor) -> torch.Tensor:
    """Median colour of the map's mid-tone texels, (3,)."""
    pixels = albedo_map.flatten(1)
    luminance = pixels.mean(0)
    keep = (luminance > 0.08) & (luminance < 0.95)
    return (pixels[:, keep] if keep.any() else pixels).median(1).values


def head_texture(mesh: ViewMesh, albedo_map: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A texture for the whole head mesh: the UV map, plus a column of its skin colour that the faces outside
    the texture tile (head, neck) sample.

    Args:
        mesh: the mesh.
        albedo_map: (3, R, R) UV albedo.

    Returns:
        The texture (1, 3, R, R + 2), UVs (T + 1, 2) and faces' UV indices (F, 3) to render it with.
    """
    device = albedo_map.device
    R = albedo_map.shape[-1]
    texture = torch.cat([albedo_map, _skin_colour(albedo_map)[:, None, None].expand(3, R, 2)], 2)[None]
    scale = R / (R + 2)
    uvs = torch.cat([mesh.uvs.to(device) * torch.tensor([scale, 1.0], device=device),
                     torch.tensor([[(R + 1) / (R + 2), 0.5]], device=device)])
    faces_uv = torch.where(mesh.textured[:, None].to(device), mesh.faces_uv.to(device),
                           torch.full_like(mesh.faces_uv, len(mesh.uvs)).to(device))
    return texture, uvs, faces_uv


def render_views(
    mesh: ViewMesh,
    albedo_map: torch.Tensor,
    yaws_deg: list[float],
    sh: torch.Tensor | None,
    shading: str = "lit",
    resolution: int = 512,
    pitch_deg: float = 0.0,
) -> list[torch.Tensor]:
    """Render the mesh from several yaw angles.

    Args:
        mesh: the mesh (on the device to render on).
        albedo_map: (3, R, R) UV albedo in [0, 1].
        yaws_deg: camera yaw angles in degrees (0 = frontal, positive shows the subject's right side).
        sh: (1, 27) SH lighting for ``shading="lit"``.
        shading: ``albedo``, ``lit`` or ``normals``.
        resolution: image side.
        pitch_deg: camera pitch in degrees.

    Returns:
        One (4, S, S) RGBA image in [0, 1] per yaw.
    """
    if shading not in SHADING_MODES:
        raise ValueError(f"shading must be one of {SHADING_MODES}, got {shading!r}")
    device = mesh.vertices.device
    centre = (mesh.vertices.max(0).values + mesh.vertices.min(0).values) / 2
    vertices = mesh.vertices - centre
    radius = vertices.norm(dim=-1).max().item()
    camera = PinholeCamera(distance=1.0, image_size=resolution)
    camera = PinholeCamera(distance=camera.focal_px * radius / (0.46 * resolution) + radius, image_size=resolution)

    texture, uvs, faces_uv = head_texture(mesh, albedo_map)
    renderer = Renderer(mesh.faces, faces_uv, uvs, camera, RenderSettings(refresh_pixels=0.0)).to(device)

    images = []
    for yaw in yaws_deg:
        angles = torch.tensor([[math.radians(pitch_deg), math.radians(yaw), 0.0]], device=device)
        posed = vertices[None] @ euler_angles_to_matrix(angles).transpose(1, 2)
        normals = vertex_normals(posed, mesh.faces)
        out = renderer(posed, texture, sh if shading == "lit" else None, normals=normals)
        colour = out.normals * 0.5 + 0.5 if shading == "normals" else out.image
        images.append(torch.cat([colour.clamp(0, 1) * out.mask, out.mask], 1)[0])
    return images


def contact_sheet(images: list[torch.Tensor], columns: int | None = None) -> torch.Tensor:
    """Tile (4, S, S) RGBA images into one (4, rows*S, columns*S) image."""
    columns = columns or len(images)
    rows = math.ceil(len(images) / columns)
    blank = torch.zeros_like(images[0])
    tiles = images + [blank] * (rows * columns - len(images))
    return torch.cat([torch.cat(tiles[r * columns : (r + 1) * columns], 2) for r in range(rows)], 1)


