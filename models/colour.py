"""Colour conversions (pure functions, differentiable, batch-first (B, 3, H, W) unless noted)."""

from __future__ import annotations

import torch

__all__ = ["LUMINANCE_WEIGHTS", "rgb_to_luminance", "rgb_to_hsv", "hsv_to_rgb", "srgb_to_linear", "linear_to_srgb",
           "srgb_to_lab",
           "individual_typology_angle", "delta_e"]

#: ITU-R BT.601 luma weights, used to turn RGB detail into luminance detail.
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)


def rgb_to_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) with the BT.601 weights :data:`LUMINANCE_WEIGHTS`."""
    weights = rgb.new_tensor(LUMINANCE_WEIGHTS).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 3, H, W) HSV.

    Hue is in [0, 1) (fraction of a turn), saturation ``(max - min) / max``
    (0 where max is 0) and value ``max`` in the input's own scale. Grey
    pixels get hue 0, as in the paper's reference code. Divisions use safe
    denominators, so gradients stay finite at grey and black pixels.
    """
    red, green, blue = rgb.unbind(dim=1)
    maxc, argmax = rgb.max(dim=1)
    minc = rgb.min(dim=1).values
    delta = maxc - minc
    chromatic = delta > 0
    safe_delta = torch.where(chromatic, delta, torch.ones_like(delta))
    safe_max = torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    saturation = torch.where(maxc > 0, delta / safe_max, torch.zeros_like(maxc))
    hue_red = (green - blue) / safe_delta
    hue_green = 2.0 + (blue - red) / safe_delta
    hue_blue = 4.0 + (red - green) / safe_delta
    hue = torch.where(argmax == 0, hue_red, torch.where(argmax == 1, hue_green, hue_blue))
    hue = torch.where(chromatic, torch.remainder(hue / 6.0, 1.0), torch.zeros_like(hue))
    return torch.stack((hue, saturation, maxc), dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) HSV (hue in [0, 1)) -> (B, 3, H, W) RGB in the scale of V.

    Uses the closed form ``c_n = v - v s clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6`` and n = 5, 3, 1 for R, G, B, equal to the
    six-sector formula of the reference.
    """
    hue, saturation, value = hsv.unbind(dim=1)
    offsets = hsv.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value.unsqueeze(1) * (1.0 - saturation.unsqueeze(1) * ramp)


#: sRGB (linear) to CIE XYZ, D65 white (IEC 61966-2-1).
_SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375), (0.2126729, 0.7151522, 0.0721750), (0.0193339, 0.1191920, 0.9503041))
_D65_WHITE = (0.95047, 1.0, 1.08883)


def srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB-encoded values in [0, 1] -> linear light (any shape)."""
    rgb = rgb.clamp(0, 1)
    return torch.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(linear: torch.Tensor) -> torch.Tensor:
    """Linear light in [0, 1] -> sRGB-encoded values (any shape)."""
    linear = linear.clamp(0, 1)
    return torch.where(linear <= 0.0031308, linear * 12.92, 1.055 * linear.clamp_min(1e-12) ** (1 / 2.4) - 0.055)


def srgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """(..., 3) sRGB in [0, 1] -> (..., 3) CIELAB (L in [0, 100]), D65 white; channels last."""
    linear = srgb_to_linear(rgb)
    xyz = linear @ rgb.new_tensor(_SRGB_TO_XYZ).T / rgb.new_tensor(_D65_WHITE)
    delta = 6.0 / 29.0
    f = torch.where(xyz > delta**3, xyz.clamp_min(1e-12) ** (1.0 / 3.0), xyz / (3 * delta**2) + 4.0 / 29.0)
    return torch.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])],
                       dim=-1)


def individual_typology_angle(lab: torch.Tensor) -> torch.Tensor:
    """(..., 3) CIELAB -> (...,) skin tone as the individual typology angle in degrees,
    atan((L - 50) / b): above 55 very light, 41-55 light, 28-41 intermediate, 10-28 tan, -30-10 brown,
    below -30 dark (Chardon et al. 1991)."""
    return torch.rad2deg(torch.atan2(lab[..., 0] - 50.0, lab[..., 2]))


def delta_e(lab_a: torch.Tensor, lab_b: torch.Tensor) -> torch.Tensor:
    """(..., 3), (..., 3) CIELAB -> (...,) colour difference CIE76 (Euclidean distance in CIELAB)."""
    return (lab_a - lab_b).norm(dim=-1)
