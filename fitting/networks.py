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

from assets.checkpoints import OFFICIAL_CHECKPOINTS, official_path
from models.networks.arcface import ArcFaceEmbedder, arcface_alignment, load_arcface
from models.networks.deep3d import Deep3DRegressor, load_deep3d, split_coefficients
from models.networks.vgg_perceptual import VGGPerceptual, load_vgg16
from utils.errors import FileFormatError, MissingAssetError

from .params import FaceParams

__all__ = ["OptionalNetworks", "load_optional_networks", "identity_loss", "perceptual_loss", "deep3d_initial_params"]

logger = logging.getLogger("uvapm.fitting")


@dataclass
class OptionalNetworks:
    """Loaded optional networks and what happened to each.

    Attributes:
        arcface: identity embedder, or None.
        vgg: perceptual network, or None.
        deep3d: HiFi3D++ coefficient regressor (stage-1 initialisation), or None.
        status: name -> "used" or "skipped: <reason>".
    """

    arcface: ArcFaceEmbedder | None = None
    vgg: VGGPerceptual | None = None
    deep3d: Deep3DRegressor | None = None
    status: dict = field(default_factory=dict)


def load_optional_networks(
    checkpoints_dir: str | os.PathLike, device: torch.device, use_arcface: bool = True, use_vgg: bool = True,
    face_model: str = "ict",
) -> OptionalNetworks:
    """Load what is present; a missing or broken file is skipped with its reason (logged once).

    The Deep3D regressor predicts HiFi3D++ coefficients, so it is only
    considered for ``face_model == "hifi3dpp"``.
    """
    networks = OptionalNetworks()
    without = {c.key: c.without for c in OFFICIAL_CHECKPOINTS}
    wanted_networks = (("arcface", use_arcface, load_arcface), ("vgg", use_vgg, load_vgg16),
                       ("deep3d", face_model == "hifi3dpp", load_deep3d))
    for key, wanted, loader in wanted_networks:
        if not wanted:
            networks.status[key] = ("skipped: disabled in the config" if key != "deep3d"
                                    else "skipped: predicts HiFi3D++ coefficients only")
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


def deep3d_initial_params(regressor: Deep3DRegressor, image: torch.Tensor, num_expression: int) -> FaceParams:
    """Stage-1 starting parameters from the Deep3D regressor (the reference's stage 1).

    Args:
        image: (B, 3, 224, 224) crops aligned as the reference aligns them
            (``--set preprocess.reference_template=topo_assets/similarity_Lm3D_all.mat``
            reproduces its alignment exactly).
        num_expression: the face model's expression count (45 for HiFi3D++).
    """
    with torch.no_grad():
        coeffs = split_coefficients(regressor(image))
    return FaceParams(identity=coeffs.id, expression=coeffs.exp[:, :num_expression], angles=coeffs.angle,
                      translation=coeffs.trans, gamma=coeffs.gamma)


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
