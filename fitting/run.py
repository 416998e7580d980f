"""``python -m fitting.run`` (what ``run_rgb_fitting.sh`` calls): photos -> 3D faces with UV albedo.

Reads the configuration (``configs/fitting.yaml``, schema
:class:`~fitting.config.FittingConfig`, then the flags, then ``--set``
overrides), checks the input folder and calls :func:`fitting.runner.run_folder`.
Exit code: 0 when every face succeeded, 1 when any image or face failed, 2
for usage, configuration or missing-model errors, an input folder without
images, an output folder in use or not writable; ended by the signal when
interrupted (130/143 in a shell). SIGINT or SIGTERM stop the run within two
seconds (:mod:`utils.interrupts`).

Scale-out: ``torchrun --nproc_per_node N -m fitting.run ...`` (``--nnodes``
for several machines) shards the faces across ranks.

This module imports no torch until the arguments are parsed, so ``--help``
and usage errors answer at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from utils.cli import add_logging_args, default_help, run_main, setup_logging
from utils.config import add_config_args, config_from_args
from utils.errors import ToolkitError
from utils.image_io import IMAGE_EXTENSIONS, list_images

from .config import GROUP_BY, FittingConfig

__all__ = ["main", "DEFAULT_CONFIG"]

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fitting.yaml"

#: command-line attribute -> config key
FLAGS = {"checkpoints_dir": "checkpoints_dir", "face_model": "face_model", "uvapm": "uvapm",
         "detail_model": "detail_model", "device": "device", "batch_size": "batch_size", "stages": "stages",
         "seed": "seed", "all_faces": "preprocess.all_faces", "uv_1024": "outputs.uv_1024", "overwrite": "overwrite",
         "group_by": "group_by"}


def build_parser() -> argparse.ArgumentParser:
    defaults = FittingConfig()
    parser = argparse.ArgumentParser(
        prog=os.environ.get("UVAPM_PROG", "python -m fitting.run"),
        description="Reconstruct 3D faces with UV albedo maps from a folder of photos (stages 1-3).",
        epilog="example override: --set albedo.optim.steps=100 (any key of configs/fitting.yaml)",
    )
    parser.add_argument("--input_dir", required=True, help="folder of photos")
    parser.add_argument("--output_dir", help="default: <input_dir>/outputs")
    parser.add_argument("--checkpoints_dir", help=default_help("official checkpoints", defaults.checkpoints_dir))
    parser.add_argument("--face_model", choices=("ict", "hifi3dpp", "bfm"),
                        help=default_help("installed face model", defaults.face_model))
    parser.add_argument("--uvapm", help="UV albedo model file (.npz, or the paper's .pkl; default: "
                        "checkpoints/default/uvapm_<face_model>.npz)")
    parser.add_argument("--detail_model", help="detail generator checkpoint (default: "
                        "checkpoints/default/detail_<face_model>.pt)")
    parser.add_argument("--device", help=default_help("cpu, cuda, cuda:N or auto", defaults.device))
    parser.add_argument("--batch_size", type=int, help=default_help("faces optimised together", defaults.batch_size))
    parser.add_argument("--stages", help=default_help("stages to run: 1,2,3 | 1,2 | 1", defaults.stages))
    parser.add_argument("--group_by", choices=GROUP_BY,
                        help=default_help("photos of one person fitted jointly (one shape and albedo): none; folder "
                                          "(a subfolder per person); all (the whole folder is one person)",
                                          defaults.group_by))
    parser.add_argument("--all_faces", action="store_true", default=None, help="every face of each photo")
    parser.add_argument("--uv_1024", action="store_true", default=None,
                        help="also write uv_albedo_1024.png: the final albedo at 1024 texels with the photo's detail")
    parser.add_argument("--seed", type=int, help=default_help("random seed", defaults.seed))
    parser.add_argument("--overwrite", action="store_true", default=None,
                        help="redo faces (and preprocessing) already done")
    add_config_args(parser, str(DEFAULT_CONFIG), "albedo.optim.steps=100")
    add_logging_args(parser)
    return parser


def _parse_stages(text: str) -> list[int]:
    try:
        stages = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ToolkitError(f"--stages {text!r}: expected numbers like 1,2,3") from None
    if not stages or stages != list(range(1, len(stages) + 1)) or len(stages) > 3:
        raise ToolkitError(f"--stages {text}: stages run in order from 1 (1 | 1,2 | 1,2,3)")
    return stages


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        if args.stages is not None:
            args.stages = _parse_stages(args.stages)
        config = config_from_args(FittingConfig, args, FLAGS)
        if config.batch_size < 1:
            raise ToolkitError("--batch_size must be at least 1")
        input_dir = Path(args.input_dir)
        if not input_dir.is_dir():
            raise ToolkitError(f"{input_dir}: input folder not found")
        if not list_images(input_dir, recursive=config.group_by == "folder"):
            raise ToolkitError(f"{input_dir}: no images in the input folder ({' '.join(IMAGE_EXTENSIONS)})")
        output_dir = Path(args.output_dir) if args.output_dir else input_dir / "outputs"
        from .runner import run_folder

        return run_folder(input_dir, output_dir, config, progress=not args.quiet)

    return run_main(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
