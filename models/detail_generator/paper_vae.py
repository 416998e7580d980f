"""The paper's detail VAE (``detail_model/variational_autoencoder.pth``) and its HSV combination."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from models.colour import hsv_to_rgb, rgb_to_hsv

from .vae import DetailVAEOutput, reparameterize

__all__ = ["REFERENCE_RGB_SCALE", "REFERENCE_DETAIL_V_SCALE", "PaperDetailVAE", "combine_detail_hsv_reference"]

#: The reference's HSV helpers divide RGB by 255 before the conversion and
#: multiply by 255 after it, although its maps are already in [0, 1].
REFERENCE_RGB_SCALE = 255.0
#: The reference multiplies the decoder output by 0.01 before using it as V.
REFERENCE_DETAIL_V_SCALE = 0.01


def combine_detail_hsv_reference(coarse: torch.Tensor, decoder_out: torch.Tensor) -> torch.Tensor:
    """Albedo of the paper's mode, reproducing the reference (see the format spec, §11.4).

    The reference converts the coarse map to HSV after dividing it by 255
    (it is already in [0, 1]), **replaces** V by ``0.01 * decoder_out``,
    converts back, multiplies by 255 and clamps to [0, 255]. Hue and
    saturation therefore come from the coarse map and the brightness
    (max channel) is ``255 * 0.01 * decoder_out = 2.55 * decoder_out``: the
    coarse brightness is discarded and the result lies in [0, 2.55]. The
    equivalent closed form, for a pixel whose coarse max is not 0, is
    ``coarse / max_c(coarse) * 2.55 * decoder_out``. Values above 1 are not
    clamped, as in the reference.

    Args:
        coarse: (B, 3, r, r) RGB in [0, 1]; bilinearly resized
            (``align_corners=False``) to the decoder's resolution.
        decoder_out: (B, 1, R, R) output of :meth:`PaperDetailVAE.decode`, in (0, 1).

    Returns:
        (B, 3, R, R) RGB in [0, 2.55].
    """
    size = decoder_out.shape[-2:]
    if coarse.shape[-2:] != size:
        coarse = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    hsv = rgb_to_hsv(coarse / REFERENCE_RGB_SCALE)
    value = decoder_out[:, :1] * REFERENCE_DETAIL_V_SCALE
    rgb = hsv_to_rgb(torch.cat((hsv[:, :2], value), dim=1))
    return (rgb * REFERENCE_RGB_SCALE).clamp(0.0, REFERENCE_RGB_SCALE)


class PaperDetailVAE(nn.Module):
    """The paper's detail VAE, key-compatible with ``variational_autoencoder.pth``.

    Encoder: a torchvision ResNet-50 (built without weights, never
    downloaded) whose ``conv1`` takes one channel (7x7, stride 2, no bias),
    all children but ``fc`` kept, then a Flatten: (B, 1, H, W) -> (B, 2048).
    Heads ``fc_mu``, ``fc_logvar``: Linear(2048 -> latent_dim). Decoder:
    Linear(latent -> 512), ReLU, Linear(512 -> 1024), ReLU,
    Linear(1024 -> out_size**2), Sigmoid, Unflatten to (1, out_size, out_size).

    The reference's own sampling uses ``exp(2 logvar)`` as the standard
    deviation (a bug; it is never used at inference); the forward pass here
    uses the correct :func:`reparameterize`.

    Args:
        out_size: side of the decoded map (512 in the paper's checkpoint;
            tests build small instances with the same key layout).
        latent_dim: 500 in the paper's checkpoint.
    """

    def __init__(self, out_size: int = 512, latent_dim: int = 500):
        super().__init__()
        from torchvision.models import resnet50

        resnet = resnet50(weights=None)
        resnet.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        self.encoder = nn.Sequential(*list(resnet.children())[:-1])
        self.encoder.add_module("flatten", nn.Flatten())
        self.fc_mu = nn.Linear(2048, latent_dim)
        self.fc_logvar = nn.Linear(2048, latent_dim)
        self.decoder = nn.Sequential(
            nn.Linear(latent_dim, 512),
            nn.ReLU(),
            nn.Linear(512, 1024),
            nn.ReLU(),
            nn.Linear(1024, out_size * out_size),
            nn.Sigmoid(),
            nn.Unflatten(1, (1, out_size, out_size)),
        )
        self.out_size = out_size
        self._latent_dim = latent_dim

    @property
    def latent_dim(self) -> int:
        return self._latent_dim

    @property
    def resolution(self) -> int:
        return self.out_size

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, H, W) -> (mu, logvar), each (B, latent_dim)."""
        features = self.encoder(image)
        return self.fc_mu(features), self.fc_logvar(features)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, latent_dim) -> (B, 1, out_size, out_size) in (0, 1)."""
        return self.decoder(z)

    def forward(self, image: torch.Tensor, eps: torch.Tensor | None = None) -> DetailVAEOutput:
        mu, logvar = self.encode(image)
        z = reparameterize(mu, logvar, eps) if self.training else mu
        return DetailVAEOutput(self.decode(z), mu, logvar)

    def combine(self, coarse: torch.Tensor, decoded: torch.Tensor) -> torch.Tensor:
        """:func:`combine_detail_hsv_reference`."""
        return combine_detail_hsv_reference(coarse, decoded)

    def initial_latent(self, texture: torch.Tensor) -> None:
        """None: the paper's fit starts from a zero latent."""
        return None

    def observed_detail(self, texture: torch.Tensor) -> None:
        """None: the HSV replacement has no additive detail to take from the photo."""
        return None

    def extra_repr(self) -> str:
        return f"out_size={self.out_size}, latent_dim={self.latent_dim}"
