"""Loss functions of the fitting stages (pure functions; weights come from the configs).

Every function returns one value per face, (B,), so a batch's objective is
a sum over faces and each face's gradient does not depend on the others.
Inputs are checked at entry and a wrong shape raises ValueError naming the
argument, what was expected and what arrived.
"""

from __future__ import annotations

import torch

from models.shading import sh_ambient_offset

__all__ = ["photometric_loss", "landmark_loss", "gaussian_prior", "lighting_monochrome_loss"]


def _expect(condition: bool, name: str, expected: str, tensor: torch.Tensor) -> None:
    if not condition:
        raise ValueError(f"{name}: expected {expected}, got {tuple(tensor.shape)}")


def photometric_loss(render: torch.Tensor, image: torch.Tensor, mask: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Mean over masked pixels of the per-pixel colour distance.

    Args:
        render, image: (B, C, H, W).
        mask: (B, 1, H, W) weights in [0, 1].
        eps: keeps the square root differentiable at a perfect match.

    Returns:
        (B,) ``sum(mask * sqrt(eps + |render - image|^2)) / max(sum(mask), 1)``.
    """
    _expect(render.ndim == 4, "render", "(B, C, H, W)", render)
    _expect(image.shape == render.shape, "image", f"the render's shape {tuple(render.shape)}", image)
    _expect(mask.ndim == 4 and mask.shape[1] == 1 and mask.shape[0] == render.shape[0]
            and mask.shape[2:] == render.shape[2:], "mask", f"({render.shape[0]}, 1, {render.shape[2]}, "
            f"{render.shape[3]})", mask)
    distance = torch.sqrt(eps + ((render - image) ** 2).sum(1, keepdim=True))
    return (distance * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1.0)


def landmark_loss(predicted: torch.Tensor, target: torch.Tensor, weights: torch.Tensor, scale: float) -> torch.Tensor:
    """Weighted mean squared landmark distance in units of ``scale`` pixels.

    Args:
        predicted, target: (B, L, 2) pixels.
        weights: (L,) or (B, L) non-negative (per face: not all zero).
        scale: the length unit in pixels (the image size).

    Returns:
        (B,) ``sum_l w_l |p_l - t_l|^2 / scale^2 / sum_l w_l``.
    """
    _expect(predicted.ndim == 3 and predicted.shape[-1] == 2, "predicted", "(B, L, 2)", predicted)
    _expect(target.shape == predicted.shape, "target", f"the prediction's shape {tuple(predicted.shape)}", target)
    _expect(weights.shape in (predicted.shape[1:2], predicted.shape[:2]), "weights",
            f"({predicted.shape[1]},) or ({predicted.shape[0]}, {predicted.shape[1]})", weights)
    distance2 = ((predicted - target) ** 2).sum(-1) / scale**2
    return (distance2 * weights).sum(-1) / weights.sum(-1).clamp_min(1e-12)


def gaussian_prior(coeffs: torch.Tensor) -> torch.Tensor:
    """Negative log of a N(0, I) prior up to a constant: ``sum(c^2) / 2`` per row of (B, K) -> (B,)."""
    _expect(coeffs.ndim == 2, "coeffs", "(B, K)", coeffs)
    return 0.5 * (coeffs**2).sum(-1)


def lighting_monochrome_loss(gamma: torch.Tensor, colour: torch.Tensor | None = None) -> torch.Tensor:
    """Squared deviation of each channel's SH light from one common light of a given colour, (B, 27) -> (B,).

    The reference's ``reg_gamma`` when ``colour`` is None (white light unless
    the photo says otherwise, so colour casts go to the albedo only when
    needed). With ``colour`` (B, 3), the light is pulled towards that colour
    instead: channel ``c`` divided by ``colour[:, c]`` (ambient offset
    included) should equal the other channels, so a cast that stage 1 gave
    the light is kept rather than pushed back into the albedo.
    """
    _expect(gamma.ndim == 2 and gamma.shape[1] == 27, "gamma", "(B, 27)", gamma)
    g = gamma.view(-1, 3, 9)
    if colour is not None:
        _expect(colour.shape == (gamma.shape[0], 3), "colour", f"({gamma.shape[0]}, 3)", colour)
        g = (g + sh_ambient_offset(gamma.dtype, gamma.device).view(3, 9)) / colour[:, :, None]
    return ((g - g.mean(1, keepdim=True)) ** 2).flatten(1).mean(1)
