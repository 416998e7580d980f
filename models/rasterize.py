"""Rasterisation with pytorch3d, tiled for its CPU rasteriser, and
differentiable barycentric coordinates recomputed in torch.

pytorch3d's CPU rasteriser tests every pixel against every face. Splitting
the image into tiles and giving each tile only the faces whose screen
bounding box overlaps it gives the same result (each pixel still sees every
face that can cover it) at a fraction of the cost.

Rasterisation only decides *which* face covers each pixel. Barycentric
coordinates are then computed in torch from the current projected vertices
(:func:`perspective_barycentrics`), so a cached ``pix_to_face`` can be reused
while the vertices move a little and gradients still reach the vertices.
"""

from __future__ import annotations

import math

import torch
from pytorch3d.renderer.mesh.rasterize_meshes import rasterize_meshes
from pytorch3d.structures import Meshes

__all__ = ["rasterize_faces", "perspective_barycentrics"]


def rasterize_faces(
    verts_px: torch.Tensor, depth: torch.Tensor, faces: torch.Tensor, image_size: int, tiles: int = 4
) -> torch.Tensor:
    """Which face covers each pixel (nearest to the camera).

    Args:
        verts_px: (B, V, 2) vertex positions in pixels (x right, y down).
        depth: (B, V) view depth of the vertices (positive in front).
        faces: (F, 3) long.
        image_size: square image side S.
        tiles: tiles per image side (1 = a single pytorch3d call).

    Returns:
        pix_to_face: (B, S, S) long face index, -1 where no face covers the pixel.
    """
    verts_px = verts_px.detach().float()
    depth = depth.detach().float()
    B = verts_px.shape[0]
    tile = math.ceil(image_size / tiles)
    padded = tile * tiles
    out = torch.full((B, padded, padded), -1, dtype=torch.long, device=verts_px.device)
    corners = verts_px[:, faces]  # (B, F, 3, 2)
    lo, hi = corners.min(2).values, corners.max(2).values  # (B, F, 2)
    in_front = (depth[:, faces] > 0).all(-1)  # (B, F)
    # One pytorch3d call rasterises every (batch, tile) pair as its own mesh.
    verts_list, faces_list, slots = [], [], []
    for b in range(B):
        for ty in range(tiles):
            for tx in range(tiles):
                x0, y0 = tx * tile, ty * tile
                # Faces whose bounding box reaches a pixel centre of this tile.
                sel = (
                    in_front[b]
                    & (hi[b, :, 0] >= x0)
                    & (lo[b, :, 0] <= x0 + tile)
                    & (hi[b, :, 1] >= y0)
                    & (lo[b, :, 1] <= y0 + tile)
                ).nonzero()[:, 0]
                if sel.numel() == 0:
                    continue
                used, local_faces = torch.unique(faces[sel], return_inverse=True)
                # Tile pixels to pytorch3d NDC (+X left, +Y up, pixel centres at 1 - (2j+1)/S).
                ndc = torch.cat(
                    [
                        1.0 - 2.0 * (verts_px[b, used, :1] - x0) / tile,
                        1.0 - 2.0 * (verts_px[b, used, 1:] - y0) / tile,
                        depth[b, used, None],
                    ],
                    -1,
                )
                verts_list.append(ndc)
                faces_list.append(local_faces)
                slots.append((b, y0, x0, sel))
    if not slots:
        return out[:, :image_size, :image_size]
    pix_to_face, _, _, _ = rasterize_meshes(
        Meshes(verts=verts_list, faces=faces_list), image_size=tile, blur_radius=0.0, faces_per_pixel=1,
        bin_size=0, perspective_correct=True,
    )
    first_face = 0
    for k, (b, y0, x0, sel) in enumerate(slots):
        local = pix_to_face[k, :, :, 0] - first_face  # packed index -> index into this tile's faces
        out[b, y0 : y0 + tile, x0 : x0 + tile] = torch.where(local >= 0, sel[local.clamp_min(0)], -1)
        first_face += sel.numel()
    return out[:, :image_size, :image_size]


def perspective_barycentrics(
    pixels: torch.Tensor, triangles_px: torch.Tensor, triangles_depth: torch.Tensor
) -> torch.Tensor:
    """Perspective-correct barycentric coordinates of pixel centres.

    Args:
        pixels: (P, 2) pixel-centre positions.
        triangles_px: (P, 3, 2) projected corners of the covering triangle.
        triangles_depth: (P, 3) view depth of the corners.

    Returns:
        (P, 3) weights summing to 1 that interpolate 3D attributes
        (screen-space weights divided by depth, renormalised).
    """
    a, b, c = triangles_px.unbind(1)
    area = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    area = torch.where(area.abs() < 1e-12, torch.full_like(area, 1e-12), area)

    def edge(p, q):  # signed area of (p, q, pixel)
        return (q[:, 0] - p[:, 0]) * (pixels[:, 1] - p[:, 1]) - (q[:, 1] - p[:, 1]) * (pixels[:, 0] - p[:, 0])

    screen = torch.stack([edge(b, c), edge(c, a), edge(a, b)], -1) / area[:, None]
    weights = screen / triangles_depth
    return weights / weights.sum(-1, keepdim=True)
