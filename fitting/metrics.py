"""Image-quality metrics of a re-render against the photo, inside a mask, and the skin tone of a map."""

from __future__ import annotations

import torch
from skimage.metrics import structural_similarity

from models.colour import individual_typology_angle, srgb_to_lab
from models.filters import gaussian_high_pass

__all__ = ["masked_psnr", "masked_ssim", "high_frequency_psnr", "skin_tone"]


def masked_psnr(render: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR in dB (B,) over the mask's pixels (images in [0, 1]; peak 1).

    Args:
        render, image: (B, 3, H, W).
        mask: (B, 1, H, W) in [0, 1] (weights).
    """
    weights = mask.expand_as(render)
    mse = ((render - image) ** 2 * weights).flatten(1).sum(1) / weights.flatten(1).sum(1).clamp_min(1e-8)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def high_frequency_psnr(render: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, sigma: float = 1.5):
    """PSNR (B,) of the high-pass images (image minus Gaussian blur), peak 1, inside the mask."""
    return masked_psnr(gaussian_high_pass(render, sigma), gaussian_high_pass(image, sigma), mask)


def masked_ssim(render: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean SSIM (B,) over pixels where the mask exceeds 0.5 (skimage's 7x7 Gaussian-free SSIM map)."""
    out = []
    for r, i, m in zip(render, image, mask):
        a = r.detach().permute(1, 2, 0).cpu().double().numpy()
        b = i.detach().permute(1, 2, 0).cpu().double().numpy()
        _, ssim_map = structural_similarity(a, b, channel_axis=2, data_range=1.0, full=True)
        inside = m[0].detach().cpu().numpy() > 0.5
        out.append(float(ssim_map.mean(-1)[inside].mean()) if inside.any() else float("nan"))
    return torch.tensor(out, dtype=torch.float32)


def skin_tone(image: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The median colour of the pixels where ``mask`` exceeds 0.5, in CIELAB, and its ITA angle.

    Args:
        image: (B, 3, H, W) sRGB in [0, 1] (a photo crop or a UV map).
        mask: (B, 1, H', W') weights, resized to (H, W) when they differ.

    Returns:
        ``L``, ``a``, ``b`` and ``ita_deg`` (:func:`models.colour.individual_typology_angle`), each (B,);
        NaN for a face without such pixels.
    """
    if mask.shape[-2:] != image.shape[-2:]:
        mask = torch.nn.functional.interpolate(mask, size=image.shape[-2:], mode="bilinear", align_corners=False)
    medians = []
    for colour, weight in zip(image, mask):
        inside = colour[:, weight[0] > 0.5]
        medians.append(inside.median(dim=1).values if inside.shape[1] else colour.new_full((3,), float("nan")))
    lab = srgb_to_lab(torch.stack(medians))
    return {"L": lab[:, 0], "a": lab[:, 1], "b": lab[:, 2], "ita_deg": individual_typology_angle(lab)}
