"""The optional official networks used by the texture stages.

:func:`load_optional_networks` loads the ArcFace identity network and the
VGG perceptual network when their official checkpoints are present, and
records for each whether it was used or skipped and why, so every run can
report it (``metrics.json``, the log).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from models.networks.arcface import ArcFaceEmbedder, arcface_alignment, load_arcface
from models.networks.vgg_perceptual import VGGPerceptual, load_vgg16
from utils.assets.checkpoints import OFFICIAL_CHECKPOINTS, official_path
from utils.errors import FileFormatError, MissingAssetError

__all__ = ["OptionalNetworks", "load_optional_networks", "identity_loss", "perceptual_loss"]

logger = logging.getLogger("uvapm.fitting")


@dataclass
class OptionalNetworks:
    """Loaded optional networks and what happened to each.

    Attributes:
        arcface: identity embedder, or None.
        vgg: perceptual network, or None.
        status: name -> "used" or "skipped: <reason>".
    """

    arcface: ArcFaceEmbedder | None = None
    vgg: VGGPerceptual | None = None
    status: dict = field(default_factory=dict)


def load_optional_networks(
    checkpoints_dir: str | os.PathLike, device: torch.device, use_arcface: bool = True, use_vgg: bool = True
) -> OptionalNetworks:
    """Load what is present; a missing or broken file is skipped with its reason (logged once)."""
    networks = OptionalNetworks()
    without = {c.key: c.without for c in OFFICIAL_CHECKPOINTS}
    for key, wanted, loader in (("arcface", use_arcface, load_arcface), ("vgg", use_vgg, load_vgg16)):
        if not wanted:
            networks.status[key] = "skipped: disabled in the config"
            continue
        path = official_path(checkpoints_dir, key)
        try:
            setattr(networks, key, loader(path, device))
            networks.status[key] = "used"
        except MissingAssetError:
            networks.status[key] = f"skipped: {path} not found ({without[key]})"
        except FileFormatError as err:
            networks.status[key] = f"skipped: {err}"
        logger.info("%s: %s", key, networks.status[key])
    return networks


def identity_loss(arcface: ArcFaceEmbedder, render: torch.Tensor, image: torch.Tensor,
                  landmarks: torch.Tensor) -> torch.Tensor:
    """1 - cosine similarity of ArcFace features (B,), both crops aligned from the same landmarks (B, 68, 2)."""
    matrix = arcface_alignment(landmarks.detach())
    return 1.0 - (arcface(render, matrix) * arcface(image, matrix)).sum(-1)


def perceptual_loss(vgg: VGGPerceptual, render: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """LPIPS-VGG16 distance (B,) between the masked render and the masked photo."""
    features = vgg.features(torch.cat([render * mask, image * mask]))
    a, b = features.chunk(2)
    return F.mse_loss(a, b, reduction="none").flatten(1).sum(1)
