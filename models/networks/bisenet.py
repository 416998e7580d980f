"""BiSeNet face parsing (19 CelebAMask-HQ classes, ResNet-18 context path).

The module tree reproduces the parameter names of face-parsing.PyTorch, so
its released ``79999_iter.pth`` (the checkpoint the reference uses, see
official_formats.md §4.4) loads strictly with :func:`load_bisenet`:

* ``cp.resnet``: ResNet-18 (``conv1``, ``bn1``, ``layer1``-``layer4`` of two
  basic blocks, ``downsample.0/1`` where the shape changes);
* ``cp.arm16`` / ``cp.arm32``: attention refinement on the 1/16 and 1/32
  features; ``cp.conv_head16`` / ``cp.conv_head32`` / ``cp.conv_avg``;
* ``ffm``: feature fusion of the 1/8 backbone feature with the context path;
* ``conv_out`` (main head), ``conv_out16`` / ``conv_out32`` (auxiliary heads
  used in training, kept so the checkpoint loads).

Labels: 0 background, 1 skin, 2 l_brow, 3 r_brow, 4 l_eye, 5 r_eye,
6 eye_g (glasses), 7 l_ear, 8 r_ear, 9 ear_r (earring), 10 nose, 11 mouth,
12 u_lip, 13 l_lip, 14 neck, 15 neck_l (necklace), 16 cloth, 17 hair, 18 hat.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from utils.safe_load import load_torch

from .checkpoint_io import load_state_dict_strict

__all__ = ["BISENET_CLASSES", "BiSeNet", "load_bisenet"]

BISENET_CLASSES = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)


class ConvBNReLU(nn.Module):
    """Convolution without bias, batch norm, ReLU (parameters ``conv``, ``bn``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; ``downsample`` (1x1 conv + BN) when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + residual)


class ResNet18Features(nn.Module):
    """ResNet-18 trunk returning the 1/8, 1/16 and 1/32 resolution features (128, 256, 512 channels)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for index, (cin, cout, stride) in enumerate(widths, start=1):
            self.add_module(f"layer{index}", nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        feat32 = self.layer4(feat16)
        return feat8, feat16, feat32


class AttentionRefinement(nn.Module):
    """3x3 ConvBNReLU, then channel attention from global pooling (``conv_atten``, ``bn_atten``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, out_channels)
        self.conv_atten = nn.Conv2d(out_channels, out_channels, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        attention = torch.sigmoid(self.bn_atten(self.conv_atten(F.adaptive_avg_pool2d(feat, 1))))
        return feat * attention


class ContextPath(nn.Module):
    """Backbone features refined top-down: returns (1/8 backbone, 1/8 context, 1/16 context)."""

    def __init__(self):
        super().__init__()
        self.resnet = ResNet18Features()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feat8, feat16, feat32 = self.resnet(x)
        global_context = self.conv_avg(F.adaptive_avg_pool2d(feat32, 1))
        up32 = self.arm32(feat32) + F.interpolate(global_context, feat32.shape[2:], mode="nearest")
        up32 = self.conv_head32(F.interpolate(up32, feat16.shape[2:], mode="nearest"))
        up16 = self.arm16(feat16) + up32
        up16 = self.conv_head16(F.interpolate(up16, feat8.shape[2:], mode="nearest"))
        return feat8, up16, up32


class FeatureFusion(nn.Module):
    """Concatenate, 1x1 ConvBNReLU (``convblk``), then residual channel attention (``conv1``, ``conv2``)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.convblk = ConvBNReLU(in_channels, out_channels, kernel_size=1)
        self.conv1 = nn.Conv2d(out_channels, out_channels // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(out_channels // 4, out_channels, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([spatial, context], dim=1))
        attention = torch.sigmoid(self.conv2(F.relu(self.conv1(F.adaptive_avg_pool2d(feat, 1)))))
        return feat + feat * attention


class SegmentationHead(nn.Module):
    """3x3 ConvBNReLU then a 1x1 classifier without bias (``conv``, ``conv_out``)."""

    def __init__(self, in_channels: int, mid_channels: int, num_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(in_channels, mid_channels)
        self.conv_out = nn.Conv2d(mid_channels, num_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Face-parsing BiSeNet.

    Args:
        num_classes: 19 for the CelebAMask-HQ labels (:data:`BISENET_CLASSES`).

    Input: (B, 3, H, W) RGB normalised with the ImageNet mean and std (the
    checkpoint was trained on 512x512 crops). Output: (B, num_classes, H, W)
    logits of the main head; with ``with_aux=True`` a tuple (main, aux 1/8,
    aux 1/16) as used in training.
    """

    def __init__(self, num_classes: int = 19):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)
        self.conv_out = SegmentationHead(256, 256, num_classes)
        self.conv_out16 = SegmentationHead(128, 64, num_classes)
        self.conv_out32 = SegmentationHead(128, 64, num_classes)

    def forward(self, x: torch.Tensor, with_aux: bool = False):
        size = x.shape[2:]
        feat8, context8, context16 = self.cp(x)
        logits = F.interpolate(self.conv_out(self.ffm(feat8, context8)), size, mode="bilinear", align_corners=True)
        if not with_aux:
            return logits
        aux = [
            F.interpolate(head(feat), size, mode="bilinear", align_corners=True)
            for head, feat in ((self.conv_out16, context8), (self.conv_out32, context16))
        ]
        return (logits, *aux)


def load_bisenet(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> BiSeNet:
    """Build a :class:`BiSeNet` from a face-parsing.PyTorch state dict (e.g. ``79999_iter.pth``).

    The key layout must match exactly (BatchNorm ``num_batches_tracked``
    counters may be absent).

    Raises:
        FileFormatError: unreadable file, not a state dict, or another layout.
    """
    state = load_torch(path, map_location=map_location)
    net = BiSeNet(num_classes=len(BISENET_CLASSES))
    load_state_dict_strict(net, state, path, "face-parsing BiSeNet (19 classes)")
    return net.eval()
