"""The paper's Deep3D coefficient regressor (HiFi3D++ variant of Deep3DFaceRecon).

A torchvision ResNet-50 (V1.5 bottlenecks, no final fc) followed by seven
1x1 convolution heads on the pooled (B, 2048, 1, 1) features; their outputs
are concatenated into the (B, 1049) HiFi3D++ coefficient vector:

======  =====  ======================================
head    size   note
======  =====  ======================================
id      532
exp     45     conv + ReLU (``final_layers.1.0``), >= 0
tex     439
angle   3      x, y, z Euler angles, radians
gamma   27     SH lighting, channel-major (R0..8, G0..8, B0..8)
txy     2      tx, ty
tz      1
======  =====  ======================================

The official checkpoint ``deep3d_model/epoch_latest.pth`` is a dict whose
``net_recon`` entry is this module's state dict (keys ``backbone.*`` and
``final_layers.*``); other entries (optimiser and scheduler states) are
ignored. The network is not distributed with the toolkit; without it fitting
starts from the mean face.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torchvision
from torch import nn

from utils.errors import FileFormatError
from utils.safe_load import load_torch

from .checkpoint_io import load_state_dict_strict, require_checkpoint

__all__ = ["COEFFICIENT_SIZES", "Deep3DCoefficients", "Deep3DRegressor", "split_coefficients", "load_deep3d"]

#: Names and sizes of the slices of the (B, 1049) coefficient vector, in order.
COEFFICIENT_SIZES = (("id", 532), ("exp", 45), ("tex", 439), ("angle", 3), ("gamma", 27), ("trans", 3))
#: Output channels of the seven heads, in checkpoint order (trans is split into txy and tz).
_HEAD_SIZES = (532, 45, 439, 3, 27, 2, 1)
_EXP_HEAD = 1
_BACKBONE_CHANNELS = 2048


@dataclass
class Deep3DCoefficients:
    """The named slices of a (B, 1049) HiFi3D++ coefficient vector.

    Attributes:
        id: (B, 532) identity coefficients.
        exp: (B, 45) expression coefficients.
        tex: (B, 439) albedo coefficients.
        angle: (B, 3) Euler angles (x, y, z) in radians.
        gamma: (B, 27) SH lighting, channel-major (R0..8, G0..8, B0..8).
        trans: (B, 3) translation (tx, ty, tz).
    """

    id: torch.Tensor
    exp: torch.Tensor
    tex: torch.Tensor
    angle: torch.Tensor
    gamma: torch.Tensor
    trans: torch.Tensor


def split_coefficients(coefficients: torch.Tensor) -> Deep3DCoefficients:
    """Split (B, 1049) coefficients into named views (no copy, gradients kept)."""
    total = sum(size for _, size in COEFFICIENT_SIZES)
    if coefficients.ndim != 2 or coefficients.shape[1] != total:
        raise ValueError(f"Expected coefficients of shape (B, {total}); got {tuple(coefficients.shape)}")
    parts = torch.split(coefficients, [size for _, size in COEFFICIENT_SIZES], dim=1)
    return Deep3DCoefficients(**{name: part for (name, _), part in zip(COEFFICIENT_SIZES, parts)})


class Deep3DRegressor(nn.Module):
    """ResNet-50 regressor from a 224x224 face crop to HiFi3D++ coefficients.

    Built with random weights; use :func:`load_deep3d` for the official ones.
    """

    def __init__(self):
        super().__init__()
        self.backbone = torchvision.models.resnet50(weights=None)
        # The reference's backbone has no fc at all; an Identity keeps the key layout
        # and makes torchvision's forward return the pooled (B, 2048) features.
        self.backbone.fc = nn.Identity()
        heads = [nn.Conv2d(_BACKBONE_CHANNELS, size, kernel_size=1, bias=True) for size in _HEAD_SIZES]
        heads[_EXP_HEAD] = nn.Sequential(heads[_EXP_HEAD], nn.ReLU())
        self.final_layers = nn.ModuleList(heads)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Regress coefficients.

        Args:
            images: (B, 3, 224, 224) aligned face crops (see the alignment
                of the reference preprocessing), RGB in [0, 1], not
                normalised.

        Returns:
            (B, 1049) coefficients; :func:`split_coefficients` names them.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected images of shape (B, 3, 224, 224); got {tuple(images.shape)}")
        features = self.backbone(images)[:, :, None, None]  # (B, 2048, 1, 1)
        return torch.cat([head(features) for head in self.final_layers], dim=1).flatten(1)


def load_deep3d(path: str | os.PathLike, device: str | torch.device = "cpu") -> Deep3DRegressor:
    """Load the official ``deep3d_model/epoch_latest.pth``.

    Returns:
        The regressor on ``device`` in eval mode with frozen parameters
        (gradients still reach the input images).

    Raises:
        MissingAssetError: the file does not exist.
        FileFormatError: unreadable or truncated file, a pickle that would run
            code, no ``net_recon`` entry, or a different key layout/shapes.
    """
    path = require_checkpoint(path, "Deep3D")
    checkpoint = load_torch(path)
    if not isinstance(checkpoint, Mapping) or "net_recon" not in checkpoint:
        found = sorted(map(str, checkpoint))[:5] if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
        raise FileFormatError(path, f"not a Deep3D checkpoint: no 'net_recon' entry (found {found})")
    model = Deep3DRegressor()
    load_state_dict_strict(model, checkpoint["net_recon"], path, "Deep3D ResNet-50 (HiFi3D++, 1049 outputs)")
    return model.requires_grad_(False).eval().to(device)
