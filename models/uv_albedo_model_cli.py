"""``python -m models.uv_albedo_model build``: a UV albedo model from a folder of UV maps.

Example::

    python -m models.uv_albedo_model build --input_dir uv_maps/ --output checkpoints/default/uvapm_ict.npz \\
        --face_model ict --components 100 --resolution 256

Defaults come from ``configs/uvapm.yaml`` (schema :class:`UVAPMBuildConfig`);
flags and ``--set key=value`` override them. Unreadable files are reported
one line each and skipped; the model is written atomically at the end.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.contrib.logging import logging_redirect_tqdm

from utils.assets import load_installed_face_model
from utils.cli import add_logging_args, resolve_device, run_main, seed_everything, setup_logging
from utils.config import ConfigError, add_config_args, config_from_args

from .uv_albedo_model import save_uv_albedo_model
from .uvapm_build import build_uv_albedo_model

__all__ = ["UVAPMBuildConfig", "main"]

logger = logging.getLogger("uvapm.uv_albedo_model")

DEFAULT_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "uvapm.yaml")


@dataclass
class UVAPMBuildConfig:
    """Settings of the build (see :func:`models.uvapm_build.build_uv_albedo_model`).

    Attributes:
        components: K per channel (the paper: 100).
        resolution: R; maps are area-resized to R x R (the paper: 256).
        confidence_suffix: ``x<suffix>.png`` is the confidence map of ``x.png``; "" ignores them.
        face_model: installed face model whose ``uv_layout_id`` is stored (used when uv_layout_id is "").
        uv_layout_id: layout id to store directly.
        batch_size: maps per batch (memory is about batch_size x 3 x R^2 floats plus the sketches).
        workers: threads decoding images.
        oversample: extra sketch columns p (memory O(R^2 (K + p)) per channel).
        power_iters: extra passes refining the subspace.
        imputation: low-confidence texels: "em" (posterior mean under the current model) or "mean".
        em_passes: further passes when some confidence is below 1 (EM re-imputation).
        seed: seeds the random sketch.
        device: cpu, cuda, cuda:N or auto.
    """

    components: int = 100
    resolution: int = 256
    confidence_suffix: str = "_conf"
    face_model: str = "ict"
    uv_layout_id: str = ""
    batch_size: int = 32
    workers: int = 2
    oversample: int = 10
    power_iters: int = 2
    imputation: str = "em"
    em_passes: int = 6
    seed: int = 0
    device: str = "cpu"


_FLAGS = {name: name for name in ("components", "resolution", "confidence_suffix", "face_model", "uv_layout_id",
                                  "batch_size", "oversample", "power_iters", "seed", "device")}


def _check(config: UVAPMBuildConfig) -> None:
    minimum = {"components": 1, "resolution": 2, "batch_size": 1, "workers": 1, "oversample": 0, "power_iters": 0,
               "em_passes": 0}
    for key, low in minimum.items():
        if getattr(config, key) < low:
            raise ConfigError(f"{key} must be >= {low}, got {getattr(config, key)}")
    if config.imputation not in ("em", "mean"):
        raise ConfigError(f"imputation must be 'em' or 'mean', got {config.imputation!r}")


def _layout_id(config: UVAPMBuildConfig) -> str:
    if config.uv_layout_id:
        return config.uv_layout_id
    if not config.face_model:
        raise ConfigError("give --uv_layout_id or --face_model: the model must know its UV layout")
    return load_installed_face_model(config.face_model).uv_layout_id


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.uv_albedo_model",
                                     description="UV Albedo Parametric Model (per-channel PCA of UV albedo maps)")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build a model from a folder of UV albedo maps",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("--input_dir", required=True, help="folder of UV maps (PNG/JPG, searched recursively)")
    build.add_argument("--output", required=True, help="model file to write (.npz)")
    build.add_argument("--components", type=int, help="components per channel K")
    build.add_argument("--resolution", type=int, help="UV map side R")
    build.add_argument("--confidence_suffix", help="x<suffix>.png is the confidence map of x.png ('' to ignore)")
    layout = build.add_mutually_exclusive_group()
    layout.add_argument("--uv_layout_id", help="UV layout id to store")
    layout.add_argument("--face_model", help="installed face model whose UV layout the maps use (default: ict)")
    build.add_argument("--batch_size", type=int)
    build.add_argument("--oversample", type=int, help="extra sketch columns p")
    build.add_argument("--power_iters", type=int, help="extra passes refining the subspace")
    build.add_argument("--seed", type=int)
    build.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    add_config_args(build, DEFAULT_CONFIG)
    add_logging_args(build)
    args = parser.parse_args(argv)
    if args.uv_layout_id is not None:
        args.face_model = ""
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        config = config_from_args(UVAPMBuildConfig, args, _FLAGS)
        _check(config)
        if Path(args.output).suffix.lower() != ".npz":
            raise ConfigError(f"--output {args.output}: the model is written as .npz")
        seed_everything(config.seed)
        settings = asdict(config)
        del settings["face_model"]
        settings.update(uv_layout_id=_layout_id(config), device=resolve_device(config.device))
        with logging_redirect_tqdm():
            data, _ = build_uv_albedo_model(args.input_dir, progress=not args.quiet, **settings)
        save_uv_albedo_model(args.output, data)
        logger.info("wrote %s (%d components per channel, %dx%d, uv_layout_id %s)", args.output,
                    data.num_components, data.resolution, data.resolution, data.uv_layout_id)
        return 0

    return run_main(run, args.verbose)
