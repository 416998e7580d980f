"""Stage 2: coarse UV albedo from the UV albedo model (UVAPM), shape fixed.

The stage-1 geometry, pose and normals stay fixed, so the renderer
rasterises once and every step only decodes the UVAPM map, samples it and
applies the SH shading. Optimised: the UVAPM coefficients (in standard
deviations) and the SH lighting. Losses (weights in :class:`AlbedoFitConfig`):

* photometric distance in the skin mask (render mask x skin x parse);
* ArcFace identity loss, when the official ArcFace checkpoint is present;
* LPIPS-VGG16 perceptual loss, when the official VGG checkpoint is present;
* a Gaussian prior on the coefficients and the monochrome-light prior.

The coefficients start from the projection of the unwrapped photo texture
onto the model (confidence-weighted least squares with the prior), which is
already close; the reference starts from zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from models.camera import PinholeCamera
from models.face_model import FaceModel
from models.renderer import Renderer, RenderSettings
from models.uv_albedo_model import UVAlbedoModel

from .losses import lighting_monochrome_loss, photometric_loss
from .networks import OptionalNetworks, identity_loss, perceptual_loss
from .optim import OptimConfig, minimize
from .params import FaceParams
from .shape import fit_mask
from .unwrap import UnwrapResult

__all__ = ["AlbedoFitConfig", "AlbedoFitResult", "AlbedoFitter"]


@dataclass
class AlbedoFitConfig:
    """Stage-2 settings.

    Attributes:
        optim: steps and learning-rate schedule.
        lr_albedo: Adam learning rate of the UVAPM coefficients (std units).
        lr_albedo_raw: the same for a model whose coefficients are in raw
            units (the paper's ``.pkl`` without standard deviations; the
            paper's own rate is 2.0); such a model also gets no prior.
        lr_gamma: Adam learning rate of the SH lighting.
        init_from_unwrap: start from the projection of the unwrapped photo
            texture (else from zero, the model's mean albedo).
        init_ridge: prior weight of that projection.
        w_photo, w_identity, w_perceptual, w_prior, w_gamma_mono: loss weights
            (the identity and perceptual terms apply only when their networks are loaded).
    """

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=60, rampdown=0.25))
    lr_albedo: float = 0.05
    lr_albedo_raw: float = 2.0
    lr_gamma: float = 0.005
    init_from_unwrap: bool = True
    init_ridge: float = 1e-3
    w_photo: float = 1.0
    w_identity: float = 0.2
    w_perceptual: float = 0.02
    w_prior: float = 1e-4
    w_gamma_mono: float = 1.0


@dataclass
class AlbedoFitResult:
    """Stage-2 result.

    Attributes:
        params: parameters with ``albedo`` (B, 3K) and refined ``gamma``.
        albedo_map: (B, 3, R, R) coarse UV albedo at the UVAPM resolution, clamped to [0, 1].
        history: per-step loss terms.
    """

    params: FaceParams
    albedo_map: torch.Tensor
    history: list


class AlbedoFitter:
    """Stage 2 for a batch of aligned faces.

    Args:
        face_model: the face model.
        uvapm: the UV albedo model (its layout must match the face model's).
        networks: optional identity/perceptual networks.
        config: stage settings.
        image_size: side of the aligned crops.
    """

    def __init__(self, face_model: FaceModel, uvapm: UVAlbedoModel, networks: OptionalNetworks | None = None,
                 config: AlbedoFitConfig | None = None, image_size: int = 224):
        uvapm.check_layout(face_model)
        self.model = face_model
        self.uvapm = uvapm
        self.networks = networks or OptionalNetworks()
        self.config = config or AlbedoFitConfig()
        self.renderer = Renderer.for_face_model(face_model, PinholeCamera(face_model.camera_distance, image_size),
                                                RenderSettings(refresh_pixels=float("inf")))

    def initial_coefficients(self, unwrapped: UnwrapResult | None, batch: int) -> torch.Tensor:
        """Projection of the unwrapped texture (or zeros: the mean albedo)."""
        device = self.uvapm.mean.device
        if unwrapped is None or not self.config.init_from_unwrap:
            return torch.zeros(batch, self.uvapm.num_coeffs, device=device)
        return self.uvapm.encode(unwrapped.texture, unwrapped.confidence, ridge=self.config.init_ridge)

    def fit(
        self,
        image: torch.Tensor,
        skin_mask: torch.Tensor,
        parse_mask: torch.Tensor | None,
        landmarks: torch.Tensor,
        params: FaceParams,
        unwrapped: UnwrapResult | None = None,
    ) -> AlbedoFitResult:
        """Fit the coarse albedo of a batch.

        Args:
            image: (B, 3, S, S) aligned photos.
            skin_mask, parse_mask: (B, 1, S, S).
            landmarks: (B, 68, 2) detected landmarks (aligns the identity crops).
            params: stage-1 parameters (geometry, pose, lighting).
            unwrapped: the unwrapped photo texture, for the initial coefficients.
        """
        cfg, model, nets = self.config, self.model, self.networks
        p = params.detach()
        with torch.no_grad():
            vertices = model(p.identity, p.expression, p.rotation, p.translation).vertices
            normals = model.vertex_normals(vertices)
        self.renderer.invalidate()
        coeffs = self.initial_coefficients(unwrapped, image.shape[0]).detach().clone().requires_grad_()
        gamma = p.gamma.clone().requires_grad_()

        std_units = self.uvapm.coefficient_units == "std"

        def closure():
            albedo = self.uvapm(coeffs).clamp(0, 1)
            render = self.renderer(vertices, albedo, gamma, normals=normals)
            mask = fit_mask(render.mask, skin_mask, parse_mask)
            terms = {
                "photo": cfg.w_photo * photometric_loss(render.image, image, mask),
                "prior": (cfg.w_prior if std_units else 0.0) * self.uvapm.prior(coeffs),
                "gamma_mono": cfg.w_gamma_mono * lighting_monochrome_loss(gamma),
            }
            if nets.arcface is not None or nets.vgg is not None:
                composite = render.image * render.mask.detach() + image * (1 - render.mask.detach())
                if nets.arcface is not None:
                    terms["identity"] = cfg.w_identity * identity_loss(nets.arcface, composite, image, landmarks)
                if nets.vgg is not None:
                    vgg_mask = render.mask * (parse_mask if parse_mask is not None else 1.0)
                    terms["perceptual"] = cfg.w_perceptual * perceptual_loss(nets.vgg, render.image, image,
                                                                            vgg_mask)
            return terms

        lr = cfg.lr_albedo if std_units else cfg.lr_albedo_raw
        history = minimize({"albedo": (coeffs, lr), "gamma": (gamma, cfg.lr_gamma)}, closure, cfg.optim)
        p.albedo, p.gamma = coeffs.detach(), gamma.detach()
        with torch.no_grad():
            albedo_map = self.uvapm(p.albedo).clamp(0, 1)
        return AlbedoFitResult(p, albedo_map, history)
