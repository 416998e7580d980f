"""Step ``detail``: luminance or RGB detail, chosen by measurement, and the detail generator's training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from models.colour import rgb_to_luminance
from models.config import DetailGeneratorConfig, DetailTrainingConfig
from models.detail_generator import extract_detail, load_detail_checkpoint, save_detail_generator
from models.detail_generator.training import train_detail_generator
from utils.atomic import write_json

from .data import load_maps

__all__ = ["chroma_share", "step_detail"]

logger = logging.getLogger("uvapm.build")


def chroma_share(folder: Path, low_pass_resolution: int) -> float:
    """Share of the high-frequency detail energy that luminance detail cannot represent."""
    maps, confs, _ = load_maps(folder, 512)
    detail = extract_detail(maps, low_pass_resolution, 3)
    luminance = rgb_to_luminance(detail)
    weight = (confs > 0.5).float()
    total = ((detail**2) * weight).sum()
    residual = (((detail - luminance) ** 2) * weight).sum()
    return float(residual / total)


def step_detail(args) -> dict:
    uvapm = json.loads((args.work / "uvapm_selection.json").read_text())["chosen"]
    low = uvapm["resolution"]
    share = chroma_share(args.work / "uv" / "train", low)
    channels = 1 if share < 0.15 else 3
    logger.info("chromatic share of the detail energy: %.3f -> %d-channel detail", share, channels)
    config = DetailTrainingConfig()
    config.model = DetailGeneratorConfig(resolution=512, channels=channels, latent_dim=args.latent_dim,
                                         latent_grid=args.latent_grid, base_channels=args.base_channels,
                                         low_pass_resolution=low)
    config.data.dataset_path = str(args.work / "uv" / "train")
    config.data.val_split = 0.1
    config.data.num_workers = 0
    config.epochs, config.batch_size, config.seed = args.epochs, 8, args.seed
    config.lr, config.lr_decay, config.kl_weight = args.lr, 0.95, args.kl_weight
    config.device = "cpu"
    config.output_dir = str(args.work / "detail_run")
    last = Path(config.output_dir) / "last.pt"
    if last.is_file():
        config.resume = str(last)
    result = train_detail_generator(config, progress=not args.quiet)
    model, _ = load_detail_checkpoint(result.best_checkpoint)
    save_detail_generator(args.output_dir / "detail_ict.pt", model.half())
    summary = {"chroma_share": share, "channels": channels, "history": result.history}
    write_json(args.work / "detail_summary.json", summary)
    return summary


