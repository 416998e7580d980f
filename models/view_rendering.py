"""Rendering a reconstructed face from several viewpoints (``render_3d_face.py``).

:class:`ViewMesh` is a display mesh with UVs; faces whose UVs fall outside
the [0, 1]^2 texture tile (the ICT head and neck, then the eyeballs, teeth and sockets)
sample the next tiles of a texture atlas
(:func:`~models.part_texture.display_atlas` completes a face map into one). :func:`render_views` orbits the camera
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
from .part_texture import display_mesh
from .renderer import Renderer

__all__ = ["ViewMesh", "mesh_from_face_model", "mesh_from_obj", "atlas_mapping", "render_views", "contact_sheet"]



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


def mesh_from_face_model(face_model: FaceModel, identity=None, expression=None, gaze=None) -> ViewMesh:
    """The face model's display mesh (unposed: head and, where the model has them, eyeballs, teeth and
    sockets, :func:`~models.part_texture.display_mesh`) for the given coefficients (mean shape by default)
    and eyeball turns ``gaze`` (1, 2, 2) (straight ahead by default)."""
    with torch.no_grad():
        vertices = face_model.display_shape(identity, expression, gaze)[0]
    return ViewMesh(vertices, *display_mesh(face_model, vertices))


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


def atlas_mapping(mesh: ViewMesh, texture: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """UVs (T, 2) and faces' UV indices (F, 3) that sample a texture atlas of N UV tiles side by side,
    (3, R, N * R) (a face map alone, or :class:`~models.head_texture.HeadTexture`'s atlas): u divided by N."""
    tiles = round(texture.shape[-1] / texture.shape[-2])
    if tiles < 1 or texture.shape[-1] != tiles * texture.shape[-2]:
        raise ValueError(f"texture: expected (3, R, N * R), got {tuple(texture.shape)}")
    uvs = mesh.uvs.to(texture.device) / torch.tensor([float(tiles), 1.0], device=texture.device)
    return uvs, mesh.faces_uv.to(texture.device)


def render_views(
    mesh: ViewMesh,
    texture: torch.Tensor,
    yaws_deg: list[float],
    sh: torch.Tensor | None,
    shading: str = "lit",
    resolution: int = 512,
    pitch_deg: float = 0.0,
) -> list[torch.Tensor]:
    """Render the mesh from several yaw angles.

    Args:
        mesh: the mesh (on the device to render on).
        texture: (3, R, N * R) texture atlas in [0, 1] of the mesh's N UV tiles (:func:`atlas_mapping`).
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

    uvs, faces_uv = atlas_mapping(mesh, texture)
    renderer = Renderer(mesh.faces, faces_uv, uvs, camera, RenderSettings(refresh_pixels=0.0)).to(device)

    images = []
    for yaw in yaws_deg:
        angles = torch.tensor([[math.radians(pitch_deg), math.radians(yaw), 0.0]], device=device)
        posed = vertices[None] @ euler_angles_to_matrix(angles).transpose(1, 2)
        normals = vertex_normals(posed, mesh.faces)
        out = renderer(posed, texture[None], sh if shading == "lit" else None, normals=normals)
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


