"""Detail generators: a latent -> the high-frequency detail of a UV albedo map.

The coarse albedo of the UV albedo model lacks pores, fine wrinkles and
hair-level texture; a detail generator supplies them from a latent that
stage 3 optimises by gradient. Two models implement :class:`DetailGenerator`:

* :class:`DetailVAE` (:mod:`~models.detail_generator.vae`), ours: additive
  luminance or RGB detail above the UVAPM's frequency band, a spatial latent grid;
* :class:`PaperDetailVAE` (:mod:`~models.detail_generator.paper_vae`), the
  paper's ``variational_autoencoder.pth``: ResNet-50 encoder, 500-d latent,
  HSV value replacement.

:func:`load_detail_generator` (:mod:`~models.detail_generator.checkpoint`)
picks the model from a checkpoint's content. Training lives in
:mod:`~models.detail_generator.training` (data in :mod:`~models.detail_generator.dataset`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

from .checkpoint import (
    FORMAT_VERSION,
    detail_generator_checkpoint,
    load_detail_checkpoint,
    load_detail_generator,
    save_detail_generator,
)
from .paper_vae import PaperDetailVAE, combine_detail_hsv_reference
from .vae import DetailVAE, DetailVAEOutput, combine_detail, extract_detail, kl_divergence, reparameterize

__all__ = [
    "DetailGenerator",
    "DetailVAE",
    "DetailVAEOutput",
    "PaperDetailVAE",
    "FORMAT_VERSION",
    "combine_detail",
    "combine_detail_hsv_reference",
    "extract_detail",
    "kl_divergence",
    "reparameterize",
    "detail_generator_checkpoint",
    "save_detail_generator",
    "load_detail_checkpoint",
    "load_detail_generator",
]


@runtime_checkable
class DetailGenerator(Protocol):
    """What stage 3 needs from a detail generator.

    Attributes:
        resolution: side R of the UV maps it produces.
        latent_dim: size D of its flattened latent.
    """

    resolution: int
    latent_dim: int

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) latent -> (B, C, R, R) decoded map."""

    def combine(self, coarse: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """Coarse albedo (B, 3, r, r) and a decoded map -> (B, 3, R, R) albedo."""

    def initial_latent(self, texture: torch.Tensor) -> torch.Tensor | None:
        """Start of the latent fit from an unwrapped UV texture (B, 3, r, r), or None for zeros."""

    def observed_detail(self, texture: torch.Tensor) -> torch.Tensor | None:
        """A UV texture's own detail as a decoded map (to blend with the generated one), or None
        when the model's combination cannot take it."""
