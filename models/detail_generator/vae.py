"""Our detail generator: a convolutional VAE over the high-frequency detail of UV albedo maps.

Detail is ``map - area_low_pass(map, low_pass_resolution)``
(:func:`~models.filters.area_high_pass`): the low pass area-downsamples to
the UVAPM resolution and bilinearly upsamples back, so the detail holds
exactly the frequencies the coarse model cannot represent. It is luminance
(1 channel, added equally to R, G and B) or RGB (3 channels), chosen by
``channels`` in :class:`~models.config.DetailGeneratorConfig` and recorded in
every checkpoint. The decoder ends in ``area_high_pass(detail_scale *
tanh(raw))``: detail values are small signed numbers in albedo units; tanh
bounds them by ``detail_scale`` (far above real skin detail, so tanh stays
near-linear for typical values while outliers cannot run away during latent
fitting), and the high-pass keeps the decoded detail out of the coarse
model's frequency band. :func:`combine_detail` adds the detail to the coarse
map and clamps to [0, 1]. Encoder and decoder are convolutional with
GroupNorm (no BatchNorm: the decoder is deterministic, batch-independent and
differentiable with respect to the latent).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.colour import rgb_to_luminance
from models.config import DetailGeneratorConfig
from models.filters import area_high_pass

__all__ = [
    "DetailVAEOutput",
    "DetailVAE",
    "extract_detail",
    "combine_detail",
    "reparameterize",
    "kl_divergence",
]


def extract_detail(maps: torch.Tensor, low_pass_resolution: int, channels: int) -> torch.Tensor:
    """Detail of (B, 3, H, W) RGB UV maps as (B, ``channels``, H, W).

    Luminance detail (``channels == 1``) is the luminance of the RGB detail
    (the two operations commute: both are linear).
    """
    detail = area_high_pass(maps, low_pass_resolution)
    if channels == 1:
        return rgb_to_luminance(detail)
    if channels == 3:
        return detail
    raise ValueError(f"channels must be 1 or 3, got {channels}")


def combine_detail(coarse: torch.Tensor, detail: torch.Tensor) -> torch.Tensor:
    """Albedo of our mode: coarse map plus detail, clamped to [0, 1].

    Args:
        coarse: (B, 3, r, r) RGB in [0, 1] at any resolution; bilinearly
            resized (``align_corners=False``) to the detail's resolution.
        detail: (B, 1, R, R) luminance detail (added equally to R, G and B)
            or (B, 3, R, R) RGB detail.

    Returns:
        (B, 3, R, R) albedo in [0, 1].
    """
    if detail.shape[1] not in (1, 3):
        raise ValueError(f"detail must have 1 or 3 channels, got shape {tuple(detail.shape)}")
    size = detail.shape[-2:]
    if coarse.shape[-2:] != size:
        coarse = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    return (coarse + detail).clamp(0.0, 1.0)


def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
    """Sample ``mu + eps * exp(logvar / 2)``.

    Args:
        mu, logvar: (B, D).
        eps: (B, D) standard normal noise; drawn with ``torch.randn_like``
            when None. Passing it makes training independent of the global
            RNG (and of the number of processes).
    """
    if eps is None:
        eps = torch.randn_like(mu)
    return mu + eps * torch.exp(0.5 * logvar)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) in nats, summed over the latent: (B, D) -> (B,)."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(dim=-1)


class DetailVAEOutput(NamedTuple):
    """Output of a detail VAE's forward pass.

    Attributes:
        detail: (B, C, R, R) decoded map (our detail, or the paper's decoder output).
        mu, logvar: (B, D) posterior parameters.
    """

    detail: torch.Tensor
    mu: torch.Tensor
    logvar: torch.Tensor


def _norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with up to 8 groups. Convolutions before it have no bias: the norm would cancel it, and
    Adam would turn the rounding noise of its near-zero gradient into full-size random steps."""
    return nn.GroupNorm(math.gcd(8, channels), channels)


def _down_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Halve the resolution: 3x3 stride-2 conv, GroupNorm, SiLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=2, padding=1, bias=False), _norm(out_channels), nn.SiLU()
    )


def _up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Double the resolution: nearest upsample, 3x3 conv, GroupNorm, SiLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        _norm(out_channels),
        nn.SiLU(),
    )


class DetailEncoder(nn.Module):
    """(B, C, R, R) detail -> posterior (mu, logvar), each (B, latent_size) (cells in row-major order)."""

    def __init__(self, config: DetailGeneratorConfig):
        super().__init__()
        chans = config.level_channels()
        self.stem = nn.Sequential(
            nn.Conv2d(config.channels, chans[0], 3, padding=1, bias=False), _norm(chans[0]), nn.SiLU()
        )
        self.blocks = nn.Sequential(*(_down_block(chans[i], chans[i + 1]) for i in range(len(chans) - 1)))
        # bottleneck -> latent grid; with a 1x1 grid this is a fully connected layer
        cell = config.bottleneck_size() // config.latent_grid
        self.head = nn.Conv2d(chans[-1], 2 * config.latent_dim, cell, stride=cell)
        self.inv_scale = 1.0 / config.detail_scale

    def forward(self, detail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.blocks(self.stem(detail * self.inv_scale))
        mu, logvar = self.head(features).chunk(2, dim=1)
        return mu.flatten(1), logvar.flatten(1)


class DetailDecoder(nn.Module):
    """(B, latent_size) -> (B, C, R, R) detail.

    The raw output ``detail_scale * tanh(raw)`` goes through :func:`~models.filters.area_high_pass`, so
    decoded detail has no component at the UVAPM resolution: it cannot shift the coarse colours it is added
    to. Values lie in (-2 detail_scale, 2 detail_scale).
    """

    def __init__(self, config: DetailGeneratorConfig):
        super().__init__()
        chans = config.level_channels()
        self.latent_shape = (config.latent_dim, config.latent_grid, config.latent_grid)
        cell = config.bottleneck_size() // config.latent_grid
        self.expand = nn.ConvTranspose2d(config.latent_dim, chans[-1], cell, stride=cell)
        self.expand_act = nn.Sequential(_norm(chans[-1]), nn.SiLU())
        self.blocks = nn.Sequential(*(_up_block(chans[i + 1], chans[i]) for i in reversed(range(len(chans) - 1))))
        self.head = nn.Conv2d(chans[0], config.channels, 3, padding=1)
        # Start from "no detail" (the best constant guess) rather than random texture.
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.scale = config.detail_scale
        self.low_pass_resolution = config.low_pass_resolution

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.expand(z.view(z.shape[0], *self.latent_shape))
        x = self.blocks(self.expand_act(x))
        return area_high_pass(self.scale * torch.tanh(self.head(x)), self.low_pass_resolution)


class DetailVAE(nn.Module):
    """Our detail generator (see the module docstring).

    In training mode the forward pass samples the latent by
    :func:`reparameterize`; in eval mode it uses the posterior mean, so
    reconstructions are deterministic. :meth:`decode` never samples.
    """

    def __init__(self, config: DetailGeneratorConfig | None = None):
        super().__init__()
        self.config = config or DetailGeneratorConfig()
        self.config.check()
        self.encoder = DetailEncoder(self.config)
        self.decoder = DetailDecoder(self.config)

    @property
    def latent_dim(self) -> int:
        """Size of the flattened latent (:meth:`DetailGeneratorConfig.latent_size`)."""
        return self.config.latent_size()

    @property
    def resolution(self) -> int:
        return self.config.resolution

    def encode(self, detail: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, C, R, R) detail -> (mu, logvar), each (B, D)."""
        return self.encoder(detail)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, D) latent -> (B, C, R, R) detail."""
        return self.decoder(z)

    def forward(self, detail: torch.Tensor, eps: torch.Tensor | None = None) -> DetailVAEOutput:
        """Encode and decode (B, C, R, R) detail; ``eps`` (B, D) is the sampling noise in training mode."""
        mu, logvar = self.encode(detail)
        z = reparameterize(mu, logvar, eps) if self.training else mu
        return DetailVAEOutput(self.decode(z), mu, logvar)

    def sample(self, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Decode ``num`` latents drawn from the prior (``generator`` on the CPU): (num, C, R, R)."""
        z = torch.randn(num, self.latent_dim, generator=generator)
        return self.decode(z.to(next(self.parameters()).device))

    def combine(self, coarse: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """:func:`combine_detail`."""
        return combine_detail(coarse, decoded)

    def initial_latent(self, texture: torch.Tensor) -> torch.Tensor:
        """The posterior mean of the detail seen in a UV texture (B, 3, r, r): the start of a latent fit (B, D)."""
        detail = extract_detail(_resize(texture, self.resolution), self.config.low_pass_resolution,
                                self.config.channels)
        with torch.no_grad():
            return self.encode(detail)[0]

    def observed_detail(self, texture: torch.Tensor) -> torch.Tensor:
        """The detail of a UV texture (B, 3, r, r) in this model's representation, (B, C, R, R)."""
        return extract_detail(_resize(texture, self.resolution), self.config.low_pass_resolution,
                              self.config.channels)

    def extra_repr(self) -> str:
        cfg = self.config
        return (f"resolution={cfg.resolution}, channels={cfg.channels}, latent_dim={cfg.latent_dim}, "
                f"latent_grid={cfg.latent_grid}, "
                f"low_pass_resolution={cfg.low_pass_resolution}")


def _resize(maps: torch.Tensor, size: int) -> torch.Tensor:
    if maps.shape[-1] == size:
        return maps
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
