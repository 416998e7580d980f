"""Checking and loading the official networks' state dicts.

The paper's checkpoints are plain ``torch.save`` files read with
:func:`utils.safe_load.load_torch` (``weights_only=True``). These helpers add
what every network loader needs on top: a "not installed" error that says
where the file goes, and a strict state-dict load whose failure names the
missing, unexpected and mis-shaped keys in one line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from utils.errors import FileFormatError, MissingAssetError

__all__ = ["require_checkpoint", "load_state_dict_strict"]

#: How many example keys an error message lists per kind of mismatch.
_EXAMPLES = 3


def require_checkpoint(path: str | os.PathLike, name: str) -> Path:
    """Return ``path`` as a :class:`~pathlib.Path`, or raise if nothing is there.

    Args:
        path: where the caller looks for the file (the fitting code passes
            the official location, :func:`assets.checkpoints.official_path`).
        name: the network's name, for the message.

    Raises:
        MissingAssetError: ``path`` does not exist.
    """
    path = Path(path)
    if not path.exists():
        raise MissingAssetError(f"{path}: the {name} checkpoint is not installed (see checkpoints/README.md)")
    return path


def _examples(keys: list[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_EXAMPLES])
    return shown + (", ..." if len(keys) > _EXAMPLES else "")


def load_state_dict_strict(module: nn.Module, state_dict, path: str | os.PathLike, name: str) -> None:
    """Copy ``state_dict`` into ``module``, requiring the exact key layout.

    Every parameter and buffer of ``module`` must be present with its shape,
    and nothing else. The one tolerance is a missing BatchNorm
    ``num_batches_tracked`` counter (older checkpoints omit it; it does not
    affect inference). Values are cast to the module's dtypes.

    Args:
        module: the network to fill.
        state_dict: mapping from key to tensor, as read from ``path``.
        path: the file, for the error message.
        name: the architecture's name, for the error message.

    Raises:
        FileFormatError: ``state_dict`` is not a mapping of tensors or its
            keys/shapes differ; the message lists a few examples of each.
    """
    if not isinstance(state_dict, Mapping):
        raise FileFormatError(path, f"expected a state dict of {name}, found {type(state_dict).__name__}")
    not_tensors = [k for k, v in state_dict.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise FileFormatError(path, f"not a {name} state dict: non-tensor entries {_examples(not_tensors)}")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in expected]
    wrong_shape = [k for k in expected if k in state_dict and tuple(state_dict[k].shape) != tuple(expected[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys ({_examples(missing)})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys ({_examples(unexpected)})")
    if wrong_shape:
        shapes = ", ".join(
            f"{k!r} {tuple(state_dict[k].shape)} instead of {tuple(expected[k].shape)}" for k in wrong_shape[:_EXAMPLES]
        )
        more = ", ..." if len(wrong_shape) > _EXAMPLES else ""
        problems.append(f"{len(wrong_shape)} keys with wrong shapes ({shapes}{more})")
    if problems:
        raise FileFormatError(path, f"not the {name} layout: " + "; ".join(problems))
    module.load_state_dict(state_dict, strict=False)
