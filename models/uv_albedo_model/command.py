"""``python -m models.uv_albedo_model build``: a UV albedo model from a folder of UV maps.

Example::

    python -m models.uv_albedo_model build --input_dir uv_maps/ --output uvapm.npz --components 100 --resolution 256

Defaults come from ``configs/uvapm.yaml`` (schema
:class:`~models.config.UVAPMBuildConfig`); flags and ``--set key=value``
override them. The model stores the UV layout the maps carry (maps written
by this toolkit do) or ``--uv_layout_id``. Unreadable files are reported one
line each and skipped; the model is written atomically at the end.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict
from pathlib import Path

from models.config import UVAPMBuildConfig
from utils.cli import add_logging_args, default_help, run_main, setup_logging
from utils.config import ConfigError, add_config_args, config_from_args

__all__ = ["main"]

logger = logging.getLogger("uvapm.uv_albedo_model")

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "uvapm.yaml"

_FLAGS = {name: name for name in ("components", "resolution", "confidence_suffix", "uv_layout_id", "batch_size",
                                  "oversample", "power_iters", "robust_rounds", "seed", "device")}


def build_parser() -> argparse.ArgumentParser:
    defaults = UVAPMBuildConfig()
    parser = argparse.ArgumentParser(prog="python -m models.uv_albedo_model",
                                     description="UV Albedo Parametric Model (per-channel PCA of UV albedo maps)")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="build a model from a folder of UV albedo maps",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                           epilog="example override: --set em_passes=10")
    build.add_argument("--input_dir", required=True, help="folder of UV maps (PNG/JPG, searched recursively)")
    build.add_argument("--output", required=True, help="model file to write (.npz)")
    build.add_argument("--components", type=int, help=default_help("components per channel K", defaults.components))
    build.add_argument("--resolution", type=int, help=default_help("UV map side R", defaults.resolution))
    build.add_argument("--confidence_suffix", help=default_help("x<suffix>.png is the confidence map of x.png "
                                                                "('' to ignore)", defaults.confidence_suffix))
    build.add_argument("--uv_layout_id", help="UV layout id to store (default: the one the maps carry)")
    build.add_argument("--batch_size", type=int, help=default_help("maps per batch", defaults.batch_size))
    build.add_argument("--oversample", type=int, help=default_help("extra sketch columns p", defaults.oversample))
    build.add_argument("--power_iters", type=int, help=default_help("extra passes refining the subspace",
                                                                    defaults.power_iters))
    build.add_argument("--robust_rounds", type=int,
                       help=default_help("rebuilds without the texels the model finds to be outliers (0: plain PCA)",
                                         defaults.robust_rounds))
    build.add_argument("--seed", type=int, help=default_help("seed of the random sketch", defaults.seed))
    build.add_argument("--device", help=default_help("cpu, cuda, cuda:N or auto", defaults.device))
    add_config_args(build, DEFAULT_CONFIG, "components=60")
    add_logging_args(build)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        config = config_from_args(UVAPMBuildConfig, args, _FLAGS)
        config.check()
        if Path(args.output).suffix.lower() != ".npz":
            raise ConfigError(f"--output {args.output}: the model is written as .npz")
        from tqdm.contrib.logging import logging_redirect_tqdm

        from utils.runtime import resolve_device, seed_everything

        from .build import build_uv_albedo_model
        from .model import save_uv_albedo_model

        seed_everything(config.seed)
        settings = {**asdict(config), "device": resolve_device(config.device)}
        with logging_redirect_tqdm():
            data, _ = build_uv_albedo_model(args.input_dir, progress=not args.quiet, **settings)
        save_uv_albedo_model(args.output, data)
        logger.info("wrote %s (%d components per channel, %dx%d, uv_layout_id %s)", args.output,
                    data.num_components, data.resolution, data.resolution, data.uv_layout_id)
        return 0

    return run_main(run, args.verbose)
