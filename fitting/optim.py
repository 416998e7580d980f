"""The one optimisation loop every gradient-based fitting stage uses.

:func:`minimize` runs Adam over named parameter groups with the reference's
cosine ramp-down of the learning rate, records every loss term, and guards
against non-finite values: when the loss or a parameter becomes NaN/Inf, the
last good parameters are restored, the learning rate is halved and the step
is retried; after ``max_recoveries`` failures it raises
:class:`OptimizationError` with the reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from utils.errors import ToolkitError

from .config import OptimConfig

__all__ = ["OptimizationError", "minimize", "cosine_rampdown"]

logger = logging.getLogger("uvapm.fitting")


class OptimizationError(ToolkitError):
    """The optimisation diverged and could not recover."""


def cosine_rampdown(step: int, total: int, rampdown: float) -> float:
    """Learning-rate multiplier: 1, then a cosine decay over the last ``rampdown`` of the run."""
    if rampdown <= 0:
        return 1.0
    t = step / max(total, 1)
    r = min(1.0, (1.0 - t) / rampdown)
    return 0.5 - 0.5 * math.cos(math.pi * r)


def minimize(
    groups: dict[str, tuple[torch.Tensor, float]],
    closure: Callable[[], dict[str, torch.Tensor]],
    config: OptimConfig,
    on_step: Callable[[int, dict[str, list[float]]], None] | None = None,
) -> list[dict[str, list[float]]]:
    """Minimise ``sum(closure().values())`` over the given tensors.

    Args:
        groups: name -> (leaf tensor with requires_grad, learning rate).
        closure: returns a dict of weighted loss terms, each (B,) per face (or
            a scalar); the objective is the sum of everything, so each face's
            gradient does not depend on the others in the batch.
        config: steps, schedule and recovery settings.
        on_step: optional callback (step, {term: value}).

    Returns:
        The history: per step, term name (and ``total``) -> list of per-face floats.
    """
    params = [tensor for tensor, _ in groups.values()]
    optimizer = torch.optim.Adam([{"params": [t], "lr": lr, "name": n} for n, (t, lr) in groups.items()])
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    good = [p.detach().clone() for p in params]
    lr_scale, recoveries, history = 1.0, 0, []
    step = 0
    while step < config.steps:
        factor = cosine_rampdown(step, config.steps, config.rampdown) * lr_scale
        for group, lr in zip(optimizer.param_groups, base_lrs):
            group["lr"] = lr * factor
        optimizer.zero_grad(set_to_none=True)
        terms = closure()
        per_face = sum(terms.values())
        total = per_face.sum()
        finite = bool(torch.isfinite(total))
        if finite:
            total.backward()
            finite = all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in params)
        if finite:
            for p, g in zip(params, good):
                g.copy_(p.detach())
            optimizer.step()
            finite = all(bool(torch.isfinite(p).all()) for p in params)
        if not finite:
            recoveries += 1
            if recoveries > config.max_recoveries:
                raise OptimizationError(
                    f"loss or parameters became NaN/Inf {recoveries} times at step {step}; giving up on this face"
                )
            logger.warning("non-finite loss or parameters at step %d: restoring the last good state, halving the "
                           "learning rate", step)
            with torch.no_grad():
                for p, g in zip(params, good):
                    p.copy_(g)
            optimizer.state.clear()
            lr_scale *= 0.5
            continue
        record = {name: value.detach().reshape(-1).tolist() for name, value in terms.items()}
        record["total"] = per_face.detach().reshape(-1).tolist()
        history.append(record)
        if on_step is not None:
            on_step(step, record)
        step += 1
    return history
