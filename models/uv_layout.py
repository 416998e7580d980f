"""A face model's UV layout rasterised into texels.

:class:`UVLayout` knows, for every texel of an R x R UV map, which triangle
covers it and where (barycentric coordinates), so per-vertex quantities
(positions, normals, colours) can be turned into UV maps, and which texel
mirrors it across the face's left-right symmetry plane.
"""

from __future__ import annotations

import torch
from scipy.spatial import cKDTree
from torch import nn

from .face_model import FaceModel
from .rasterize import perspective_barycentrics, rasterize_faces

__all__ = ["UVLayout", "texel_barycentrics"]


def texel_barycentrics(uv_px: torch.Tensor, faces_uv: torch.Tensor, resolution: int) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
    """Which triangle covers each texel of an R x R UV tile, and where.

    Args:
        uv_px: (T, 2) UV vertices in texel coordinates of the tile (x right, y down; row 0 is v = 1).
        faces_uv: (F, 3) triangles of UV vertices.
        resolution: R.

    Returns:
        The covering triangle (R, R) (-1 where none) and the texel centres' barycentric coordinates in it
        (R, R, 3) (zero where none).
    """
    R = resolution
    texel_face = rasterize_faces(uv_px[None], torch.ones(1, len(uv_px)), faces_uv, R, tiles=8)[0]
    rows, cols = (texel_face >= 0).nonzero(as_tuple=True)
    face = texel_face[rows, cols]
    centres = torch.stack([cols, rows], -1).float() + 0.5
    bary = perspective_barycentrics(centres, uv_px[faces_uv[face]], torch.ones(len(face), 3)).clamp(0, 1)
    texel_bary = torch.zeros(R, R, 3)
    texel_bary[rows, cols] = bary / bary.sum(-1, keepdim=True)
    return texel_face, texel_bary


class UVLayout(nn.Module):
    """Texel-to-triangle map of a face model's fitting region.

    Args:
        face_model: the face model (its ``faces``/``faces_uv``/``uvs``).
        resolution: side R of the UV maps.

    Buffers:
        texel_face: (R, R) covering triangle, -1 where no triangle covers the texel.
        texel_bary: (R, R, 3) barycentric coordinates within it.
        mask: (1, R, R) 1 on covered texels.
        mirror: (R, R) flat index of the mirrored texel (self where none is close).
    """

    def __init__(self, face_model: FaceModel, resolution: int):
        super().__init__()
        self.resolution = R = resolution
        self.uv_layout_id = face_model.uv_layout_id
        uvs, faces, faces_uv = face_model.uvs, face_model.faces, face_model.faces_uv
        # UV -> texel pixel coordinates (row 0 is v = 1); a constant depth of 1.
        uv_px = torch.stack([uvs[:, 0] * R, (1.0 - uvs[:, 1]) * R], -1)[None]
        texel_face, texel_bary = texel_barycentrics(uv_px[0], faces_uv, R)
        self.register_buffer("texel_face", texel_face)
        self.register_buffer("texel_bary", texel_bary)
        self.register_buffer("mask", (texel_face >= 0).float()[None])
        self.register_buffer("faces", faces.clone())
        self.register_buffer("mirror", self._mirror_map(face_model))

    def _mirror_map(self, face_model: FaceModel) -> torch.Tensor:
        """Flat texel index of the texel at the mirrored 3D point of the mean shape."""
        R = self.resolution
        points = self.to_uv(face_model.mean_shape[None])[0].permute(1, 2, 0).reshape(-1, 3).numpy()
        covered = self.mask.reshape(-1).bool().numpy()
        index = torch.arange(R * R)
        tree = cKDTree(points[covered])
        mirrored = points[covered] * [-1.0, 1.0, 1.0]
        distance, nearest = tree.query(mirrored)
        # Accept mirrors closer than ~2 texel spacings on the surface.
        spacing = 2.0 * (face_model.mean_shape.max(0).values - face_model.mean_shape.min(0).values).max() / R
        ok = torch.as_tensor(distance) < spacing
        covered_index = index[torch.as_tensor(covered)]
        index[covered_index[ok]] = covered_index[torch.as_tensor(nearest)[ok]]
        return index.view(R, R)

    def to_uv(self, per_vertex: torch.Tensor) -> torch.Tensor:
        """Interpolate per-vertex values into a UV map.

        Args:
            per_vertex: (B, V, C).

        Returns:
            (B, C, R, R), zero on uncovered texels.
        """
        face = self.texel_face.clamp_min(0)
        corners = self.faces[face]  # (R, R, 3)
        values = per_vertex[:, corners]  # (B, R, R, 3, C)
        out = (values * self.texel_bary[None, ..., None]).sum(-2)
        return out.permute(0, 3, 1, 2) * self.mask

    def mirrored(self, uv_map: torch.Tensor) -> torch.Tensor:
        """The map seen through the symmetry: texel t takes the value of its mirror (B, C, R, R)."""
        B, C, R, _ = uv_map.shape
        return uv_map.reshape(B, C, R * R)[:, :, self.mirror.reshape(-1)].reshape(B, C, R, R)
