"""Settings of the model side, as dataclasses (no torch import, so ``--help`` is fast).

Each dataclass documents its fields and defaults; the YAML files in
``configs/`` mirror them key for key (``tests/test_configs.py`` checks it):

* :class:`RenderSettings`: the cached renderer (:mod:`models.renderer`);
* :class:`DetailGeneratorConfig`: the architecture of our detail VAE, stored
  in every checkpoint (:mod:`models.detail_generator`);
* :class:`DetailTrainingConfig` (with :class:`DetailDataConfig` and
  :class:`DetailAugmentConfig`): ``train_detail_generator.py``, ``configs/detail.yaml``;
* :class:`UVAPMBuildConfig`: ``python -m models.uv_albedo_model build``, ``configs/uvapm.yaml``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from utils.config import ConfigError

__all__ = [
    "LIGHT_PRESETS",
    "SHADING_MODES",
    "RenderSettings",
    "DetailGeneratorConfig",
    "DetailAugmentConfig",
    "DetailDataConfig",
    "DetailTrainingConfig",
    "UVAPMBuildConfig",
]

#: Named light setups of :func:`models.lighting.light_preset`: name -> (ambient, [(direction (x right, y up,
#: z to the camera), intensity), ...]).
LIGHT_PRESETS = {
    "frontal": (0.35, [((0.0, 0.2, 1.0), 0.75)]),
    "studio": (0.25, [((-0.6, 0.5, 0.8), 0.75), ((0.7, 0.1, 0.7), 0.3), ((0.0, 0.4, -1.0), 0.35)]),
}

#: What :func:`models.view_rendering.render_views` draws: the albedo alone, lit by SH light, or the normals.
SHADING_MODES = ("albedo", "lit", "normals")

#: Side of the smallest feature map of the detail VAE.
BOTTLENECK_SIZE = 4


@dataclass
class RenderSettings:
    """Renderer settings.

    Attributes:
        tiles: tiles per image side given to pytorch3d's rasteriser (speed
            only; the result is the same for any value).
        refresh_pixels: re-rasterise a batch item when one of its vertices moved
            more than this many pixels since its cached rasterisation
            (0 re-rasterises every call).
        refresh_every: also re-rasterise the whole batch every N calls (0: never by count).
    """

    tiles: int = 8
    refresh_pixels: float = 1.5
    refresh_every: int = 0


@dataclass
class DetailGeneratorConfig:
    """Architecture of :class:`~models.detail_generator.DetailVAE`; stored in every checkpoint.

    Attributes:
        resolution: side of the detail map (a power of two >= 8; 512 or 1024).
        channels: 1 (luminance detail, added equally to R, G and B) or 3 (RGB detail).
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
    latent_dim: int = 4
    latent_grid: int = 64
    base_channels: int = 16
    max_channels: int = 256
    detail_scale: float = 0.5
    low_pass_resolution: int = 256

    def check(self) -> None:
        """Raise :class:`~utils.config.ConfigError` naming the first invalid value."""
        res = self.resolution
        if res < 2 * BOTTLENECK_SIZE or res & (res - 1):
            raise ConfigError(f"model.resolution must be a power of two >= {2 * BOTTLENECK_SIZE}, got {res}")
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
        return max(BOTTLENECK_SIZE, self.latent_grid)

    def level_channels(self) -> list[int]:
        """Feature channels per level, from full resolution (index 0) to the bottleneck."""
        levels = int(math.log2(self.resolution // self.bottleneck_size()))
        return [min(self.base_channels * 2**i, self.max_channels) for i in range(levels + 1)]


@dataclass
class DetailAugmentConfig:
    """Augmentation of training maps (see :mod:`models.detail_generator.dataset`).

    Attributes:
        brightness: maximum additive brightness change (albedo units).
        contrast: maximum relative contrast change (0.1 = x0.9 .. x1.1).
        max_shift: maximum translation as a fraction of the map side (whole texels).
        flip_map: "" (no flip), "mirror", or an ``.npz`` with ``source`` (R, R, 2).
    """

    brightness: float = 0.03
    contrast: float = 0.1
    max_shift: float = 0.01
    flip_map: str = ""


@dataclass
class DetailDataConfig:
    """Training data of the detail generator.

    Attributes:
        dataset_path: folder of UV maps (searched recursively).
        confidence_suffix: name suffix of confidence maps ("" for none).
        val_split: fraction of the maps held out for validation (at least one).
        num_workers: data loader worker processes per training process.
        augment: see :class:`DetailAugmentConfig`.
    """

    dataset_path: str = ""
    confidence_suffix: str = "_conf"
    val_split: float = 0.1
    num_workers: int = 2
    augment: DetailAugmentConfig = field(default_factory=DetailAugmentConfig)


@dataclass
class DetailTrainingConfig:
    """Everything ``train_detail_generator.py`` needs (``configs/detail.yaml`` mirrors it).

    Attributes:
        model: architecture, stored in every checkpoint.
        data: training data.
        epochs: total number of epochs (a resumed run continues up to it).
        batch_size: global batch size (divisible by the number of processes).
        lr: Adam learning rate of the first epoch.
        lr_decay: learning-rate factor applied after every epoch.
        kl_weight: weight of the KL term per detail value, ``2 sigma^2`` for a
            Gaussian decoder with noise std sigma (albedo units); 2e-5 is
            sigma = 0.003, a third of the typical detail of unwrapped photos.
        seed: seeds the initialisation, the split, the data order, augmentation and noise.
        device: "auto", "cpu", "cuda" or "cuda:N" (under torchrun, CUDA uses the local rank).
        output_dir: folder for checkpoints, metrics and pictures.
        resume: a ``last.pt`` to continue from ("" to start afresh).
        tensorboard: also log to ``output_dir/tensorboard`` (needs the tensorboard package).
        num_visuals: validation maps and random samples drawn per epoch.
    """

    model: DetailGeneratorConfig = field(default_factory=DetailGeneratorConfig)
    data: DetailDataConfig = field(default_factory=DetailDataConfig)
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    lr_decay: float = 0.98
    kl_weight: float = 2e-5
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs/detail"
    resume: str = ""
    tensorboard: bool = False
    num_visuals: int = 4


@dataclass
class UVAPMBuildConfig:
    """Settings of ``python -m models.uv_albedo_model build`` (:func:`models.uv_albedo_model.build_uv_albedo_model`).

    Attributes:
        components: K per channel (the paper: 100).
        resolution: R; maps are area-resized to R x R (the paper: 256).
        confidence_suffix: ``x<suffix>.png`` is the confidence map of ``x.png``; "" ignores them.
        uv_layout_id: UV layout stored in the model; "" takes it from the maps (the
            PNGs this toolkit writes carry it), which must all agree.
        batch_size: maps per batch (memory is about batch_size x 3 x R^2 floats plus the sketches).
        workers: threads decoding images.
        oversample: extra sketch columns p (memory O(R^2 (K + p)) per channel).
        power_iters: extra passes refining the subspace.
        imputation: low-confidence texels: "em" (posterior mean under the current model) or "mean".
        em_passes: further passes when some confidence is below 1 (EM re-imputation).
        robust_rounds: rebuilds, each without the texels the previous model finds to be outliers (occluders,
            highlights, shadows the unwrapping let through); 0 is a plain PCA.
        robust_components: leading components per channel the outliers are judged against.
        outlier_threshold: robust spreads of a texel's residuals beyond which it is an outlier.
        seed: seeds the random sketch.
        device: cpu, cuda, cuda:N or auto.
    """

    components: int = 100
    resolution: int = 256
    confidence_suffix: str = "_conf"
    uv_layout_id: str = ""
    batch_size: int = 32
    workers: int = 2
    oversample: int = 10
    power_iters: int = 2
    imputation: str = "em"
    em_passes: int = 6
    robust_rounds: int = 0
    robust_components: int = 20
    outlier_threshold: float = 4.0
    seed: int = 0
    device: str = "cpu"

    def check(self) -> None:
        """Raise :class:`~utils.config.ConfigError` naming the first invalid value."""
        minimum = {"components": 1, "resolution": 2, "batch_size": 1, "workers": 1, "oversample": 0,
                   "power_iters": 0, "em_passes": 0, "robust_rounds": 0, "robust_components": 1,
                   "outlier_threshold": 1e-6}
        for key, low in minimum.items():
            if getattr(self, key) < low:
                raise ConfigError(f"{key} must be >= {low}, got {getattr(self, key)}")
        if self.imputation not in ("em", "mean"):
            raise ConfigError(f"imputation must be 'em' or 'mean', got {self.imputation!r}")
