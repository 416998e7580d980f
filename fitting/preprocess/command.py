"""``python -m fitting.preprocess``: the "process data" step alone, on a folder of photos.

Usage::

    python -m fitting.preprocess --input_dir photos --output_dir photos/processed_data

Writes ``<output_dir>/<name>.pt`` per face, ``vis/<name>.png`` and
``failures.tsv`` (:mod:`fitting.preprocess.folder`). The command holds a lock
on ``--output_dir`` (:mod:`utils.locking`); SIGINT/SIGTERM stop it within two
seconds, leaving only complete files, and a rerun resumes. Exit code: 0 when
every image was processed or skipped, 1 when any failed, 2 for usage or
configuration errors, an input folder without images, an output folder in
use or not writable.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
from pathlib import Path

from utils.cli import add_logging_args, count, default_help, run_main, setup_logging
from utils.config import add_config_args, config_from_args
from utils.errors import ToolkitError
from utils.image_io import IMAGE_EXTENSIONS, list_images

from ..config import DETECTOR_METHODS, LANDMARK_METHODS, MASK_METHODS, PreprocessConfig

__all__ = ["main", "DEFAULT_CONFIG"]

logger = logging.getLogger("uvapm.preprocess")

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "preprocess.yaml"

_FLAGS = {name: name for name in ("checkpoints_dir", "detector", "landmarks", "masks", "all_faces",
                                  "min_face_size", "max_image_side", "reference_template", "device", "overwrite")}


def build_parser() -> argparse.ArgumentParser:
    defaults = PreprocessConfig()
    parser = argparse.ArgumentParser(
        prog="python -m fitting.preprocess",
        description="Detect, align and mask the faces of a folder of photos (the 'process data' stage).",
        epilog="example override: --set min_face_size=64",
    )
    parser.add_argument("--input_dir", required=True, help="folder of photos")
    parser.add_argument("--output_dir", help="where the .pt files go (default: <input_dir>/processed_data)")
    parser.add_argument("--checkpoints_dir", help="official checkpoints folder (default: checkpoints)")
    parser.add_argument("--detector", choices=DETECTOR_METHODS, help=default_help("face detector", defaults.detector))
    parser.add_argument("--landmarks", choices=LANDMARK_METHODS,
                        help=default_help("landmark predictor", defaults.landmarks))
    parser.add_argument("--masks", choices=MASK_METHODS, help=default_help("mask method", defaults.masks))
    parser.add_argument("--all_faces", action="store_true", default=None, help="every face, as <name>_face<k>")
    parser.add_argument("--min_face_size", type=int,
                        help=default_help("smallest face box side in pixels", defaults.min_face_size))
    parser.add_argument("--max_image_side", type=int,
                        help=default_help("detect on a copy at most this large", defaults.max_image_side))
    parser.add_argument("--reference_template", metavar="MAT",
                        help="the reference's similarity_Lm3D_all.mat (default: built-in ICT-FaceKit template)")
    parser.add_argument("--device", help="torch device for BiSeNet/FAN (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="redo images already processed")
    add_config_args(parser, str(DEFAULT_CONFIG), "min_face_size=60")
    add_logging_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        config = config_from_args(PreprocessConfig, args, _FLAGS)
        output_dir = args.output_dir or os.path.join(args.input_dir, "processed_data")
        if not os.path.isdir(args.input_dir):
            raise ToolkitError(f"{args.input_dir}: input folder not found")
        if not list_images(args.input_dir):
            raise ToolkitError(f"{args.input_dir}: no images in the input folder ({' '.join(IMAGE_EXTENSIONS)})")
        from utils.locking import FolderLock

        from .folder import preprocess_folder

        with FolderLock(output_dir, "fitting.preprocess"):
            result = preprocess_folder(args.input_dir, output_dir, config, progress=not args.quiet)
        mean = sum(result.seconds) / len(result.seconds) if result.seconds else math.nan
        logger.info("%s processed (%s), %d skipped, %d failed; %.2f s per image; failures listed in %s",
                    count(result.processed, "image"), count(result.faces, "face"), result.skipped,
                    len(result.failures), mean, os.path.join(output_dir, "failures.tsv"))
        return 1 if result.failures else 0

    return run_main(run, args.verbose)
