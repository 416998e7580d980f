"""Spherical-harmonics Lambertian shading (9 bands per colour channel).

Basis and constants follow the reference (``official_formats.md`` §2.5):
with a = [pi, 2pi/sqrt(3), 2pi/sqrt(8)] and c = [1/sqrt(4pi), sqrt(3)/sqrt(4pi),
3 sqrt(5)/sqrt(12pi)], the basis of a unit normal n is

    Y0 = a0 c0,  Y1 = -a1 c1 ny,  Y2 = a1 c1 nz,  Y3 = -a1 c1 nx,
    Y4 = a2 c2 nx ny,  Y5 = -a2 c2 ny nz,  Y6 = a2 c2 / (2 sqrt 3) (3 nz^2 - 1),
    Y7 = -a2 c2 nx nz,  Y8 = a2 c2 / 2 (nx^2 - ny^2).

Lighting coefficients ``gamma`` are (B, 27), channel-major (R0..8, G0..8,
B0..8), stored **without** the ambient offset: :data:`AMBIENT_OFFSET` (0.8) is
added to band 0 of every channel when shading, so ``gamma = 0`` is a uniform
white light of intensity :data:`AMBIENT_SHADING` (0.8 * 0.886 = 0.709).
"""

from __future__ import annotations

import math

import torch

__all__ = ["AMBIENT_OFFSET", "AMBIENT_SHADING", "sh_basis", "sh_shading", "sh_ambient_offset", "sh_light_colour",
           "scale_light_colour"]

AMBIENT_OFFSET = 0.8

_A = (math.pi, 2 * math.pi / math.sqrt(3.0), 2 * math.pi / math.sqrt(8.0))
_C = (1 / math.sqrt(4 * math.pi), math.sqrt(3.0) / math.sqrt(4 * math.pi), 3 * math.sqrt(5.0) / math.sqrt(12 * math.pi))

#: The shading of every normal under ``gamma = 0``: the ambient offset times the band-0 basis value.
AMBIENT_SHADING = AMBIENT_OFFSET * _A[0] * _C[0]


def sh_ambient_offset(dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """(27,) the offset :func:`sh_shading` adds to ``gamma``: :data:`AMBIENT_OFFSET` on band 0 of each channel."""
    offset = torch.zeros(27, dtype=dtype, device=device)
    offset[::9] = AMBIENT_OFFSET
    return offset


def scale_light_colour(gamma: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Multiply each channel of an SH light, ambient offset included, by a gain: (B, 27), (B, 3) -> (B, 27)."""
    offset = sh_ambient_offset(gamma.dtype, gamma.device)
    return ((gamma + offset).view(-1, 3, 9) * gain[:, :, None]).flatten(1) - offset


def sh_light_colour(gamma: torch.Tensor) -> torch.Tensor:
    """Colour of an SH light, (B, 27) -> (B, 3): its ambient (band 0, offset included) per channel over their mean."""
    dc = (gamma + sh_ambient_offset(gamma.dtype, gamma.device)).view(-1, 3, 9)[:, :, 0].clamp_min(1e-3)
    return dc / dc.mean(1, keepdim=True)


def sh_basis(normals: torch.Tensor) -> torch.Tensor:
    """SH basis of unit normals.

    Args:
        normals: (..., 3).

    Returns:
        (..., 9).
    """
    nx, ny, nz = normals.unbind(-1)
    k0, k1, k2 = _A[0] * _C[0], _A[1] * _C[1], _A[2] * _C[2]
    return torch.stack(
        [
            torch.full_like(nx, k0),
            -k1 * ny,
            k1 * nz,
            -k1 * nx,
            k2 * nx * ny,
            -k2 * ny * nz,
            k2 / (2 * math.sqrt(3.0)) * (3 * nz * nz - 1),
            -k2 * nx * nz,
            k2 / 2 * (nx * nx - ny * ny),
        ],
        -1,
    )


def sh_shading(normals: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """RGB irradiance of unit normals under SH lighting.

    Args:
        normals: (B, N, 3) unit normals (world space).
        gamma: (B, 27) lighting coefficients without the ambient offset.

    Returns:
        (B, N, 3) shading, multiplied with the albedo to give the colour.
    """
    coeffs = (gamma + sh_ambient_offset(gamma.dtype, gamma.device)).view(-1, 3, 9)
    # (B, N, 9) x (B, 3, 9) -> (B, N, 3)
    return torch.einsum("bnk,bck->bnc", sh_basis(normals), coeffs)
