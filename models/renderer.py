"""Differentiable mesh renderer with a rasterisation cache.

:class:`Renderer` draws a face mesh seen by a :class:`~models.camera.PinholeCamera`
with a UV albedo map (or per-vertex colours) and per-vertex spherical-harmonics
shading, as the reference renderer does: colour = texel(uv) x interpolated
shading, no anti-aliasing, no culling.

Fast path. Rasterisation (pytorch3d, on CPU a naive loop) is the expensive
part and only decides which face covers each pixel. The renderer caches that
``pix_to_face`` and, on every call, recomputes perspective-correct
barycentric coordinates in torch from the current vertices, so texture,
lighting and small geometry updates cost only a gather and a texture lookup,
and gradients reach the vertices. The cache is refreshed when a vertex moved
more than ``refresh_pixels`` since it was made, every ``refresh_every`` calls,
when the batch changes, or on :meth:`Renderer.invalidate`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .camera import PinholeCamera
from .config import RenderSettings
from .face_ops import vertex_normals
from .rasterize import perspective_barycentrics, rasterize_faces
from .shading import sh_shading

__all__ = ["RenderOutput", "Renderer", "sample_uv_map"]


@dataclass
class RenderOutput:
    """Per-pixel render results (background pixels are zero).

    Attributes:
        image: (B, 3, H, W) albedo x shading.
        mask: (B, 1, H, W) 1 where the mesh covers the pixel.
        albedo: (B, 3, H, W) sampled albedo.
        shading: (B, 3, H, W) interpolated SH shading (ones if no lighting given).
        uv: (B, 2, H, W) interpolated UV coordinates (v up).
        normals: (B, 3, H, W) interpolated unit normals (world space).
        depth: (B, 1, H, W) view depth.
        pix_to_face: (B, H, W) covering face, -1 for background.
    """

    image: torch.Tensor
    mask: torch.Tensor
    albedo: torch.Tensor
    shading: torch.Tensor
    uv: torch.Tensor
    normals: torch.Tensor
    depth: torch.Tensor
    pix_to_face: torch.Tensor


def sample_uv_map(uv_map: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of a UV map.

    Args:
        uv_map: (B, C, R, W) (square, or an atlas of tiles side by side); row 0 is v = 1.
        uv: (B, H, W, 2) coordinates in [0, 1], v up.

    Returns:
        (B, C, H, W).
    """
    grid = torch.stack([2.0 * uv[..., 0] - 1.0, 1.0 - 2.0 * uv[..., 1]], -1)
    return F.grid_sample(uv_map, grid, mode="bilinear", padding_mode="border", align_corners=False)


class Renderer(nn.Module):
    """Render a triangle mesh with a UV albedo map and SH lighting.

    Args:
        faces: (F, 3) vertex indices of the triangles to draw.
        faces_uv: (F, 3) UV-vertex indices of those triangles.
        uvs: (T, 2) UV coordinates.
        camera: the camera (its ``image_size`` is the output size).
        settings: cache and tiling settings.
    """

    def __init__(
        self,
        faces: torch.Tensor,
        faces_uv: torch.Tensor,
        uvs: torch.Tensor,
        camera: PinholeCamera,
        settings: RenderSettings | None = None,
    ):
        super().__init__()
        self.register_buffer("faces", faces.long())
        self.register_buffer("faces_uv", faces_uv.long())
        self.register_buffer("uvs", uvs.float())
        self.camera = camera
        self.settings = settings or RenderSettings()
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None  # (pix_to_face, verts_px at rasterisation)
        self._calls_since_raster = 0
        self.num_rasterizations = 0  # batch items rasterised so far

    @classmethod
    def for_face_model(cls, face_model, camera: PinholeCamera, settings: RenderSettings | None = None, head=False):
        """A renderer of a :class:`~models.FaceModel`'s fitting region (or head)."""
        faces = face_model.head_faces if head else face_model.faces
        faces_uv = face_model.head_faces_uv if head else face_model.faces_uv
        return cls(faces, faces_uv, face_model.uvs, camera, settings).to(face_model.mean_shape.device)

    def invalidate(self) -> None:
        """Drop the cached rasterisation."""
        self._cache = None

    def _pix_to_face(self, verts_px: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Cached face-per-pixel map; only the batch items that moved are re-rasterised."""
        s = self.settings
        cache = self._cache
        if cache is None or cache[1].shape != verts_px.shape or (0 < s.refresh_every <= self._calls_since_raster):
            stale = torch.ones(verts_px.shape[0], dtype=torch.bool, device=verts_px.device)
        else:
            stale = (verts_px.detach() - cache[1]).abs().flatten(1).amax(1) > s.refresh_pixels
        if bool(stale.any()):
            index = stale.nonzero()[:, 0]
            fresh = rasterize_faces(verts_px[index], depth[index], self.faces, self.camera.image_size, s.tiles)
            if bool(stale.all()):
                self._cache = (fresh, verts_px.detach().clone())
            else:
                self._cache[0][index] = fresh
                self._cache[1][index] = verts_px.detach()[index]
            self._calls_since_raster = 0
            self.num_rasterizations += len(index)
        self._calls_since_raster += 1
        return self._cache[0]

    def forward(
        self,
        vertices: torch.Tensor,
        albedo_map: torch.Tensor | None = None,
        gamma: torch.Tensor | None = None,
        vertex_colors: torch.Tensor | None = None,
        normals: torch.Tensor | None = None,
    ) -> RenderOutput:
        """Render.

        Args:
            vertices: (B, V, 3) world-space vertices.
            albedo_map: (B, 3, R, W) UV albedo or texture atlas (row 0 is v = 1); or
            vertex_colors: (B, V, 3) per-vertex albedo instead of a map.
            gamma: (B, 27) SH lighting (see :mod:`models.shading`); None renders unlit albedo.
            normals: (B, V, 3) unit vertex normals; None computes them from the drawn faces.
        """
        if (albedo_map is None) == (vertex_colors is None):
            raise ValueError("give exactly one of albedo_map and vertex_colors")
        B, S = vertices.shape[0], self.camera.image_size
        verts_px = self.camera.project(vertices)
        depth = self.camera.depth(vertices)
        pix_to_face = self._pix_to_face(verts_px, depth)

        fg = pix_to_face >= 0
        b_idx, row, col = fg.nonzero(as_tuple=True)
        face = pix_to_face[b_idx, row, col]
        corners = self.faces[face]  # (P, 3)
        centres = torch.stack([col, row], -1).to(vertices.dtype) + 0.5
        bary = perspective_barycentrics(
            centres, verts_px[b_idx[:, None], corners], depth[b_idx[:, None], corners]
        )  # (P, 3)

        def interpolate(per_vertex: torch.Tensor) -> torch.Tensor:  # (B, V, C) -> (P, C)
            return (per_vertex[b_idx[:, None], corners] * bary[..., None]).sum(1)

        def to_image(values: torch.Tensor) -> torch.Tensor:  # (P, C) -> (B, C, H, W)
            out = values.new_zeros(B, S, S, values.shape[-1])
            out = out.index_put((b_idx, row, col), values)
            return out.permute(0, 3, 1, 2)

        mask = fg[:, None].to(vertices.dtype)
        uv_corners = self.uvs[self.faces_uv[face]]  # (P, 3, 2)
        uv = to_image((uv_corners * bary[..., None]).sum(1))
        if normals is None:
            normals = vertex_normals(vertices, self.faces)
        pixel_normals = F.normalize(to_image(interpolate(normals)), dim=1, eps=1e-12)
        inv_depth = (bary / depth[b_idx[:, None], corners]).sum(-1, keepdim=True)
        pixel_depth = to_image(1.0 / inv_depth)

        if albedo_map is not None:
            albedo = sample_uv_map(albedo_map, uv.permute(0, 2, 3, 1)) * mask
        else:
            albedo = to_image(interpolate(vertex_colors))
        if gamma is not None:
            shading = to_image(interpolate(sh_shading(normals, gamma)))
        else:
            shading = mask.expand(B, 3, S, S)
        return RenderOutput(
            image=albedo * shading,
            mask=mask,
            albedo=albedo,
            shading=shading,
            uv=uv,
            normals=pixel_normals,
            depth=pixel_depth,
            pix_to_face=pix_to_face,
        )
