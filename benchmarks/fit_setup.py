"""Command-line options and fitting configuration shared by the benchmarks that run the pipeline.

Each such benchmark takes the options of ``python -m fitting.run`` that
matter for measuring (``--uvapm``, ``--detail_model``, ``--device``,
``--seed``, ``--config``, ``--set``) plus ``--quick``, which shrinks sizes
and step counts (:data:`testing.small_models.QUICK_OVERRIDES`) and fits
with small stand-in models: a smoke run whose numbers only have to be sane.
The fitting outputs skip ``mesh.glb`` (``outputs.glb``), which nothing measures.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fitting.config import FittingConfig
from fitting.run import DEFAULT_CONFIG
from utils.cli import add_logging_args
from utils.config import add_config_args, load_config

if TYPE_CHECKING:
    from testing.small_models import ModelChoice

__all__ = ["add_fitting_args", "add_photo_folder_args", "photo_output_dir", "fitting_config", "fit_photos"]


def add_fitting_args(parser: argparse.ArgumentParser) -> None:
    """The shared options (see the module docstring)."""
    parser.add_argument("--uvapm", help="UV albedo model (default: checkpoints/default/uvapm_ict.npz when present)")
    parser.add_argument("--detail_model", help="detail generator (default: checkpoints/default/detail_ict.pt)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, few steps and stand-in models: checks that it runs, not a measurement")
    add_config_args(parser, str(DEFAULT_CONFIG), "albedo.optim.steps=100")
    add_logging_args(parser)


def add_photo_folder_args(parser: argparse.ArgumentParser, name: str, limit_help: str) -> None:
    """The options of a benchmark that fits a folder of photos: ``--input_dir`` (default: the shared
    single-face photos), ``--limit`` (``limit_help`` says its default), ``--output_dir`` and ``--resume``."""
    from . import common

    parser.add_argument("--input_dir", default=str(common.SHARED / "data" / "faces" / "single"),
                        help="folder of photos (default: the shared single-face photos)")
    parser.add_argument("--limit", type=int, help=f"photos, evenly spaced in name order; {limit_help}")
    parser.add_argument("--output_dir", help=f"fitting outputs (default: <tmp>/uvapm_benchmarks/{name}[_quick])")
    parser.add_argument("--resume", action="store_true", help="keep faces already complete in --output_dir")


def photo_output_dir(args: argparse.Namespace, name: str) -> Path:
    """``--output_dir``, or the benchmark's folder ``name`` under the system's temporary folder."""
    import tempfile

    return Path(args.output_dir or Path(tempfile.gettempdir()) / "uvapm_benchmarks" / name)


def fitting_config(args: argparse.Namespace, scratch: Path, stages=(1, 2, 3)) -> tuple[FittingConfig, ModelChoice]:
    """The fitting configuration (``--config``, quick overrides, ``--set``) and the models to fit with.

    Stand-in models, when needed, are written to ``scratch``.
    """
    from assets import load_installed_face_model  # torch: not needed for --help
    from testing.small_models import QUICK_OVERRIDES, choose_models

    overrides = [*(QUICK_OVERRIDES if args.quick else ()), *args.overrides]
    config = load_config(FittingConfig, args.config, overrides)
    layout_id = load_installed_face_model(config.face_model).uv_layout_id
    models = choose_models(args.uvapm, args.detail_model, args.quick, config.face_model, layout_id, scratch)
    config.uvapm, config.detail_model = str(models.uvapm), str(models.detail_model)
    config.device, config.seed, config.stages = args.device, args.seed, list(stages)
    config.outputs.glb = False
    return config, models


def fit_photos(args: argparse.Namespace, photos: list[Path], output_dir: Path) -> tuple[Path, ModelChoice]:
    """Fit ``photos`` with the full pipeline into ``output_dir/fit`` (resuming with ``--resume``); returns that
    folder and the models used.

    The photos are linked into ``output_dir/photos`` (links of an earlier run are replaced; anything else there
    is refused, so a wrong ``--output_dir`` deletes nothing).
    """
    import tempfile

    from fitting.runner import run_folder
    from utils.errors import ToolkitError

    photo_dir = output_dir / "photos"
    photo_dir.mkdir(parents=True, exist_ok=True)
    for old in photo_dir.iterdir():
        if not old.is_symlink():
            raise ToolkitError(f"{old}: not a link made by this tool; choose another --output_dir")
        old.unlink()
    for photo in photos:
        (photo_dir / photo.name).symlink_to(photo.resolve())
    with tempfile.TemporaryDirectory(prefix="uvapm_fit_") as scratch:
        config, models = fitting_config(args, Path(scratch))
        config.overwrite = not args.resume
        run_folder(photo_dir, output_dir / "fit", config, progress=not args.quiet)
    return output_dir / "fit", models
