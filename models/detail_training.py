"""Training the detail generator (:class:`~models.detail_generator.DetailVAE`).

:func:`train_detail_generator` runs single-process or, unchanged, under
``torchrun`` with DistributedDataParallel (``nccl`` on CUDA, ``gloo`` on
CPU). ``batch_size`` is the global batch: each of the N processes takes
``batch_size / N`` samples of every step, and every sample's augmentation
and VAE noise come from ``(seed, epoch, index)``, so N processes train the
same model as one process (up to floating-point summation order) when N
divides the number of training maps (otherwise the sampler repeats a few).

Loss, per sample, averaged over the batch::

    recon = sum(w * (decoded - detail)^2) / (C * sum(w))       (w: confidence)
    loss  = recon + kl_weight * KL(q(z|detail) || N(0, I)) / (C * R * R)

With ``kl_weight = 2 sigma^2`` this is the negative ELBO per detail value of
a Gaussian decoder with noise std sigma (albedo units); the default 2e-5 is
sigma = 0.003, a third of the typical detail std of unwrapped photos (0.01):
a larger sigma lets the decoder explain all detail as noise (posterior collapse).

Output folder (files written by rank 0, atomically; rank 0 holds the
folder's lock, :mod:`utils.locking`, so a second run on it is refused)::

    config.yaml        the resolved configuration
    failures.tsv       training files that cannot be used (file, reason), skipped
    last.pt            every epoch: model + optimiser, scheduler, epoch, RNG states, history
    best.pt            the model with the lowest validation loss so far
    metrics.json       one entry per epoch
    loss_curve.png     training and validation loss (log scale)
    visuals/epoch_NNNN.png  validation detail, its reconstruction, random samples
    tensorboard/       with ``tensorboard: true``

Resuming from ``last.pt`` restores the model, the optimiser, the learning
rate schedule, the epoch, the torch/NumPy/Python RNG states and the history;
the data order of an epoch is a function of (seed, epoch), so a resumed run
continues exactly as an uninterrupted one. Checkpoints are written at the end
of each epoch: a run stopped mid-epoch repeats that epoch from its start. The
learning-rate schedule does not depend on the total number of epochs, so
``epochs`` may be raised when resuming.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from utils.atomic import save_torch, write_json, write_text
from utils.cli import resolve_device, seed_everything
from utils.config import ConfigError, config_to_dict, save_config
from utils.errors import FileFormatError, ToolkitError, failures_tsv
from utils.image_io import write_image
from utils.locking import lock_for_job
from utils.plots import line_chart

from .detail_dataset import (
    DetailAugmentConfig,
    UVDetailDataset,
    UVMapItem,
    check_uv_maps,
    find_uv_maps,
    split_train_val,
)
from .detail_generator import (
    DetailGeneratorConfig,
    DetailVAE,
    DetailVAEOutput,
    detail_generator_checkpoint,
    kl_divergence,
    load_detail_checkpoint,
)

__all__ = [
    "DetailDataConfig",
    "DetailTrainingConfig",
    "TrainingResult",
    "weighted_mse",
    "detail_vae_loss",
    "train_detail_generator",
]

logger = logging.getLogger("uvapm.detail_training")

#: Settings that may change between a run and its resumption without a warning.
_RESUMABLE_CHANGES = {"epochs", "resume", "output_dir", "device", "tensorboard", "data.num_workers"}


@dataclass
class DetailDataConfig:
    """Training data.

    Attributes:
        dataset_path: folder of UV maps (searched recursively).
        confidence_suffix: name suffix of confidence maps ("" for none).
        val_split: fraction of the maps held out for validation (at least one).
        num_workers: data loader worker processes per training process.
        augment: see :class:`~models.detail_dataset.DetailAugmentConfig`.
    """

    dataset_path: str = ""
    confidence_suffix: str = "_conf"
    val_split: float = 0.1
    num_workers: int = 2
    augment: DetailAugmentConfig = field(default_factory=DetailAugmentConfig)


@dataclass
class DetailTrainingConfig:
    """Everything ``train_detail_generator.py`` needs (``configs/detail.yaml`` mirrors it).

    Attributes:
        model: architecture, stored in every checkpoint.
        data: training data.
        epochs: total number of epochs (a resumed run continues up to it).
        batch_size: global batch size (divisible by the number of processes).
        lr: Adam learning rate of the first epoch.
        lr_decay: learning-rate factor applied after every epoch.
        kl_weight: weight of the KL term per detail value (2 sigma^2, see the module docstring).
        seed: seeds the initialisation, the split, the data order, augmentation and noise.
        device: "auto", "cpu", "cuda" or "cuda:N" (under torchrun, CUDA uses the local rank).
        output_dir: folder for checkpoints, metrics and pictures.
        resume: a ``last.pt`` to continue from ("" to start afresh).
        tensorboard: also log to ``output_dir/tensorboard`` (needs the tensorboard package).
        num_visuals: validation maps and random samples drawn per epoch.
    """

    model: DetailGeneratorConfig = field(default_factory=DetailGeneratorConfig)
    data: DetailDataConfig = field(default_factory=DetailDataConfig)
    epochs: int = 100
    batch_size: int = 8
    lr: float = 1e-3
    lr_decay: float = 0.98
    kl_weight: float = 2e-5
    seed: int = 0
    device: str = "auto"
    output_dir: str = "runs/detail"
    resume: str = ""
    tensorboard: bool = False
    num_visuals: int = 4


@dataclass
class TrainingResult:
    """What a training run produced."""

    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path
    history: list[dict]
    skipped: list[str]


# ----------------------------------------------------------------------------- loss


def weighted_mse(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Per-sample confidence-weighted mean squared error.

    Args:
        pred, target: (B, C, R, R).
        weight: (B, 1, R, R) non-negative.

    Returns:
        (B,) ``sum(w * (pred - target)^2) / (C * sum(w))``; 0 for a sample whose weights are all 0.
    """
    squared = (weight * (pred - target).square()).sum(dim=(1, 2, 3))
    total = weight.sum(dim=(1, 2, 3)) * pred.shape[1]
    return squared / total.clamp_min(1e-12)


def detail_vae_loss(
    output: DetailVAEOutput, target: torch.Tensor, weight: torch.Tensor, kl_weight: float
) -> dict[str, torch.Tensor]:
    """Batch means of ``loss``, ``recon`` and ``kl`` (nats per sample); see the module docstring."""
    recon = weighted_mse(output.detail, target, weight).mean()
    kl = kl_divergence(output.mu, output.logvar).mean()
    return {"loss": recon + kl_weight * kl / target[0].numel(), "recon": recon, "kl": kl}


# ----------------------------------------------------------------------------- processes


class _Processes:
    """Rank, world size and device, with collective helpers that are no-ops in a single process."""

    def __init__(self, device_name: str):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.owns_group = False
        device = resolve_device(device_name)
        if self.world_size > 1:
            if device.type == "cuda":
                device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
                torch.cuda.set_device(device)
            if not dist.is_initialized():
                dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
                self.owns_group = True
        self.device = device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return values
        values = values.to(self.device)
        dist.all_reduce(values)
        return values.cpu()

    def broadcast(self, obj):
        """``obj`` of rank 0 on every rank (our own picklable payload, between our processes)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def close(self) -> None:
        if self.owns_group:
            dist.destroy_process_group()


# ----------------------------------------------------------------------------- checkpoint state


def _rng_state() -> dict:
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"keys": torch.from_numpy(numpy_state[1].astype(np.int64)), "pos": int(numpy_state[2]),
                  "has_gauss": int(numpy_state[3]), "cached_gaussian": float(numpy_state[4])},
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    numpy_state = state["numpy"]
    np.random.set_state(("MT19937", numpy_state["keys"].numpy().astype(np.uint32), numpy_state["pos"],
                         numpy_state["has_gauss"], numpy_state["cached_gaussian"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


def _flatten(mapping: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _read_resume(path: str, config: DetailTrainingConfig, device: torch.device) -> tuple[DetailVAE, Mapping]:
    model, checkpoint = load_detail_checkpoint(path, map_location=device)
    training = checkpoint.get("training")
    needed = ("epoch", "config", "optimizer", "scheduler", "rng", "history", "best_val_loss", "items")
    if not isinstance(model, DetailVAE) or not isinstance(training, Mapping) or any(k not in training for k in needed):
        raise FileFormatError(path, "has no training state; resume from a last.pt written by train_detail_generator")
    ours, theirs = asdict(config.model), asdict(model.config)
    differ = [f"{key} {theirs[key]} (checkpoint) vs {ours[key]} (this run)" for key in ours if ours[key] != theirs[key]]
    if differ:
        raise ConfigError(f"--resume {path}: the model config differs: " + ", ".join(differ))
    now, then = _flatten(config_to_dict(config)), _flatten(training["config"])
    changed = sorted(k for k in now if k not in _RESUMABLE_CHANGES and then.get(k) != now[k])
    if changed:
        logger.warning("resuming with changed settings (the run will differ from an uninterrupted one): %s",
                       ", ".join(f"{k} {then.get(k)!r} -> {now[k]!r}" for k in changed))
    return model, training


# ----------------------------------------------------------------------------- pictures


def _detail_grid(rows: list[torch.Tensor], labels: list[str]) -> np.ndarray:
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


def _loss_curve(history: list[dict]) -> np.ndarray:
    """Training and validation loss per epoch on a log scale, as (H, W, 3) uint8."""
    epochs = [h["epoch"] for h in history]
    return line_chart(
        {"train": (epochs, [h["train_loss"] for h in history]),
         "validation": (epochs, [h["val_loss"] for h in history])},
        title="loss (log scale)", xlabel="epoch", markers=True,
    )


# ----------------------------------------------------------------------------- training


def _check_config(config: DetailTrainingConfig, world_size: int) -> None:
    config.model.check()
    if not config.data.dataset_path:
        raise ConfigError("data.dataset_path is required (--dataset_path DIR)")
    if config.epochs < 1:
        raise ConfigError(f"epochs must be at least 1, got {config.epochs}")
    if config.batch_size < 1 or config.batch_size % world_size:
        raise ConfigError(f"batch_size {config.batch_size} must be a positive multiple of the {world_size} processes")
    if not 0.0 < config.data.val_split < 1.0:
        raise ConfigError(f"data.val_split must be in (0, 1), got {config.data.val_split}")
    if config.lr <= 0 or config.kl_weight < 0 or not 0 < config.lr_decay <= 1:
        raise ConfigError("lr must be positive, kl_weight non-negative and lr_decay in (0, 1]")


def _tensorboard_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ToolkitError(
            "--tensorboard needs the 'tensorboard' package, which is not installed "
            "(pip install tensorboard), or run without --tensorboard"
        ) from None
    return SummaryWriter


def _prepare_data(config: DetailTrainingConfig, progress: bool) -> tuple[list[UVMapItem], list[UVMapItem], list[str]]:
    """Rank 0's view of the data: (train items, validation items, skipped-file messages); writes failures.tsv."""
    last = Path(config.output_dir) / "last.pt"
    if not config.resume and last.exists():
        raise ToolkitError(f"{last} exists: pass --resume to continue that run, or choose another --output_dir")
    items = find_uv_maps(config.data.dataset_path, config.data.confidence_suffix)
    usable, problems = check_uv_maps(items, progress=progress)
    for path, reason in problems:
        logger.warning("skipped %s: %s", path, reason)
    write_text(Path(config.output_dir) / "failures.tsv", failures_tsv(problems))
    if len(usable) < 2:
        raise ToolkitError(
            f"{config.data.dataset_path}: {len(usable)} readable UV map(s) of {len(items)} found; "
            "need at least 2 (one for training, one for validation)"
        )
    train_idx, val_idx = split_train_val(len(usable), config.data.val_split, config.seed)
    logger.info("%d UV maps: %d for training, %d for validation (%d skipped)",
                len(usable), len(train_idx), len(val_idx), len(problems))
    return [usable[i] for i in train_idx], [usable[i] for i in val_idx], [f"{p}: {r}" for p, r in problems]


def _evaluate(model: DetailVAE, loader: DataLoader, device: torch.device, kl_weight: float) -> dict[str, float]:
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)
    with torch.no_grad():
        for batch in loader:
            detail, weight = batch["detail"].to(device), batch["weight"].to(device)
            terms = detail_vae_loss(model(detail), detail, weight, kl_weight)
            count = detail.shape[0]
            sums += torch.tensor([terms["loss"].item() * count, terms["recon"].item() * count,
                                  terms["kl"].item() * count, count], dtype=torch.float64)
    return {"val_loss": float(sums[0] / sums[3]), "val_recon": float(sums[1] / sums[3]),
            "val_kl": float(sums[2] / sums[3])}


def _write_visuals(path: Path, model: DetailVAE, dataset: UVDetailDataset, count: int, seed: int) -> None:
    model.eval()
    count = min(count, len(dataset))
    device = next(model.parameters()).device
    with torch.no_grad():
        targets = torch.stack([dataset[i]["detail"] for i in range(count)])
        recons = model(targets.to(device)).detail.cpu()
        samples = model.sample(count, generator=torch.Generator().manual_seed(seed)).cpu()
    write_image(path, _detail_grid([targets, recons, samples], ["validation", "reconstruction", "random sample"]))


def _write_reports(output_dir: Path, history: list[dict], model: DetailVAE, val_set: UVDetailDataset,
                   config: DetailTrainingConfig, writer) -> None:
    """Metrics, loss curve, pictures and TensorBoard scalars after an epoch (rank 0)."""
    epoch = history[-1]["epoch"]
    write_json(output_dir / "metrics.json", {"epochs": history})
    write_image(output_dir / "loss_curve.png", _loss_curve(history))
    _write_visuals(output_dir / "visuals" / f"epoch_{epoch:04d}.png", model, val_set, config.num_visuals,
                   config.seed)
    if writer is not None:
        for key, value in history[-1].items():
            if key != "epoch":
                writer.add_scalar(key, value, epoch)
        writer.flush()


def train_detail_generator(config: DetailTrainingConfig, progress: bool = True) -> TrainingResult:
    """Train (or resume training) the detail generator as ``config`` says.

    Args:
        config: the full configuration.
        progress: show tqdm progress bars (on rank 0).

    Returns:
        Paths of the checkpoints and the per-epoch history.
    """
    processes = _Processes(config.device)
    lock = None
    try:
        _check_config(config, processes.world_size)
        writer_class = _tensorboard_writer_class() if config.tensorboard else None
        lock = lock_for_job(config.output_dir, "train_detail_generator", processes.is_main, processes.broadcast)
        return _train(config, processes, progress and processes.is_main, writer_class)
    finally:
        if lock is not None:
            lock.release()
        processes.close()


def _train(config: DetailTrainingConfig, processes: _Processes, progress: bool, writer_class) -> TrainingResult:
    device, is_main = processes.device, processes.is_main
    output_dir = Path(config.output_dir)
    payload = None
    if is_main:
        try:
            payload = ("ok", *_prepare_data(config, progress))
        except ToolkitError as err:
            payload = ("error", str(err))
    payload = processes.broadcast(payload)
    if payload[0] == "error":
        raise ToolkitError(payload[1])
    _, train_items, val_items, skipped = payload

    seed_everything(config.seed)
    model = DetailVAE(config.model).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma=config.lr_decay)
    start_epoch, history, best_val = 0, [], math.inf
    if config.resume:
        resumed, training = _read_resume(config.resume, config, device)
        model.load_state_dict(resumed.state_dict())
        optimizer.load_state_dict(training["optimizer"])
        scheduler.load_state_dict(training["scheduler"])
        _set_rng_state(training["rng"])
        start_epoch, history, best_val = training["epoch"], list(training["history"]), training["best_val_loss"]
        if [list(map(str, part)) for part in training["items"]] != [
                [item.map_path for item in part] for part in (train_items, val_items)]:
            logger.warning("the dataset changed since %s; the data order differs from the original run",
                           config.resume)
        logger.info("resuming from %s after epoch %d", config.resume, start_epoch)
    if start_epoch >= config.epochs:
        logger.info("already trained %d epochs (epochs=%d): nothing to do", start_epoch, config.epochs)

    train_set = UVDetailDataset(train_items, config.model, config.data.augment, config.seed)
    val_set = UVDetailDataset(val_items, config.model, None, config.seed)
    per_process = config.batch_size // processes.world_size
    sampler = DistributedSampler(train_set, num_replicas=processes.world_size, rank=processes.rank,
                                 shuffle=True, seed=config.seed)
    loader = DataLoader(train_set, batch_size=per_process, sampler=sampler, num_workers=config.data.num_workers,
                        pin_memory=device.type == "cuda")
    val_loader = DataLoader(val_set, batch_size=per_process, num_workers=config.data.num_workers)
    trained = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None) \
        if processes.world_size > 1 else model
    if is_main:
        save_config(output_dir / "config.yaml", config)
    writer = writer_class(str(output_dir / "tensorboard")) if writer_class is not None and is_main else None
    last_path, best_path = output_dir / "last.pt", output_dir / "best.pt"

    for epoch in range(start_epoch, config.epochs):
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        lr = optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        stats = _train_epoch(trained, optimizer, loader, processes, config.kl_weight,
                             f"epoch {epoch + 1}/{config.epochs}", progress)
        train_seconds = time.perf_counter() - started
        scheduler.step()
        if is_main:
            entry = {"epoch": epoch + 1, **stats, **_evaluate(model, val_loader, device, config.kl_weight),
                     "lr": lr, "train_seconds": train_seconds,
                     "maps_per_second": stats["train_maps"] / max(train_seconds, 1e-9)}
            improved = entry["val_loss"] < best_val
            best_val = min(best_val, entry["val_loss"])
            entry["best_val_loss"] = best_val
            history.append(entry)
            checkpoint = detail_generator_checkpoint(model)
            if improved:
                save_torch(best_path, {**checkpoint, "metadata": {"epoch": epoch + 1, "val_loss": best_val}})
            checkpoint["training"] = {
                "epoch": epoch + 1,
                "config": config_to_dict(config),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "history": history,
                "best_val_loss": best_val,
                "items": [[item.map_path for item in part] for part in (train_items, val_items)],
            }
            save_torch(last_path, checkpoint)
            _write_reports(output_dir, history, model, val_set, config, writer)
            logger.info("epoch %d/%d: train %.4g, validation %.4g%s, %.2f maps/s", epoch + 1, config.epochs,
                        entry["train_loss"], entry["val_loss"], " (best)" if improved else "",
                        entry["maps_per_second"])
        processes.barrier()
    if writer is not None:
        writer.close()
    return TrainingResult(output_dir, last_path, best_path, history, skipped)


def _train_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    processes: _Processes,
    kl_weight: float,
    description: str,
    progress: bool,
) -> dict[str, float]:
    model.train()
    device = processes.device
    sums = torch.zeros(4, dtype=torch.float64)
    bar = tqdm(loader, desc=description, disable=not progress, leave=False, dynamic_ncols=True)
    for step, batch in enumerate(bar):
        detail = batch["detail"].to(device, non_blocking=True)
        weight = batch["weight"].to(device, non_blocking=True)
        noise = batch["noise"].to(device, non_blocking=True)
        terms = detail_vae_loss(model(detail, eps=noise), detail, weight, kl_weight)
        if not torch.isfinite(terms["loss"]):
            raise ToolkitError(f"{description}, step {step + 1}: the loss is not finite; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        count = detail.shape[0]
        sums += torch.tensor([terms["loss"].item() * count, terms["recon"].item() * count,
                              terms["kl"].item() * count, count], dtype=torch.float64)
        bar.set_postfix(loss=f"{terms['loss'].item():.4g}")
    sums = processes.sum(sums)
    return {"train_loss": float(sums[0] / sums[3]), "train_recon": float(sums[1] / sums[3]),
            "train_kl": float(sums[2] / sums[3]), "train_maps": int(sums[3])}
