"""Frequency bands of images and UV maps (pure functions, batch-first).

Two different "high-pass" filters are used in the toolkit, named for what
they remove:

* :func:`area_high_pass` removes what a map of a smaller resolution can hold
  (area-downsample, bilinear upsample back): the detail generator's detail is
  ``map - area_low_pass(map, uvapm_resolution)``, exactly the frequencies the
  coarse UV albedo model cannot represent.
* :func:`gaussian_high_pass` removes a Gaussian blur of a given sigma: the
  fine band of a photo or render (pores, stubble) that stage 3's loss and the
  high-frequency PSNR look at.

:func:`push_pull_fill` completes a map where its weights are low from the
neighbourhood (holes in an unwrapped texture, the padding around UV islands);
:func:`faded_fill` does so near the weighted texels only and fades to a given
colour away from them (what nothing shows takes the face's skin tone rather
than its darkest border's).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

__all__ = ["area_low_pass", "area_high_pass", "gaussian_blur", "gaussian_high_pass", "push_pull_fill",
           "faded_fill", "masked_median"]


def area_low_pass(maps: torch.Tensor, resolution: int) -> torch.Tensor:
    """Area-downsample to ``resolution`` and bilinearly upsample back.

    Args:
        maps: (B, C, H, W) with H, W > ``resolution``.
        resolution: side of the intermediate map (the UVAPM resolution).

    Returns:
        (B, C, H, W), the part of ``maps`` a ``resolution``-sized map holds.
    """
    height, width = maps.shape[-2:]
    if resolution >= min(height, width):
        raise ValueError(f"low-pass resolution {resolution} must be below the map size {height}x{width}")
    small = F.interpolate(maps, size=(resolution, resolution), mode="area")
    return F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)


def area_high_pass(maps: torch.Tensor, resolution: int) -> torch.Tensor:
    """``maps - area_low_pass(maps, resolution)``: (B, C, H, W) signed detail."""
    return maps - area_low_pass(maps, resolution)


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflected borders, (B, C, H, W) -> (B, C, H, W).

    The kernel has radius ``max(1, round(3 sigma))`` pixels.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    C = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    return F.conv2d(blurred, kernel.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)


def gaussian_high_pass(image: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """``image - gaussian_blur(image, sigma)``: (B, C, H, W), the fine-detail band."""
    return image - gaussian_blur(image, sigma)


def push_pull_fill(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Fill low-weight texels smoothly from their neighbourhood (push-pull).

    Args:
        values: (B, C, R, R).
        weights: (B, 1, R, R) in [0, 1]; 1 keeps the value, 0 replaces it.

    Returns:
        (B, C, R, R).
    """
    if min(values.shape[-2:]) <= 1:
        return values
    pooled_w = F.avg_pool2d(weights, 2, ceil_mode=True)
    pooled_v = F.avg_pool2d(values * weights, 2, ceil_mode=True) / pooled_w.clamp_min(1e-8)
    coarse = push_pull_fill(pooled_v, (4.0 * pooled_w).clamp(max=1.0))
    up = F.interpolate(coarse, size=values.shape[-2:], mode="bilinear", align_corners=False)
    return weights * values + (1.0 - weights) * up


def faded_fill(values: torch.Tensor, weights: torch.Tensor, anchor: torch.Tensor | float, fade: float,
               keep: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`push_pull_fill` whose continuation fades to ``anchor`` away from the weighted texels.

    The filled value is ``anchor + reach * (push_pull - anchor)`` with ``reach = exp(-d / (fade R))``, d the
    distance in texels to the nearest texel of weight (or ``keep``) 0.5 or more, and reach at least the
    texel's own weight and ``keep``: the map keeps its values where they are weighted, continues them
    unfaded where ``keep`` says and smoothly across a band about ``fade`` of the map side wide beyond, and is
    ``anchor`` further out.

    Args:
        values: (B, C, R, R).
        weights: (B, 1, R, R) in [0, 1].
        anchor: (B, C, 1, 1) (or broadcastable) value far from the weighted texels.
        fade: the band's e-folding width as a share of the map side; 0 gives :func:`push_pull_fill`.
        keep: optional (B or 1, 1, R, R) in [0, 1], texels where the continuation is kept as it is.

    Returns:
        (B, C, R, R).
    """
    filled = push_pull_fill(values, weights)
    if fade <= 0:
        return filled
    near = weights if keep is None else torch.maximum(weights, keep)
    known = (near >= 0.5).detach().cpu().numpy()[:, 0]
    distance = np.stack([distance_transform_edt(~k) if k.any() else np.full(k.shape, np.inf) for k in known])
    reach = torch.exp(-torch.from_numpy(distance).float().to(values.device)[:, None] / (fade * values.shape[-1]))
    reach = torch.maximum(reach, near)
    return anchor + reach * (filled - anchor)


def masked_median(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel median (B, C, 1, 1) of ``values`` (B, C, R, R) over the texels where ``mask`` (B, 1, R, R)
    is above 0.5, or over every texel of a map whose mask has none."""
    medians = []
    for v, m in zip(values, mask[:, 0] > 0.5):
        texels = v[:, m] if m.any() else v.flatten(1)
        medians.append(texels.median(1).values)
    return torch.stack(medians)[:, :, None, None]
