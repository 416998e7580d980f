"""Lighting presets as SH coefficients for the renderer.

A light setup is a list of directional lights plus an ambient term; it is
converted to the 27 SH coefficients of :mod:`models.shading` by least
squares over normals on the sphere, so the SH shading reproduces
``ambient + sum_i intensity_i * max(0, n . d_i)`` as closely as 9 bands allow.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import LIGHT_PRESETS
from .shading import AMBIENT_OFFSET, sh_basis

__all__ = ["directional_sh", "light_preset", "sphere_normals"]


def sphere_normals(count: int = 2000, hemisphere: bool = False) -> torch.Tensor:
    """Quasi-uniform unit vectors (a Fibonacci sphere), (count, 3) float64; with ``hemisphere`` only z > 0."""
    k = torch.arange(count, dtype=torch.float64) + 0.5
    z = 1 - (1 if hemisphere else 2) * k / count
    r = (1 - z * z).sqrt()
    phi = k * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * phi.cos(), r * phi.sin(), z], -1)


def directional_sh(ambient: float, lights: list, colour=(1.0, 1.0, 1.0)) -> torch.Tensor:
    """SH coefficients (1, 27) (without the ambient offset) of an ambient term plus directional lights."""
    normals = sphere_normals()
    target = torch.full((len(normals),), float(ambient), dtype=torch.float64)
    for direction, intensity in lights:
        d = F.normalize(torch.tensor(direction, dtype=torch.float64), dim=0)
        target = target + intensity * (normals @ d).clamp_min(0)
    basis = sh_basis(normals)  # (N, 9)
    coeffs = torch.linalg.lstsq(basis, target[:, None]).solution[:, 0]
    coeffs[0] -= AMBIENT_OFFSET
    return torch.cat([coeffs * c for c in colour])[None].float()


def light_preset(name: str) -> torch.Tensor:
    """SH coefficients (1, 27) of a named preset (:data:`LIGHT_PRESETS`)."""
    if name not in LIGHT_PRESETS:
        raise ValueError(f"unknown light preset {name!r}; choose one of {sorted(LIGHT_PRESETS)}")
    ambient, lights = LIGHT_PRESETS[name]
    return directional_sh(ambient, lights)
