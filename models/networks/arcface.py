"""ArcFace r50 identity embedding (insightface ``arcface_torch`` iresnet50).

The official checkpoint ``arcface_model/ms1mv3_arcface_r50_fp16_backbone.pth``
is a plain state dict of :class:`IResNet` with blocks (3, 4, 14, 3); its keys
are ``conv1``, ``bn1``, ``prelu``, ``layer{1..4}.{i}.{bn1, conv1, bn2, prelu,
conv2, bn3, downsample.0, downsample.1}``, ``bn2``, ``fc`` and ``features``.

:class:`ArcFaceEmbedder` follows the reference's recognition wrapper: warp
the image to the 112x112 ArcFace crop with a per-image affine matrix
(:func:`~models.networks.image_warp.warp_affine`, OpenCV pixel convention),
map [0, 1] to [-1, 1], run the network and L2-normalise.
:func:`arcface_alignment` computes that matrix from 68 landmarks.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from torch import nn

from utils.safe_load import load_torch

from .checkpoint_io import load_state_dict_strict, require_checkpoint
from .image_warp import warp_affine

__all__ = [
    "ARCFACE_TEMPLATE",
    "ARCFACE_SIZE",
    "IBasicBlock",
    "IResNet",
    "ArcFaceEmbedder",
    "five_point_landmarks",
    "similarity_lstsq",
    "arcface_alignment",
    "load_arcface",
]

#: Side of the ArcFace input crop in pixels.
ARCFACE_SIZE = 112
#: insightface's 5-point template in the 112x112 crop (OpenCV pixel convention): eyes
#: (subject's right, then left, as seen left to right in the image), nose tip, mouth corners.
ARCFACE_TEMPLATE = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)
_EMBEDDING = 512
_BN_EPS = 1e-5


def _conv3x3(in_channels: int, out_channels: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN, conv3x3, BN, PReLU, conv3x3 (stride), BN, plus shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels, eps=_BN_EPS)
        self.conv1 = _conv3x3(in_channels, channels)
        self.bn2 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.prelu = nn.PReLU(channels)
        self.conv2 = _conv3x3(channels, channels, stride)
        self.bn3 = nn.BatchNorm2d(channels, eps=_BN_EPS)
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels, eps=_BN_EPS),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class IResNet(nn.Module):
    """insightface's IResNet backbone for 112x112 inputs, 512-d output.

    Stem conv3x3 + BN + PReLU, four stages of :class:`IBasicBlock` (64, 128,
    256, 512 channels, each starting with stride 2), then BN2d, flatten
    (512 x 7 x 7), Linear to 512 and BatchNorm1d (``features``). The
    official model's dropout has p = 0 and is omitted.

    Args:
        blocks: blocks per stage; (3, 4, 14, 3) is r50.
    """

    def __init__(self, blocks: tuple[int, int, int, int] = (3, 4, 14, 3)):
        super().__init__()
        self.conv1 = _conv3x3(3, 64)
        self.bn1 = nn.BatchNorm2d(64, eps=_BN_EPS)
        self.prelu = nn.PReLU(64)
        in_channels = 64
        for stage, (channels, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
            layer = [IBasicBlock(in_channels, channels, stride=2)]
            layer += [IBasicBlock(channels, channels) for _ in range(count - 1)]
            setattr(self, f"layer{stage}", nn.Sequential(*layer))
            in_channels = channels
        self.bn2 = nn.BatchNorm2d(512, eps=_BN_EPS)
        self.fc = nn.Linear(512 * 7 * 7, _EMBEDDING)
        self.features = nn.BatchNorm1d(_EMBEDDING, eps=_BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, 112, 112) images in [-1, 1] -> (B, 512) unnormalised embeddings."""
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.features(self.fc(self.bn2(x).flatten(1)))


class ArcFaceEmbedder(nn.Module):
    """Unit-length ArcFace identity features of faces in images.

    The network's parameters are frozen (gradients still reach the images
    and the matrices). Keep the module in eval mode, as :func:`load_arcface`
    returns it.

    Args:
        network: an :class:`IResNet` (official weights via :func:`load_arcface`).
    """

    def __init__(self, network: IResNet):
        super().__init__()
        self.network = network.requires_grad_(False)

    def forward(self, images: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
        """Embed faces.

        Args:
            images: (B, 3, H, W) RGB in [0, 1].
            matrix: (B, 2, 3) affine maps from image pixels to the 112x112
                crop, OpenCV pixel convention (from :func:`arcface_alignment`,
                or the reference's stored ``M``).

        Returns:
            (B, 512) L2-normalised embeddings.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected images of shape (B, 3, H, W); got {tuple(images.shape)}")
        crops = warp_affine(images, matrix, (ARCFACE_SIZE, ARCFACE_SIZE))
        return F.normalize(self.network(crops * 2 - 1), dim=-1)


def five_point_landmarks(landmarks: torch.Tensor) -> torch.Tensor:
    """The reference's 68 -> 5 point reduction (Deep3D ``extract_5p``).

    Args:
        landmarks: (B, 68, 2) points (iBUG 68 order).

    Returns:
        (B, 5, 2): mean of points 36 and 39 (0-based; outer and inner corner
        of the eye on the image's left), mean of 42 and 45, nose tip 30,
        mouth corners 48 and 54.
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2):
        raise ValueError(f"Expected landmarks of shape (B, 68, 2); got {tuple(landmarks.shape)}")
    eyes = torch.stack([landmarks[:, [36, 39]].mean(1), landmarks[:, [42, 45]].mean(1)], dim=1)
    return torch.cat([eyes, landmarks[:, [30, 48, 54]]], dim=1)


def similarity_lstsq(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale, translation) from ``source`` to ``target``.

    The closed form of Umeyama's estimate in 2D (as skimage's
    ``SimilarityTransform``, no reflection): with centred points s and d as
    complex numbers, ``z = sum(conj(s) d) / sum(|s|^2)`` is scale times
    rotation. Differentiable. Degenerate inputs (coincident source points,
    or z = 0) give the identity, as the reference does.

    Args:
        source: (B, N, 2) points.
        target: (B, N, 2) or (N, 2) points.

    Returns:
        (B, 2, 3) matrices M with ``target ~ M[:, :, :2] @ source + M[:, :, 2]``.
    """
    target = target.expand_as(source)
    source_mean, target_mean = source.mean(1), target.mean(1)
    s, d = source - source_mean[:, None], target - target_mean[:, None]
    variance = (s**2).sum((1, 2))
    real = (s[..., 0] * d[..., 0] + s[..., 1] * d[..., 1]).sum(1)
    imag = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(1)
    degenerate = (variance == 0) | ((real == 0) & (imag == 0))
    variance = torch.where(degenerate, torch.ones_like(variance), variance)
    a, b = real / variance, imag / variance
    linear = torch.stack([torch.stack([a, -b], -1), torch.stack([b, a], -1)], dim=1)  # (B, 2, 2)
    translation = target_mean - (linear @ source_mean[..., None])[..., 0]
    matrix = torch.cat([linear, translation[..., None]], dim=2)
    identity = torch.eye(2, 3, dtype=matrix.dtype, device=matrix.device).expand_as(matrix)
    return torch.where(degenerate[:, None, None], identity, matrix)


def arcface_alignment(landmarks: torch.Tensor) -> torch.Tensor:
    """Affine matrices from images to the ArcFace crop (the reference's ``estimate_norm``).

    Args:
        landmarks: (B, 68, 2) landmarks in the toolkit's pixel convention
            (top-left origin, y down, pixel centres at +0.5).

    Returns:
        (B, 2, 3) matrices for :class:`ArcFaceEmbedder` in the OpenCV pixel
        convention (centres at integers), fitted from the 5-point reduction
        to :data:`ARCFACE_TEMPLATE`. The landmarks are shifted by -0.5 first,
        which is exactly the reference's conversion of its y-up landmarks
        (``y -> H - 1 - y``), so the result equals the reference's ``M`` for
        the same face. Unlike the reference (which detaches), gradients reach
        the landmarks; detach them to match it.
    """
    points = five_point_landmarks(landmarks) - 0.5
    template = torch.tensor(ARCFACE_TEMPLATE, dtype=points.dtype, device=points.device)
    return similarity_lstsq(points, template)


def load_arcface(path: str | os.PathLike, device: str | torch.device = "cpu") -> ArcFaceEmbedder:
    """Load the official ``arcface_model/ms1mv3_arcface_r50_fp16_backbone.pth``.

    Returns:
        The embedder on ``device``, eval mode, frozen parameters.

    Raises:
        MissingAssetError: the file does not exist.
        FileFormatError: unreadable or truncated file, a pickle that would run
            code, or a different key layout/shapes (e.g. another depth, or a
            ``module.``-prefixed DataParallel dict).
    """
    path = require_checkpoint(path, "ArcFace")
    network = IResNet()
    load_state_dict_strict(network, load_torch(path), path, "ArcFace iresnet50")
    return ArcFaceEmbedder(network).eval().to(device)
