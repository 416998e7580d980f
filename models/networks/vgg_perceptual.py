"""VGG16 perceptual (LPIPS) distance through the official StyleGAN2-ADA TorchScript.

The official ``vgg_model/vgg16.pt`` is NVIDIA's StyleGAN2-ADA metrics
network: a TorchScript module called as ``model(img, resize_images=False,
return_lpips=True)`` on 0-255 images, returning (B, F) features whose
squared Euclidean distance is LPIPS-VGG16.

Trust note: TorchScript is the official format and carries compiled code.
``torch.jit.load`` runs only TorchScript operators (not arbitrary Python and
no Python unpickling), but a crafted file could still compute anything those
operators allow; load only the file from the official source.
"""

from __future__ import annotations

import io
import os
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from utils.errors import FileFormatError

from .checkpoint_io import require_checkpoint

__all__ = ["VGGPerceptual", "load_vgg16"]

#: Images taller than this are area-resized to (MAX_SIZE, MAX_SIZE) first, as the reference does.
MAX_SIZE = 256
_REQUIRED_ARGUMENTS = ("resize_images", "return_lpips")


class VGGPerceptual(nn.Module):
    """Perceptual distance ``sum((f(a) - f(b))**2)`` with the LPIPS-VGG16 features f.

    Args:
        network: the TorchScript module from :func:`load_vgg16` (or any
            module with the same call signature).
    """

    def __init__(self, network: nn.Module):
        super().__init__()
        for parameter in network.parameters():  # ScriptModules lack requires_grad_()
            parameter.requires_grad_(False)
        self.network = network

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) RGB in [0, 1] -> (B, F) LPIPS features.

        Images with H > 256 are area-resized to 256x256 (the reference tests
        the height only); smaller ones are used as they are.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"Expected images of shape (B, 3, H, W); got {tuple(images.shape)}")
        if images.shape[2] > MAX_SIZE:
            images = F.interpolate(images, size=(MAX_SIZE, MAX_SIZE), mode="area")
        return self.network(images * 255.0, resize_images=False, return_lpips=True)

    def forward(self, images_a: torch.Tensor, images_b: torch.Tensor) -> torch.Tensor:
        """Scalar distance summed over the batch; apply masks to the images beforehand."""
        return (self.features(images_a) - self.features(images_b)).square().sum()


def load_vgg16(path: str | os.PathLike, device: str | torch.device = "cpu") -> VGGPerceptual:
    """Load the official ``vgg_model/vgg16.pt`` TorchScript (see the trust note above).

    Returns:
        The perceptual distance on ``device``, eval mode, frozen parameters.

    Raises:
        MissingAssetError: the file does not exist.
        FileFormatError: unreadable, truncated or not a TorchScript archive,
            or its ``forward`` lacks the ``resize_images``/``return_lpips``
            arguments.
    """
    path = require_checkpoint(path, "VGG16")
    try:
        data = path.read_bytes()
    except OSError as err:
        raise FileFormatError(path, f"cannot be read ({err.strerror or err})") from None
    if not data:
        raise FileFormatError(path, "empty file")
    try:
        with warnings.catch_warnings():  # torch.jit is deprecated, but TorchScript is the official format
            warnings.simplefilter("ignore", DeprecationWarning)
            network = torch.jit.load(io.BytesIO(data), map_location=device)
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileFormatError(path, f"not a readable TorchScript archive ({first})") from None
    schema = getattr(getattr(network, "forward", None), "schema", None)
    if schema is None:
        raise FileFormatError(path, "TorchScript archive has no scripted forward; not the StyleGAN2-ADA LPIPS-VGG16")
    arguments = [argument.name for argument in schema.arguments]
    absent = [name for name in _REQUIRED_ARGUMENTS if name not in arguments]
    if absent:
        raise FileFormatError(path, f"TorchScript forward{tuple(arguments[1:])} lacks arguments {absent}; "
                                    "not the StyleGAN2-ADA LPIPS-VGG16")
    return VGGPerceptual(network).eval()
