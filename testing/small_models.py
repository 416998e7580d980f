"""The models a benchmark fits with: the default ones, given files, or small stand-ins.

``python -m fitting.run`` uses ``checkpoints/default/uvapm_<face model>.npz``
and ``detail_<face model>.pt`` when no file is given; the benchmarks do the
same. With ``--quick``, or when a default model is missing, they build small
stand-ins instead (the models ``tests/test_run.py`` fits with): a
4-component 32x32 UVAPM from smooth synthetic skin maps and an untrained
64-pixel detail generator. Those exercise every stage quickly; quality
numbers measured with them say nothing about the real models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from fitting.pipeline import default_model_path
from models.config import DetailGeneratorConfig
from models.detail_generator import DetailVAE, save_detail_generator
from models.uv_albedo_model import UVAlbedoModelData, save_uv_albedo_model

from .synthetic import smooth_albedo_map

__all__ = ["QUICK_OVERRIDES", "ModelChoice", "write_small_models", "choose_models"]

logger = logging.getLogger("uvapm.benchmarks")

#: Config overrides of a quick run (the sizes and step counts ``tests/test_run.py`` uses).
QUICK_OVERRIDES = (
    "shape.refine.optim.steps=4", "albedo.optim.steps=3", "detail.optim.steps=2", "unwrap.resolution=64",
    "detail_crop_size=64", "detail.render_size=64", "shape.landmarks.iterations=10",
)


def write_small_models(folder: Path, uv_layout_id: str, seed: int = 0) -> tuple[Path, Path]:
    """Write a small UVAPM (``uvapm.npz``) and detail generator (``detail.pt``) into ``folder``.

    The UVAPM is the 4-component per-channel PCA of 40 smooth 32x32 skin maps
    (:func:`testing.synthetic.smooth_albedo_map`); the detail generator is an
    untrained 64-pixel luminance :class:`DetailVAE` with an 8-d latent.

    Returns:
        The two paths.
    """
    folder.mkdir(parents=True, exist_ok=True)
    count, resolution, K = 40, 32, 4
    maps = smooth_albedo_map(count, resolution, torch.Generator().manual_seed(seed)).reshape(count, 3, -1)
    mean = maps.mean(0)
    _, s, vt = torch.linalg.svd((maps - mean).permute(1, 0, 2), full_matrices=False)  # per channel (3, N, D)
    data = UVAlbedoModelData(mean=mean.reshape(3, resolution, resolution).numpy(), basis=vt[:, :K].numpy(),
                             std=(s[:, :K] / (count - 1) ** 0.5).numpy(),
                             explained_variance_ratio=(s[:, :K] ** 2 / (s**2).sum(1, keepdim=True)).numpy(),
                             uv_layout_id=uv_layout_id, num_maps=count)
    uvapm = folder / "uvapm.npz"
    save_uv_albedo_model(uvapm, data)
    torch.manual_seed(seed)
    detail = DetailVAE(DetailGeneratorConfig(resolution=64, channels=1, latent_dim=8, latent_grid=1, base_channels=4,
                                             max_channels=16, low_pass_resolution=32))
    detail_path = folder / "detail.pt"
    save_detail_generator(detail_path, detail)
    return uvapm, detail_path


@dataclass
class ModelChoice:
    """The models of a benchmark run.

    Attributes:
        uvapm, detail_model: files to fit with.
        description: one sentence for the table notes.
        stand_in: True when the small stand-ins are used.
    """

    uvapm: Path
    detail_model: Path
    description: str
    stand_in: bool


def choose_models(uvapm: str | None, detail_model: str | None, quick: bool, face_model: str, uv_layout_id: str,
                  scratch: Path) -> ModelChoice:
    """Given files, else the defaults when present (and not ``quick``), else stand-ins written to ``scratch``."""
    defaults = (default_model_path("uvapm", face_model), default_model_path("detail", face_model))
    chosen = [Path(given) if given else (None if quick or not default.is_file() else default)
              for given, default in zip((uvapm, detail_model), defaults)]
    if all(chosen):
        return ModelChoice(chosen[0], chosen[1], f"models: UVAPM {chosen[0]}, detail generator {chosen[1]}.",
                           stand_in=False)
    if not quick:
        logger.warning("default models missing (%s); using small stand-in models: quality numbers are not "
                       "representative", ", ".join(str(d) for d, c in zip(defaults, chosen) if c is None))
    small = write_small_models(scratch, uv_layout_id)
    chosen = [c or s for c, s in zip(chosen, small)]
    what = ("small stand-in models (4-component 32x32 UVAPM of synthetic skin maps, untrained 64-px detail "
            "generator) where no model file was given")
    return ModelChoice(chosen[0], chosen[1], f"models: {what}; UVAPM {chosen[0].name}, detail generator "
                       f"{chosen[1].name}. Quality numbers with stand-ins are not representative.", stand_in=True)
