"""A texture for the whole head mesh, continued from a UV albedo of the face.

The UV albedo maps of the toolkit cover the face model's fitting region (the
[0, 1]^2 UV tile: face, ears, neck front). The ICT head and neck (scalp, the
back of the head and neck) use a second tile, [1, 2] x [0, 1], that no photo
is unwrapped into. :class:`HeadTexture` completes a face map into an atlas of
both tiles side by side, (3, R, 2R):

* **the face tile**: the map itself, padded past the edges of its UV islands
  (push-pull from the covered texels), so that bilinear or mipmapped sampling
  at an island's border never picks up the background of the map, with the
  skin's grain (below) added where the map is flatter than skin (smooth
  continuations where neither photo nor model had detail);
* **the head tile**: the colour continued from the face over the mesh (a
  harmonic interpolation: every head vertex takes the average of its
  neighbours, the vertices on the face's border are fixed to the face map's
  local colour), so that the colour matches across the border and changes
  smoothly over the scalp, plus the skin's fine grain (isotropic random-phase
  noise with the spectrum of the high-frequency band of the cleanest of a
  forehead and two cheek patches) so that no texel is flat fill. The scalp
  is textured as skin: hair is not modelled.

A face model without a second tile (head triangles textured by the face
tile) gets the face tile alone.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla
import torch
import torch.nn.functional as F
from torch import nn

from .face_model import FaceModel
from .filters import gaussian_blur, push_pull_fill
from .uv_layout import UVLayout, texel_barycentrics

__all__ = ["HeadTexture", "head_texture_for"]

#: Sigma of the blur, as a share of the map side, that gives the face border's local colour (the head
#: continues this, not single texels) and separates the skin's fine grain (what is above it).
BORDER_BLUR = 1 / 96
#: Side of the skin patches whose fine grain the texture repeats, as a share of the map side.
GRAIN_PATCH = 1 / 10
#: Largest standard deviation of that grain ([0, 1] units): clean skin's at 512 texels is about 0.01.
GRAIN_MAX_STD = 0.012
#: Smallest standard deviation of that grain: a map smooth everywhere (a small, blurred face) has almost no
#: grain to copy, and a texture flat to within a grey level looks painted in a viewer.
GRAIN_MIN_STD = 0.005
#: Standard deviation of a fine luminance dither (white noise, 0.75 grey levels) added to that grain in the head
#: tile (the face tile keeps the map's own detail where it has any): a grain
#: copied from a blurred photo has mostly low frequencies, and some of its 5x5 windows are flat to within half
#: a grey level (banding in 8-bit, a painted look in a viewer).
GRAIN_DITHER_STD = 0.003


def _tile_of(uvs: torch.Tensor, faces_uv: torch.Tensor) -> torch.Tensor:
    """(F,) the UV tile (0, 1, ...) along u that each triangle lies in."""
    return uvs[faces_uv][..., 0].mean(1).floor().long().clamp_min(0)


def _harmonic_weights(faces: np.ndarray, inner: np.ndarray, border: np.ndarray) -> np.ndarray:
    """(I, Bd) weights giving each inner vertex its harmonic interpolation (uniform graph Laplacian) of the
    border vertices' values; inner vertices cut off from the border take the border's mean."""
    index = {v: i for i, v in enumerate(np.concatenate([inner, border]))}
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    edges = np.array([(index[a], index[b]) for a, b in edges if a in index and b in index])
    n = len(index)
    adjacency = sp.coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(n, n)).tocsr()
    adjacency = ((adjacency + adjacency.T) > 0).astype(np.float64)
    laplacian = (sp.diags(np.asarray(adjacency.sum(1)).ravel()) - adjacency).tocsc()
    I = len(inner)
    tie = 1e-6  # a faint pull to the border's mean keeps components without a border vertex solvable
    system = laplacian[:I, :I] + tie * sp.identity(I, format="csc")
    rhs = -laplacian[:I, I:].toarray() + tie / len(border)
    return spla.splu(system).solve(rhs)


class HeadTexture(nn.Module):
    """Completes face UV albedo maps into whole-head texture atlases (see the module docstring).

    Args:
        face_model: the face model (its head triangles and UVs, the face region, the landmarks).
        resolution: side R of the face maps.

    Attributes:
        tiles: number of UV tiles side by side in the atlas (2 for ICT, 1 without a head tile).
    """

    def __init__(self, face_model: FaceModel, resolution: int):
        super().__init__()
        device = face_model.mean_shape.device
        model = face_model.cpu()  # built on the CPU (scipy), the face model moved back at the end
        self.resolution = R = resolution
        layout = UVLayout(model, R)
        self.register_buffer("face_mask", layout.mask[None].clone())  # (1, 1, R, R)
        uvs, faces, faces_uv = model.uvs, model.head_faces, model.head_faces_uv
        tile = _tile_of(uvs, faces_uv)
        head = tile == 1
        self.tiles = 2 if head.any() else 1
        self.register_buffer("grain_windows", self._grain_windows(model, layout))
        if self.tiles == 1:
            face_model.to(device)
            return
        head_faces, head_faces_uv = faces[head], faces_uv[head]
        region = model.faces.unique().numpy()
        used = head_faces.unique().numpy()
        border = np.intersect1d(used, region)
        inner = np.setdiff1d(used, region)
        weights = _harmonic_weights(head_faces.numpy(), inner, border)
        # every head-tile vertex's colour as weights over the border vertices
        to_border = torch.zeros(model.num_vertices, len(border))
        to_border[torch.as_tensor(inner)] = torch.as_tensor(weights, dtype=torch.float32)
        to_border[torch.as_tensor(border), torch.arange(len(border))] = 1.0
        self.register_buffer("to_border", to_border)  # (V, Bd)
        # where each border vertex lies in the face tile (the mean of its UV copies there), in [-1, 1] grid units
        corner_vertices, corner_uvs = model.faces.flatten(), uvs[model.faces_uv.flatten()]
        sums = torch.zeros(model.num_vertices, 2).index_add_(0, corner_vertices, corner_uvs)
        counts = torch.zeros(model.num_vertices).index_add_(0, corner_vertices, torch.ones(len(corner_vertices)))
        border_uv = sums[torch.as_tensor(border)] / counts[torch.as_tensor(border), None]
        self.register_buffer("border_grid", torch.stack([2 * border_uv[:, 0] - 1, 1 - 2 * border_uv[:, 1]], -1))
        head_uv_px = torch.stack([(uvs[:, 0] - 1) * R, (1 - uvs[:, 1]) * R], -1)
        texel_face, texel_bary = texel_barycentrics(head_uv_px, head_faces_uv, R)
        self.register_buffer("head_mask", (texel_face >= 0).float()[None, None])
        self.register_buffer("texel_vertices", head_faces[texel_face.clamp_min(0)])  # (R, R, 3)
        self.register_buffer("texel_bary", texel_bary * (texel_face >= 0)[..., None])
        face_model.to(device)

    @staticmethod
    def _grain_windows(model: FaceModel, layout: UVLayout) -> torch.Tensor:
        """(3, 4) the skin patches (row, column, height, width in texels) the grain may be taken from: the
        forehead (above the brows, landmarks 19 and 24, by 0.4 of the outer eye corners' distance) and the
        middle of each cheek (between jaw landmarks 2 / 14 and the nose's 31 / 35)."""
        R = layout.resolution
        shape = model.mean_shape
        landmarks = shape[model.landmark_indices]
        eyes = (landmarks[36] - landmarks[45]).norm()
        targets = [(landmarks[19] + landmarks[24]) / 2 + torch.tensor([0.0, 0.4, 0.0]) * eyes,
                   (landmarks[2] + landmarks[31]) / 2, (landmarks[14] + landmarks[35]) / 2]
        points = layout.to_uv(shape[None])[0].permute(1, 2, 0)  # (R, R, 3)
        side = max(4, int(round(GRAIN_PATCH * R)))
        windows = []
        for target in targets:
            distance = (points - target).norm(dim=-1) + (1 - layout.mask[0]) * 1e9
            row, col = divmod(int(distance.argmin()), R)
            windows.append([min(max(row - side // 2, 0), R - side), min(max(col - side // 2, 0), R - side), side,
                            side])
        return torch.tensor(windows)

    def _masked_blur(self, face_map: torch.Tensor) -> torch.Tensor:
        sigma = BORDER_BLUR * self.resolution
        weight = gaussian_blur(self.face_mask, sigma)
        return gaussian_blur(face_map * self.face_mask, sigma) / weight.clamp_min(1e-6)

    def _grain(self, face_map: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) the skin's fine grain (map minus its blur) as isotropic random-phase noise, periodic and
        tiled over the map: of the candidate patches (:meth:`_grain_windows`) the one that varies least (the
        others may hold hair, stubble or wrinkles), its Fourier amplitudes averaged over each ring of spatial
        frequency (no direction: no streaks), with fixed random phases shared by the channels (the grain's
        colour), its standard deviation between :data:`GRAIN_MIN_STD` and :data:`GRAIN_MAX_STD`."""
        detail = face_map - smooth
        patches = torch.stack([detail[..., t : t + h, l : l + w] for t, l, h, w in self.grain_windows.tolist()], 1)
        patches = patches - patches.mean((-1, -2), keepdim=True)  # (B, W, 3, h, w)
        quietest = patches.std((-1, -2)).mean(-1).argmin(1)
        patch = patches[torch.arange(len(face_map)), quietest]  # (B, 3, h, w)
        h, w = patch.shape[-2:]
        frequency = torch.stack(torch.meshgrid(torch.fft.fftfreq(h) * h, torch.fft.fftfreq(w) * w, indexing="ij"))
        ring = frequency.norm(dim=0).round().long().flatten().to(patch.device)
        amplitude = torch.fft.fft2(patch).abs().flatten(2)  # (B, 3, h * w)
        rings = int(ring.max()) + 1
        count = torch.zeros(rings, device=patch.device).index_add_(0, ring, torch.ones(len(ring), device=patch.device))
        total = torch.zeros(*amplitude.shape[:2], rings, device=patch.device).index_add_(2, ring, amplitude)
        ring_amplitude = (total / count)[..., ring].view(patch.shape)
        noise = torch.randn(h, w, generator=torch.Generator().manual_seed(0)).to(patch)
        phase = torch.fft.fft2(noise)
        grain = torch.fft.ifft2(ring_amplitude * (phase / phase.abs().clamp_min(1e-12))).real
        std = grain.std((-1, -2), keepdim=True)
        grain = grain * std.clamp(GRAIN_MIN_STD, GRAIN_MAX_STD) / std.clamp_min(1e-12)
        R = self.resolution
        return grain.repeat(1, 1, math.ceil(R / h), math.ceil(R / w))[..., :R, :R]

    def forward(self, face_map: torch.Tensor) -> torch.Tensor:
        """The atlas (B, 3, R, tiles * R) of face maps (B, 3, R, R) in [0, 1]."""
        if face_map.shape[-1] != self.resolution or face_map.shape[-2] != self.resolution:
            raise ValueError(f"face_map: expected (B, 3, {self.resolution}, {self.resolution}), "
                             f"got {tuple(face_map.shape)}")
        smooth = self._masked_blur(face_map)
        grain = self._grain(face_map, smooth)
        mean = F.avg_pool2d(face_map, 5, 1, 2, count_include_pad=False)
        local_std = (F.avg_pool2d(face_map**2, 5, 1, 2, count_include_pad=False) - mean**2).clamp_min(0).sqrt()
        flat = (1 - local_std.amax(1, keepdim=True) / grain.std((-1, -2)).amax(1)[:, None, None, None]
                .clamp_min(1e-6)).clamp(0, 1)
        face_tile = push_pull_fill(face_map + grain * flat * self.face_mask,
                                   self.face_mask.expand(len(face_map), -1, -1, -1))
        if self.tiles == 1:
            return face_tile.clamp(0, 1)
        grid = self.border_grid[None, :, None].expand(len(face_map), -1, -1, -1)
        border = F.grid_sample(smooth, grid, mode="bilinear", align_corners=False)[..., 0]  # (B, 3, Bd)
        colours = torch.einsum("vd,bcd->bcv", self.to_border, border)  # (B, 3, V)
        corners = colours[:, :, self.texel_vertices]  # (B, 3, R, R, 3)
        dither = GRAIN_DITHER_STD * torch.randn(self.resolution, self.resolution,
                                                generator=torch.Generator().manual_seed(1)).to(grain)
        head = (corners * self.texel_bary[None, None]).sum(-1) + (grain + dither) * self.head_mask
        head = push_pull_fill(head, self.head_mask.expand(len(face_map), -1, -1, -1))
        return torch.cat([face_tile, head], -1).clamp(0, 1)


@functools.lru_cache(maxsize=4)
def head_texture_for(face_model: FaceModel, resolution: int) -> HeadTexture:
    """One shared :class:`HeadTexture` per face model and map side (building one takes about a second)."""
    return HeadTexture(face_model, resolution)
