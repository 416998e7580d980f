"""Detail generator checkpoints: ours (``format_version``, ``config``, ``state_dict``) and the paper's.

:func:`load_detail_generator` picks the model from the checkpoint's content:
the paper's file is a plain state_dict; ours is a dict with
``format_version``, ``config`` and ``state_dict`` (training checkpoints add
``training``, which loading a generator ignores).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, fields

import torch
import torch.nn as nn

from models.config import DetailGeneratorConfig
from utils.atomic import save_torch
from utils.config import ConfigError
from utils.errors import FileFormatError
from utils.safe_load import load_torch

from .paper_vae import PaperDetailVAE
from .vae import DetailVAE

__all__ = [
    "FORMAT_VERSION",
    "detail_generator_checkpoint",
    "save_detail_generator",
    "load_detail_checkpoint",
    "load_detail_generator",
]

#: Version of our checkpoint dict; files with a newer version are refused.
FORMAT_VERSION = 1


def detail_generator_checkpoint(model: DetailVAE) -> dict:
    """Our checkpoint dict: ``format_version``, plain ``config``, CPU ``state_dict``."""
    return {
        "format_version": FORMAT_VERSION,
        "config": asdict(model.config),
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
    }


def save_detail_generator(path: str | os.PathLike, model: DetailVAE) -> None:
    """Save ``model`` atomically (loadable with ``weights_only=True``)."""
    save_torch(path, detail_generator_checkpoint(model))


def _few(keys: list[str], limit: int = 4) -> str:
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys) - limit} more)' if len(keys) > limit else ''}]"


def _load_state(path: os.PathLike, model: nn.Module, state_dict: Mapping, what: str) -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the offending keys."""
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state_dict.items()):
        raise FileFormatError(path, f"{what}: state_dict holds entries that are not named tensors")
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        parts = ([f"missing keys {_few(missing)}"] if missing else []) + (
            [f"unexpected keys {_few(unexpected)}"] if unexpected else [])
        raise FileFormatError(path, f"wrong architecture for {what}: " + "; ".join(parts))
    wrong = [f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
             for key, value in expected.items() if state_dict[key].shape != value.shape]
    if wrong:
        raise FileFormatError(path, f"wrong architecture for {what}: shape mismatch {_few(wrong, 2)}")
    model.load_state_dict(state_dict, strict=True)


def _config_from_dict(path: os.PathLike, config) -> DetailGeneratorConfig:
    if not isinstance(config, Mapping):
        raise FileFormatError(path, "'config' is not a mapping")
    known = {f.name for f in fields(DetailGeneratorConfig)}
    unknown = sorted(set(config) - known)
    if unknown:
        raise FileFormatError(path, f"config has unknown keys {_few(unknown)}")
    result = DetailGeneratorConfig(**config)
    try:
        result.check()
    except ConfigError as err:
        raise FileFormatError(path, f"invalid config ({err})") from None
    return result


def _paper_model(path: os.PathLike, state_dict: Mapping) -> PaperDetailVAE:
    needed = ["fc_mu.weight", "decoder.4.weight"]
    missing = [key for key in needed if not isinstance(state_dict.get(key), torch.Tensor)]
    if missing:
        raise FileFormatError(
            path, f"a plain state_dict, but not the paper's detail VAE layout: missing keys {_few(missing)}"
        )
    out_features = state_dict["decoder.4.weight"].shape[0]
    out_size = math.isqrt(out_features)
    if out_size * out_size != out_features:
        raise FileFormatError(path, f"decoder.4.weight has {out_features} outputs, not a square map")
    model = PaperDetailVAE(out_size=out_size, latent_dim=state_dict["fc_mu.weight"].shape[0])
    _load_state(path, model, state_dict, "the paper's detail VAE")
    return model


def load_detail_checkpoint(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> tuple[DetailVAE | PaperDetailVAE, dict]:
    """Load a detail generator and the raw checkpoint dict it came from.

    Returns:
        The model (in eval mode, on ``map_location``) and the checkpoint dict
        (for our training checkpoints it holds ``training``).

    Raises:
        FileFormatError: truncated or corrupt file, a pickle that would run
            code, a newer ``format_version``, or the wrong architecture.
    """
    checkpoint = load_torch(path, map_location=map_location)
    if not isinstance(checkpoint, Mapping):
        raise FileFormatError(path, f"not a detail generator checkpoint (holds a {type(checkpoint).__name__})")
    if "format_version" in checkpoint:
        version = checkpoint["format_version"]
        if not isinstance(version, int) or version < 1:
            raise FileFormatError(path, f"invalid format_version {version!r}")
        if version > FORMAT_VERSION:
            raise FileFormatError(
                path, f"format_version {version} is newer than this toolkit supports ({FORMAT_VERSION}); "
                "update the toolkit"
            )
        missing = [key for key in ("config", "state_dict") if key not in checkpoint]
        if missing:
            raise FileFormatError(path, f"missing keys {missing}")
        if not isinstance(checkpoint["state_dict"], Mapping):
            raise FileFormatError(path, "'state_dict' is not a mapping")
        model = DetailVAE(_config_from_dict(path, checkpoint["config"]))
        _load_state(path, model, checkpoint["state_dict"], "DetailVAE")
    elif checkpoint and all(isinstance(key, str) for key in checkpoint):
        model = _paper_model(path, checkpoint)
    else:
        raise FileFormatError(path, "not a detail generator checkpoint (neither our format nor a state_dict)")
    return model.to(map_location).eval(), dict(checkpoint)


def load_detail_generator(
    path: str | os.PathLike, map_location: str | torch.device = "cpu"
) -> DetailVAE | PaperDetailVAE:
    """Load our :class:`DetailVAE` or the paper's :class:`PaperDetailVAE`, chosen by the file's keys.

    Use ``model.combine(coarse, model.decode(z))`` for the albedo in either
    mode (additive or the paper's HSV replacement).
    """
    return load_detail_checkpoint(path, map_location)[0]
