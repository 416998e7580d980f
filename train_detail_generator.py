"""Train the detail generator: a VAE over the high-frequency detail of UV albedo maps.

Single process::

    python train_detail_generator.py --dataset_path uv_maps/ --epochs 50 --batch_size 8

Several GPUs or nodes (``--batch_size`` is the global batch)::

    torchrun --nproc_per_node 4 train_detail_generator.py --dataset_path uv_maps/ --batch_size 32

Continue an interrupted run with ``--resume`` (``OUTPUT_DIR/last.pt``) or
``--resume PATH``: SIGINT and SIGTERM stop training within two seconds, and
``last.pt`` always holds the last completed epoch. A second run on the same
``--output_dir`` is refused (exit code 2); unusable training files are
skipped and listed in ``OUTPUT_DIR/failures.tsv``. Settings come from ``configs/detail.yaml``; any value can
be overridden with ``--set key=value`` (e.g. ``--set model.channels=3``).
See :mod:`models.detail_training` for the loss and the output folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.detail_training import DetailTrainingConfig, train_detail_generator
from utils.cli import add_logging_args, run_main, setup_logging
from utils.config import add_config_args, config_from_args

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "detail.yaml"
_LAST = "\0last"

#: command-line attribute -> config key
FLAGS = {
    "dataset_path": "data.dataset_path",
    "output_dir": "output_dir",
    "epochs": "epochs",
    "batch_size": "batch_size",
    "resolution": "model.resolution",
    "channels": "model.channels",
    "latent_dim": "model.latent_dim",
    "latent_grid": "model.latent_grid",
    "lr": "lr",
    "kl_weight": "kl_weight",
    "val_split": "data.val_split",
    "num_workers": "data.num_workers",
    "device": "device",
    "seed": "seed",
    "tensorboard": "tensorboard",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="train_detail_generator.py",
        description="Train the detail generator (VAE over high-frequency UV albedo detail).",
    )
    parser.add_argument("--dataset_path", help="folder of UV maps, searched recursively (confidence maps: NAME_conf)")
    parser.add_argument("--output_dir", help="checkpoints, metrics and pictures (default runs/detail)")
    parser.add_argument("--epochs", type=int, help="total number of epochs")
    parser.add_argument("--batch_size", type=int, help="global batch size (split across torchrun processes)")
    parser.add_argument("--resolution", type=int, help="detail map side, a power of two (512 or 1024)")
    parser.add_argument("--channels", type=int, choices=(1, 3), help="1: luminance detail, 3: RGB detail")
    parser.add_argument("--latent_dim", type=int, help="latent values per cell of the latent grid")
    parser.add_argument("--latent_grid", type=int, help="side of the latent grid (1: one global latent vector)")
    parser.add_argument("--lr", type=float, help="Adam learning rate")
    parser.add_argument("--kl_weight", type=float, help="weight of the KL term per detail value (2 sigma^2)")
    parser.add_argument("--val_split", type=float, help="fraction of maps held out for validation")
    parser.add_argument("--num_workers", type=int, help="data loader workers per process")
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--seed", type=int, help="random seed (initialisation, split, order, augmentation)")
    parser.add_argument("--resume", nargs="?", const=_LAST, metavar="CHECKPOINT",
                        help="continue from CHECKPOINT (default: OUTPUT_DIR/last.pt)")
    parser.add_argument("--tensorboard", action="store_const", const=True,
                        help="also log to OUTPUT_DIR/tensorboard (needs the tensorboard package)")
    add_config_args(parser, str(DEFAULT_CONFIG))
    add_logging_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        config = config_from_args(DetailTrainingConfig, args, FLAGS)
        if args.resume is not None:
            config.resume = str(Path(config.output_dir) / "last.pt") if args.resume == _LAST else args.resume
        train_detail_generator(config, progress=not args.quiet)
        return 0

    return run_main(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
