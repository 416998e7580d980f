"""Train the detail generator: a VAE over the high-frequency detail of UV albedo maps.

Single process::

    python train_detail_generator.py --dataset_path uv_maps/ --epochs 50 --batch_size 8

Several GPUs or nodes (``--batch_size`` is the global batch)::

    torchrun --nproc_per_node 4 train_detail_generator.py --dataset_path uv_maps/ --batch_size 32

Continue an interrupted run with ``--resume`` (``OUTPUT_DIR/last.pt``) or
``--resume PATH``: SIGINT and SIGTERM stop training within two seconds, and
``last.pt`` always holds the last completed epoch. A second run on the same
``--output_dir`` is refused (exit code 2); unusable training files are
skipped and listed in ``OUTPUT_DIR/failures.tsv``. Settings come from
``configs/detail.yaml`` (schema :class:`models.config.DetailTrainingConfig`);
any value can be overridden with ``--set key=value`` (e.g. ``--set
data.augment.max_shift=0.02``). See :mod:`models.detail_generator.training`
for the loss and the output folder.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.config import DetailTrainingConfig
from utils.cli import add_logging_args, default_help, run_main, setup_logging
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
    defaults = DetailTrainingConfig()
    model, data = defaults.model, defaults.data
    parser = argparse.ArgumentParser(
        prog="train_detail_generator.py",
        description="Train the detail generator (VAE over high-frequency UV albedo detail).",
        epilog="example override: --set data.augment.max_shift=0.02 (any key of configs/detail.yaml)",
    )
    parser.add_argument("--dataset_path", required=True,
                        help="folder of UV maps, searched recursively (confidence maps: NAME_conf)")
    parser.add_argument("--output_dir", help=default_help("checkpoints, metrics and pictures", defaults.output_dir))
    parser.add_argument("--epochs", type=int, help=default_help("total number of epochs", defaults.epochs))
    parser.add_argument("--batch_size", type=int,
                        help=default_help("global batch size (split across torchrun processes)", defaults.batch_size))
    parser.add_argument("--resolution", type=int,
                        help=default_help("detail map side, a power of two (512 or 1024)", model.resolution))
    parser.add_argument("--channels", type=int, choices=(1, 3),
                        help=default_help("1: luminance detail, 3: RGB detail", model.channels))
    parser.add_argument("--latent_dim", type=int,
                        help=default_help("latent values per cell of the latent grid", model.latent_dim))
    parser.add_argument("--latent_grid", type=int,
                        help=default_help("side of the latent grid (1: one global latent vector)", model.latent_grid))
    parser.add_argument("--lr", type=float, help=default_help("Adam learning rate", defaults.lr))
    parser.add_argument("--kl_weight", type=float,
                        help=default_help("weight of the KL term per detail value (2 sigma^2)", defaults.kl_weight))
    parser.add_argument("--val_split", type=float,
                        help=default_help("fraction of maps held out for validation", data.val_split))
    parser.add_argument("--num_workers", type=int, help=default_help("data loader workers per process",
                                                                     data.num_workers))
    parser.add_argument("--device", help=default_help("auto, cpu, cuda or cuda:N", defaults.device))
    parser.add_argument("--seed", type=int,
                        help=default_help("random seed (initialisation, split, order, augmentation)", defaults.seed))
    parser.add_argument("--resume", nargs="?", const=_LAST, metavar="CHECKPOINT",
                        help="continue from CHECKPOINT (default: OUTPUT_DIR/last.pt)")
    parser.add_argument("--tensorboard", action="store_const", const=True,
                        help="also log to OUTPUT_DIR/tensorboard (needs the tensorboard package)")
    add_config_args(parser, str(DEFAULT_CONFIG), "data.augment.contrast=0.2")
    add_logging_args(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        config = config_from_args(DetailTrainingConfig, args, FLAGS)
        if args.resume is not None:
            config.resume = str(Path(config.output_dir) / "last.pt") if args.resume == _LAST else args.resume
        from models.detail_generator.training import train_detail_generator

        train_detail_generator(config, progress=not args.quiet)
        return 0

    return run_main(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
