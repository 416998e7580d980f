"""Detail generator: a VAE over the high-frequency detail of UV albedo maps.

The coarse albedo from the UV albedo model (UVAPM) lacks pores, fine wrinkles
and hair-level texture; the detail generator supplies them from a latent
(a vector, or a coarse grid of vectors) that the fitting stage optimises by
gradient. Two models share
one interface (``latent_dim``, ``decode(z)``, ``combine(coarse, decoded)``):

* :class:`DetailVAE` (our default). Detail is defined as
  ``map - low_pass(map)`` where :func:`low_pass` area-downsamples to the
  UVAPM resolution (``low_pass_resolution``, default 256) and bilinearly
  upsamples back, so the detail holds exactly the frequencies the coarse
  model cannot represent. It is luminance (1 channel, added equally to R, G
  and B) or RGB (3 channels), chosen by ``channels`` in the config and
  recorded in every checkpoint. The decoder ends in
  ``high_pass(detail_scale * tanh(raw))``: detail values are small signed
  numbers in albedo units ([0, 1] scale); tanh bounds them by
  ``detail_scale`` (default 0.5, far above real skin detail, so tanh stays
  in its near-linear range for typical values while outliers cannot run
  away during latent fitting), and the high-pass keeps the decoded detail
  out of the coarse model's frequency band.
  :func:`combine_detail` adds the detail to the coarse map and clamps to
  [0, 1]. Encoder and decoder are convolutional with GroupNorm (no
  BatchNorm: the decoder is deterministic, batch-independent and
  differentiable with respect to the latent).
* :class:`PaperDetailVAE`, the architecture of the paper's
  ``detail_model/variational_autoencoder.pth`` (ResNet-50 encoder, 500-d
  latent, fully connected decoder with a sigmoid output, HSV combination by
  :func:`combine_detail_hsv_reference`).

:func:`load_detail_generator` picks the model from the checkpoint's content:
the paper's file is a plain state_dict; ours is a dict with
``format_version``, ``config`` and ``state_dict`` (training checkpoints add
``training``, which loading a generator ignores).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.atomic import save_torch
from utils.config import ConfigError
from utils.errors import FileFormatError
from utils.safe_load import load_torch

__all__ = [
    "FORMAT_VERSION",
    "LUMINANCE_WEIGHTS",
    "REFERENCE_RGB_SCALE",
    "REFERENCE_DETAIL_V_SCALE",
    "DetailGeneratorConfig",
    "DetailVAEOutput",
    "DetailVAE",
    "PaperDetailVAE",
    "low_pass",
    "high_pass",
    "rgb_to_luminance",
    "extract_detail",
    "reparameterize",
    "kl_divergence",
    "combine_detail",
    "rgb_to_hsv",
    "hsv_to_rgb",
    "combine_detail_hsv_reference",
    "detail_generator_checkpoint",
    "save_detail_generator",
    "load_detail_checkpoint",
    "load_detail_generator",
]

#: Version of our checkpoint dict; files with a newer version are refused.
FORMAT_VERSION = 1
#: ITU-R BT.601 luma weights, used to turn RGB detail into luminance detail.
LUMINANCE_WEIGHTS = (0.299, 0.587, 0.114)
#: The reference's HSV helpers divide RGB by 255 before the conversion and
#: multiply by 255 after it, although its maps are already in [0, 1].
REFERENCE_RGB_SCALE = 255.0
#: The reference multiplies the decoder output by 0.01 before using it as V.
REFERENCE_DETAIL_V_SCALE = 0.01
#: Side of the smallest feature map of :class:`DetailVAE`.
_BOTTLENECK_SIZE = 4


# ----------------------------------------------------------------------------- detail definition


def low_pass(maps: torch.Tensor, resolution: int) -> torch.Tensor:
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


def high_pass(maps: torch.Tensor, resolution: int) -> torch.Tensor:
    """``maps - low_pass(maps, resolution)``: (B, C, H, W) signed detail."""
    return maps - low_pass(maps, resolution)


def rgb_to_luminance(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) -> (B, 1, H, W) with the BT.601 weights :data:`LUMINANCE_WEIGHTS`."""
    weights = rgb.new_tensor(LUMINANCE_WEIGHTS).view(1, 3, 1, 1)
    return (rgb * weights).sum(dim=1, keepdim=True)


def extract_detail(maps: torch.Tensor, low_pass_resolution: int, channels: int) -> torch.Tensor:
    """Detail of (B, 3, H, W) RGB UV maps as (B, ``channels``, H, W).

    Luminance detail (``channels == 1``) is the luminance of the RGB detail
    (the two operations commute: both are linear).
    """
    detail = high_pass(maps, low_pass_resolution)
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


# ----------------------------------------------------------------------------- HSV (paper's combination)


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB -> (B, 3, H, W) HSV, differentiable.

    Hue is in [0, 1) (fraction of a turn), saturation ``(max - min) / max``
    (0 where max is 0) and value ``max`` in the input's own scale. Grey
    pixels get hue 0, as in the reference. Divisions use safe denominators,
    so gradients stay finite at grey and black pixels.
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
    """(B, 3, H, W) HSV (hue in [0, 1)) -> (B, 3, H, W) RGB in the scale of V, differentiable.

    Uses the closed form ``c_n = v - v s clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n + 6 h) mod 6`` and n = 5, 3, 1 for R, G, B, equal to the
    six-sector formula of the reference.
    """
    hue, saturation, value = hsv.unbind(dim=1)
    offsets = hsv.new_tensor([5.0, 3.0, 1.0]).view(1, 3, 1, 1)
    k = torch.remainder(offsets + 6.0 * hue.unsqueeze(1), 6.0)
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return value.unsqueeze(1) * (1.0 - saturation.unsqueeze(1) * ramp)


def combine_detail_hsv_reference(coarse: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
    """Albedo of the paper's mode, reproducing the reference (see the format spec, §11.4).

    The reference converts the coarse map to HSV after dividing it by 255
    (it is already in [0, 1]), **replaces** V by ``0.01 * decoder_out``,
    converts back, multiplies by 255 and clamps to [0, 255]. Hue and
    saturation therefore come from the coarse map and the brightness
    (max channel) is ``255 * 0.01 * decoder_out = 2.55 * decoder_out``: the
    coarse brightness is discarded and the result lies in [0, 2.55]. The
    equivalent closed form, for a pixel whose coarse max is not 0, is
    ``coarse / max_c(coarse) * 2.55 * decoder_out``. Values above 1 are not
    clamped, as in the reference.

    Args:
        coarse: (B, 3, r, r) RGB in [0, 1]; bilinearly resized
            (``align_corners=False``) to the decoder's resolution.
        decoder_out: (B, 1, R, R) output of :meth:`PaperDetailVAE.decode`, in (0, 1).

    Returns:
        (B, 3, R, R) RGB in [0, 2.55].
    """
    size = decoder_out.shape[-2:]
    if coarse.shape[-2:] != size:
        coarse = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    hsv = rgb_to_hsv(coarse / REFERENCE_RGB_SCALE)
    value = decoder_out[:, :1] * REFERENCE_DETAIL_V_SCALE
    rgb = hsv_to_rgb(torch.cat((hsv[:, :2], value), dim=1))
    return (rgb * REFERENCE_RGB_SCALE).clamp(0.0, REFERENCE_RGB_SCALE)


# ----------------------------------------------------------------------------- VAE maths


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


# ----------------------------------------------------------------------------- our model


@dataclass
class DetailGeneratorConfig:
    """Architecture of :class:`DetailVAE`; stored in every checkpoint.

    Attributes:
        resolution: side of the detail map (a power of two >= 8; 512 or 1024).
        channels: 1 (luminance detail) or 3 (RGB detail).
        latent_dim: latent values per cell of the latent grid.
        latent_grid: side of the latent grid. 1: one global latent vector of
            ``latent_dim`` values; G > 1: ``latent_dim`` values for each of
            G x G regions of the map (a spatial latent, which generalises from
            few training maps because skin detail is local texture). The
            flattened latent has :meth:`latent_size` values.
        base_channels: feature channels at full resolution; doubled at each
            halving of the resolution, up to ``max_channels``.
        max_channels: cap on the feature channels.
        detail_scale: scale of the decoder's ``tanh`` output in albedo units
            (decoded detail stays within +-2 detail_scale after the high-pass).
        low_pass_resolution: the UVAPM resolution defining the detail (must
            be below ``resolution``).
    """

    resolution: int = 512
    channels: int = 1
    latent_dim: int = 256
    latent_grid: int = 1
    base_channels: int = 16
    max_channels: int = 256
    detail_scale: float = 0.5
    low_pass_resolution: int = 256

    def check(self) -> None:
        """Raise :class:`~utils.config.ConfigError` naming the first invalid value."""
        res = self.resolution
        if res < 2 * _BOTTLENECK_SIZE or res & (res - 1):
            raise ConfigError(f"model.resolution must be a power of two >= {2 * _BOTTLENECK_SIZE}, got {res}")
        if self.channels not in (1, 3):
            raise ConfigError(f"model.channels must be 1 (luminance) or 3 (RGB), got {self.channels}")
        for name in ("latent_dim", "base_channels", "max_channels"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be positive, got {getattr(self, name)}")
        grid = self.latent_grid
        if grid < 1 or grid & (grid - 1) or grid > res // 2:
            raise ConfigError(f"model.latent_grid must be a power of two in [1, resolution/2={res // 2}], got {grid}")
        if not self.detail_scale > 0:
            raise ConfigError(f"model.detail_scale must be positive, got {self.detail_scale}")
        if not 1 <= self.low_pass_resolution < res:
            raise ConfigError(
                f"model.low_pass_resolution must be in [1, resolution={res}), got {self.low_pass_resolution}"
            )

    def latent_size(self) -> int:
        """Values in the flattened latent: ``latent_dim * latent_grid**2``."""
        return self.latent_dim * self.latent_grid**2

    def bottleneck_size(self) -> int:
        """Side of the smallest feature map: 4, or the latent grid when it is larger."""
        return max(_BOTTLENECK_SIZE, self.latent_grid)

    def level_channels(self) -> list[int]:
        """Feature channels per level, from full resolution (index 0) to the bottleneck."""
        levels = int(math.log2(self.resolution // self.bottleneck_size()))
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(levels + 1)]


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

    The raw output ``detail_scale * tanh(raw)`` goes through :func:`high_pass`, so decoded detail has no
    component at the UVAPM resolution: it cannot shift the coarse colours it is added to. Values lie in
    (-2 detail_scale, 2 detail_scale).
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
        return high_pass(self.scale * torch.tanh(self.head(x)), self.low_pass_resolution)


class DetailVAE(nn.Module):
    """Our detail generator (see the module docstring).

    In training mode the forward pass samples the latent by
    :func:`reparameterize`; in eval mode it uses the posterior mean, so
    reconstructions are deterministic. :meth:`decode` never samples.
    """

    mode = "additive"

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

    def extra_repr(self) -> str:
        cfg = self.config
        return (f"resolution={cfg.resolution}, channels={cfg.channels}, latent_dim={cfg.latent_dim}, "
                f"latent_grid={cfg.latent_grid}, "
                f"low_pass_resolution={cfg.low_pass_resolution}")


# ----------------------------------------------------------------------------- the paper's model


class PaperDetailVAE(nn.Module):
    """The paper's detail VAE, key-compatible with ``variational_autoencoder.pth``.

    Encoder: a torchvision ResNet-50 (built without weights, never
    downloaded) whose ``conv1`` takes one channel (7x7, stride 2, no bias),
    all children but ``fc`` kept, then a Flatten: (B, 1, H, W) -> (B, 2048).
    Heads ``fc_mu``, ``fc_logvar``: Linear(2048 -> latent_dim). Decoder:
    Linear(latent -> 512), ReLU, Linear(512 -> 1024), ReLU,
    Linear(1024 -> out_size**2), Sigmoid, Unflatten to (1, out_size, out_size).

    The reference's own sampling uses ``exp(2 logvar)`` as the standard
    deviation (a bug; it is never used at inference); the forward pass here
    uses the correct :func:`reparameterize`.

    Args:
        out_size: side of the decoded map (512 in the paper's checkpoint;
            tests build small instances with the same key layout).
        latent_dim: 500 in the paper's checkpoint.
    """

    mode = "hsv_reference"

    def __init__(self, out_size: int = 512, latent_dim: int = 500):
        super().__init__()
        from torchvision.models import resnet50

        resnet = resnet50(weights=None)
        resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.encoder = nn.Sequential(*list(resnet.children())[:-1])
        self.encoder.add_module("flatten", nn.Flatten())
        self.fc_mu = nn.Linear(2048, latent_dim)
        self.fc_logvar = nn.Linear(2048, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 512),
            nn.ReLU(),
            nn.Linear(512, 1024),
            nn.ReLU(),
            nn.Linear(1024, out_size * out_size),
            nn.Sigmoid(),
            nn.Unflatten(1, (1, out_size, out_size)),
        )
        self.out_size = out_size
        self._latent_dim = latent_dim

    @property
    def latent_dim(self) -> int:
        return self._latent_dim

    @property
    def resolution(self) -> int:
        return self.out_size

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) -> (mu, logvar), each (B, latent_dim)."""
        features = self.encoder(image)
        return self.fc_mu(features), self.fc_logvar(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, 1, out_size, out_size) in (0, 1)."""
        return self.decoder(z)

    def forward(self, image: torch.Tensor, eps: torch.Tensor | None = None) -> DetailVAEOutput:
        mu, logvar = self.encode(image)
        z = reparameterize(mu, logvar, eps) if self.training else mu
        return DetailVAEOutput(self.decode(z), mu, logvar)

    def combine(self, coarse: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """:func:`combine_detail_hsv_reference`."""
        return combine_detail_hsv_reference(coarse, decoded)

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, latent_dim={self.latent_dim}"


# ----------------------------------------------------------------------------- checkpoints


def detail_generator_checkpoint(model: DetailVAE) -> dict:
    """Our checkpoint dict: ``format_version``, plain ``config``, CPU ``state_dict``."""
    return {
        "format_version": FORMAT_VERSION,
        "config": asdict(model.config),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }


def save_detail_generator(path: str | os.PathLike, model: DetailVAE) -> None:
    """Save ``model`` atomically (loadable with ``weights_only=True``)."""
    save_torch(path, detail_generator_checkpoint(model))


def _few(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''}]"


def _load_state(path: os.PathLike, model: nn.Module, state_dict: Mapping, what: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the offending keys."""
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state_dict.items()):
        raise FileFormatError(path, f"{what}: state_dict holds entries that are not named tensors")
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        parts = ([f"missing keys {_few(missing)}"] if missing else []) + (
            [f"unexpected keys {_few(unexpected)}"] if unexpected else [])
        raise FileFormatError(path, f"wrong architecture for {what}: " + "; ".join(parts))
    wrong = [f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
             for key, value in expected.items() if state_dict[key].shape != value.shape]
    if wrong:
        raise FileFormatError(path, f"wrong architecture for {what}: shape mismatch {_few(wrong, 2)}")
    model.load_state_dict(state_dict, strict=True)


def _config_from_dict(path: os.PathLike, config) -> DetailGeneratorConfig:
    if not isinstance(config, Mapping):
        raise FileFormatError(path, "'config' is not a mapping")
    known = {f.name for f in fields(DetailGeneratorConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise FileFormatError(path, f"config has unknown keys {_few(unknown)}")
    result = DetailGeneratorConfig(**config)
    try:
        result.check()
    except ConfigError as err:
        raise FileFormatError(path, f"invalid config ({err})") from None
    return result


def _paper_model(path: os.PathLike, state_dict: Mapping) -> PaperDetailVAE:
    needed = ["fc_mu.weight", "decoder.4.weight"]
    missing = [key for key in needed if not isinstance(state_dict.get(key), torch.Tensor)]
    if missing:
        raise FileFormatError(
            path, f"a plain state_dict, but not the paper's detail VAE layout: missing keys {_few(missing)}"
        )
    out_features = state_dict["decoder.4.weight"].shape[0]
    out_size = math.isqrt(out_features)
    if out_size * out_size != out_features:
        raise FileFormatError(path, f"decoder.4.weight has {out_features} outputs, not a square map")
    model = PaperDetailVAE(out_size=out_size, latent_dim=state_dict["fc_mu.weight"].shape[0])
    _load_state(path, model, state_dict, "the paper's detail VAE")
    return model


def load_detail_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[DetailVAE | PaperDetailVAE, dict]:
    """Load a detail generator and the raw checkpoint dict it came from.

    Returns:
        The model (in eval mode, on ``map_location``) and the checkpoint dict
        (for our training checkpoints it holds ``training``).

    Raises:
        FileFormatError: truncated or corrupt file, a pickle that would run
            code, a newer ``format_version``, or the wrong architecture.
    """
    checkpoint = load_torch(path, map_location=map_location)
    if not isinstance(checkpoint, Mapping):
        raise FileFormatError(path, f"not a detail generator checkpoint (holds a {type(checkpoint).__name__})")
    if "format_version" in checkpoint:
        version = checkpoint["format_version"]
        if not isinstance(version, int) or version < 1:
            raise FileFormatError(path, f"invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            raise FileFormatError(
                path, f"format_version {version} is newer than this toolkit supports ({FORMAT_VERSION}); "
                "update the toolkit"
            )
        missing = [key for key in ("config", "state_dict") if key not in checkpoint]
        if missing:
            raise FileFormatError(path, f"missing keys {missing}")
        if not isinstance(checkpoint["state_dict"], Mapping):
            raise FileFormatError(path, "'state_dict' is not a mapping")
        model = DetailVAE(_config_from_dict(path, checkpoint["config"]))
        _load_state(path, model, checkpoint["state_dict"], "DetailVAE")
    elif checkpoint and all(isinstance(key, str) for key in checkpoint):
        model = _paper_model(path, checkpoint)
    else:
        raise FileFormatError(path, "not a detail generator checkpoint (neither our format nor a state_dict)")
    return model.to(map_location).eval(), dict(checkpoint)


def load_detail_generator(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> DetailVAE | PaperDetailVAE:
    """Load our :class:`DetailVAE` or the paper's :class:`PaperDetailVAE`, chosen by the file's keys.

    Use ``model.combine(coarse, model.decode(z))`` for the albedo in either
    mode (additive or the paper's HSV replacement).
    """
    return load_detail_checkpoint(path, map_location)[0]
