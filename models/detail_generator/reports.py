"""Pictures and metrics a detail-generator training run writes after each epoch (rank 0)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from utils.atomic import write_json
from utils.image_io import write_image
from utils.plots import line_chart

from .dataset import UVDetailDataset
from .vae import DetailVAE

__all__ = ["detail_grid", "loss_curve", "write_reports"]


def detail_grid(rows: list[torch.Tensor], labels: list[str]) -> np.ndarray:
    """Rows of (N, C, R, R) detail maps as one (H, W, 3) uint8 picture, mid-grey = 0.

    All rows share one contrast: +-3 standard deviations of the first row map to black/white.
    """
    spread = float(3.0 * rows[0].std().clamp_min(1e-4))
    gap, label_width = 4, 110
    size = rows[0].shape[-1]
    width = label_width + max(len(r) for r in rows) * (size + gap)
    canvas = np.full((len(rows) * (size + gap), width, 3), 255, np.uint8)
    for i, (row, label) in enumerate(zip(rows, labels)):
        top = i * (size + gap)
        cv2.putText(canvas, label, (6, top + size // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
        for j, detail in enumerate(row):
            tile = (0.5 + detail.float().permute(1, 2, 0).numpy() / (2.0 * spread)).clip(0.0, 1.0)
            left = label_width + j * (size + gap)
            canvas[top:top + size, left:left + size] = np.rint(tile * 255.0).astype(np.uint8)
    return canvas


def loss_curve(history: list[dict]) -> np.ndarray:
    """Training and validation loss per epoch on a log scale, as (H, W, 3) uint8."""
    epochs = [h["epoch"] for h in history]
    return line_chart(
        {"train": (epochs, [h["train_loss"] for h in history]),
         "validation": (epochs, [h["val_loss"] for h in history])},
        title="loss (log scale)", xlabel="epoch", markers=True,
    )


def _write_visuals(path: Path, model: DetailVAE, dataset: UVDetailDataset, count: int, seed: int) -> None:
    model.eval()
    count = min(count, len(dataset))
    device = next(model.parameters()).device
    with torch.no_grad():
        targets = torch.stack([dataset[i]["detail"] for i in range(count)])
        recons = model(targets.to(device)).detail.cpu()
        samples = model.sample(count, generator=torch.Generator().manual_seed(seed)).cpu()
    write_image(path, detail_grid([targets, recons, samples], ["validation", "reconstruction", "random sample"]))


def write_reports(output_dir: Path, history: list[dict], model: DetailVAE, val_set: UVDetailDataset,
                  num_visuals: int, seed: int, writer) -> None:
    """Metrics, loss curve, pictures and TensorBoard scalars after an epoch (rank 0)."""
    epoch = history[-1]["epoch"]
    write_json(output_dir / "metrics.json", {"epochs": history})
    write_image(output_dir / "loss_curve.png", loss_curve(history))
    _write_visuals(output_dir / "visuals" / f"epoch_{epoch:04d}.png", model, val_set, num_visuals, seed)
    if writer is not None:
        for key, value in history[-1].items():
            if key != "epoch":
                writer.add_scalar(key, value, epoch)
        writer.flush()
