"""Loss functions of the fitting stages (functions; weights come from configs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["photometric_loss", "landmark_loss", "gaussian_prior", "lighting_monochrome_loss", "high_pass"]


def photometric_loss(render: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over masked pixels of the per-pixel colour distance.

    Args:
        render, image: (B, 3, H, W).
        mask: (B, 1, H, W) weights in [0, 1].

    Returns:
        (B,) ``sum(mask * sqrt(eps + |render - image|^2)) / max(sum(mask), 1)``.
    """
    if render.shape != image.shape or mask.shape[1] != 1:
        raise ValueError(f"photometric_loss: got render {tuple(render.shape)}, image {tuple(image.shape)}, "
                         f"mask {tuple(mask.shape)}")
    distance = torch.sqrt(eps + ((render - image) ** 2).sum(1, keepdim=True))
    return (distance * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """Weighted mean squared landmark distance in units of ``scale`` pixels.

    Args:
        predicted, target: (B, L, 2) pixels.
        weights: (L,).

    Returns:
        (B,).
    """
    distance2 = ((predicted - target) ** 2).sum(-1) / scale**2
    return (distance2 * weights).sum(-1) / weights.sum()


def gaussian_prior(coeffs: torch.Tensor) -> torch.Tensor:
    """Negative log of a N(0, 1) prior up to a constant: ``sum(c^2) / 2`` per row (B,)."""
    return 0.5 * (coeffs**2).sum(-1)


def lighting_monochrome_loss(gamma: torch.Tensor) -> torch.Tensor:
    """Squared deviation of each channel's SH coefficients from their mean over
    RGB (B,), as the reference's ``reg_gamma``: white light unless the photo
    says otherwise, so colour casts go to the albedo only when needed."""
    g = gamma.view(-1, 3, 9)
    return ((g - g.mean(1, keepdim=True)) ** 2).flatten(1).mean(1)


def high_pass(image: torch.Tensor, sigma: float = 2.0) -> torch.Tensor:
    """Image minus its Gaussian blur (B, C, H, W): the fine-detail band."""
    radius = max(1, int(3 * sigma + 0.5))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    C = image.shape[1]
    padded = F.pad(image, (radius, radius, radius, radius), mode="reflect")
    blurred = F.conv2d(padded, kernel.view(1, 1, 1, -1).expand(C, 1, 1, -1), groups=C)
    blurred = F.conv2d(blurred, kernel.view(1, 1, -1, 1).expand(C, 1, -1, 1), groups=C)
    return image - blurred
