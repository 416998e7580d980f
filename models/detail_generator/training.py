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
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from models.config import DetailTrainingConfig
from utils.atomic import save_torch, write_text
from utils.config import ConfigError, config_to_dict, save_config
from utils.distributed import ProcessGroup
from utils.errors import FileFormatError, ToolkitError, failures_tsv
from utils.locking import lock_for_job
from utils.runtime import rng_state, seed_everything, set_rng_state

from .checkpoint import detail_generator_checkpoint, load_detail_checkpoint
from .dataset import UVDetailDataset, UVMapItem, check_uv_maps, find_uv_maps, split_train_val
from .reports import write_reports
from .vae import DetailVAE, DetailVAEOutput, kl_divergence

__all__ = [
    "TrainingResult",
    "weighted_mse",
    "detail_vae_loss",
    "train_detail_generator",
]

logger = logging.getLogger("uvapm.detail_training")

#: Settings that may change between a run and its resumption without a warning.
_RESUMABLE_CHANGES = {"epochs", "resume", "output_dir", "device", "tensorboard", "data.num_workers"}


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


# ----------------------------------------------------------------------------- resuming


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


def train_detail_generator(config: DetailTrainingConfig, progress: bool = True) -> TrainingResult:
    """Train (or resume training) the detail generator as ``config`` says.

    Args:
        config: the full configuration.
        progress: show tqdm progress bars (on rank 0).

    Returns:
        Paths of the checkpoints and the per-epoch history.
    """
    processes = ProcessGroup(config.device)
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


def _train(config: DetailTrainingConfig, processes: ProcessGroup, progress: bool, writer_class) -> TrainingResult:
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
        set_rng_state(training["rng"])
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
        if processes.distributed else model
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
                "rng": rng_state(),
                "history": history,
                "best_val_loss": best_val,
                "items": [[item.map_path for item in part] for part in (train_items, val_items)],
            }
            save_torch(last_path, checkpoint)
            write_reports(output_dir, history, model, val_set, config.num_visuals, config.seed, writer)
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
    processes: ProcessGroup,
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
