"""Stage 3: high-frequency albedo detail from the detail generator.

Shape, lighting and the coarse albedo are fixed from stage 2. The detail
generator's latent is optimised so that the rendered albedo
``model.combine(coarse, model.decode(z))`` matches the photo at the UV
detail resolution: a photometric term, a term on the high-frequency band
(image minus its Gaussian blur) where pores, stubble and fine wrinkles live,
the perceptual term when the official VGG is present, and a Gaussian prior
on the latent. The photo is the original re-warped into a crop of
``render_size`` pixels, so the detail is not limited by the 224 crop.

Our generator's latent starts from the encoding of the detail seen in the
unwrapped photo texture (one encoder pass), so a few steps suffice. With
``observed_detail`` on, the final map then takes the photo's own
high-frequency detail where the unwrapping is confident and the generated
detail elsewhere (additive mode only; the paper's HSV mode has no such
split).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from models.camera import PinholeCamera
from models.detail_generator import DetailVAE, PaperDetailVAE, extract_detail
from models.face_model import FaceModel
from models.renderer import Renderer, RenderSettings

from .losses import gaussian_prior, high_pass, photometric_loss
from .networks import OptionalNetworks, perceptual_loss
from .optim import OptimConfig, minimize
from .params import FaceParams
from .shape import fit_mask
from .unwrap import UnwrapResult

__all__ = ["DetailFitConfig", "DetailFitResult", "DetailFitter"]


@dataclass
class DetailFitConfig:
    """Stage-3 settings.

    Attributes:
        optim: steps and schedule.
        lr_latent: Adam learning rate of the latent.
        render_size: side of the crop the detail is compared with.
        high_pass_sigma: Gaussian sigma (pixels at ``render_size``) of the
            high-frequency band.
        w_photo, w_high_freq, w_perceptual: loss weights.
        w_prior: weight of the latent's N(0, I) prior per latent value
            (``sum(z^2) / 2`` divided by the latent size, so that the same
            weight suits a 500-d vector and a 16384-value latent grid).
        init_from_unwrap: start our generator's latent from the encoded
            detail of the unwrapped texture (zeros otherwise, and always for
            the paper's model).
        observed_detail: blend in the photo's own detail where the
            unwrapping is confident (additive mode).
    """

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=15, rampdown=0.3))
    lr_latent: float = 0.05
    render_size: int = 512
    high_pass_sigma: float = 1.5
    w_photo: float = 1.0
    w_high_freq: float = 4.0
    w_perceptual: float = 0.02
    w_prior: float = 1e-2
    init_from_unwrap: bool = True
    observed_detail: bool = True


@dataclass
class DetailFitResult:
    """Stage-3 result.

    Attributes:
        params: parameters with ``detail`` (B, L).
        albedo_map: (B, 3, R, R) final UV albedo at the generator's resolution, in [0, 1].
        generated_albedo_map: (B, 3, R, R) the same with generated detail only.
        history: per-step loss terms.
    """

    params: FaceParams
    albedo_map: torch.Tensor
    generated_albedo_map: torch.Tensor
    history: list


class DetailFitter:
    """Stage 3 for a batch.

    Args:
        face_model: the face model.
        detail_model: our :class:`DetailVAE` or the paper's :class:`PaperDetailVAE`.
        networks: optional perceptual network.
        config: stage settings.
    """

    def __init__(self, face_model: FaceModel, detail_model: DetailVAE | PaperDetailVAE,
                 networks: OptionalNetworks | None = None, config: DetailFitConfig | None = None):
        self.model = face_model
        self.detail_model = detail_model.eval().requires_grad_(False)
        self.networks = networks or OptionalNetworks()
        self.config = config or DetailFitConfig()
        camera = PinholeCamera(face_model.camera_distance, self.config.render_size)
        self.renderer = Renderer.for_face_model(face_model, camera, RenderSettings(refresh_pixels=float("inf")))

    def _initial_latent(self, unwrapped: UnwrapResult | None, batch: int, device) -> torch.Tensor:
        gen = self.detail_model
        if isinstance(gen, DetailVAE) and unwrapped is not None and self.config.init_from_unwrap:
            texture = F.interpolate(unwrapped.filled, size=gen.resolution, mode="bilinear", align_corners=False)
            detail = extract_detail(texture, gen.config.low_pass_resolution, gen.config.channels)
            with torch.no_grad():
                return gen.encode(detail)[0]
        return torch.zeros(batch, gen.latent_dim, device=device)

    def observed_blend(self, coarse: torch.Tensor, generated: torch.Tensor, unwrapped: UnwrapResult) -> torch.Tensor:
        """Coarse + the photo's detail where confidently seen + generated detail elsewhere (B, 3, R, R)."""
        gen = self.detail_model
        R = gen.resolution
        texture = F.interpolate(unwrapped.filled, size=R, mode="bilinear", align_corners=False)
        confidence = F.interpolate(unwrapped.confidence, size=R, mode="bilinear", align_corners=False)
        observed = extract_detail(texture, gen.config.low_pass_resolution, gen.config.channels)
        detail = confidence * observed + (1 - confidence) * generated
        return gen.combine(coarse, detail)

    def fit(
        self,
        image: torch.Tensor,
        skin_mask: torch.Tensor,
        parse_mask: torch.Tensor | None,
        params: FaceParams,
        coarse: torch.Tensor,
        unwrapped: UnwrapResult | None = None,
    ) -> DetailFitResult:
        """Fit the detail of a batch.

        Args:
            image: (B, 3, S, S) aligned photo at ``render_size`` (resized if not).
            skin_mask, parse_mask: (B, 1, s, s) masks (resized to S).
            params: stage-2 parameters.
            coarse: (B, 3, r, r) stage-2 coarse albedo.
            unwrapped: the unwrapped texture (initial latent and observed detail).
        """
        cfg, gen, model = self.config, self.detail_model, self.model
        S = cfg.render_size
        resize = lambda x: x if x is None or x.shape[-1] == S else F.interpolate(  # noqa: E731
            x, size=S, mode="bilinear", align_corners=False)
        image, skin_mask, parse_mask = resize(image), resize(skin_mask), resize(parse_mask)
        p = params.detach()
        with torch.no_grad():
            vertices = model(p.identity, p.expression, p.rotation, p.translation).vertices
            normals = model.vertex_normals(vertices)
        self.renderer.invalidate()
        latent = self._initial_latent(unwrapped, image.shape[0], image.device).clone().requires_grad_()
        target_high = high_pass(image, cfg.high_pass_sigma)

        def closure():
            albedo = gen.combine(coarse, gen.decode(latent))
            render = self.renderer(vertices, albedo, p.gamma, normals=normals)
            mask = fit_mask(render.mask, skin_mask, parse_mask)
            terms = {
                "photo": cfg.w_photo * photometric_loss(render.image, image, mask),
                "high_freq": cfg.w_high_freq * photometric_loss(high_pass(render.image, cfg.high_pass_sigma),
                                                                target_high, mask),
                "prior": cfg.w_prior * gaussian_prior(latent) / latent.shape[-1],
            }
            if self.networks.vgg is not None:
                terms["perceptual"] = cfg.w_perceptual * perceptual_loss(self.networks.vgg, render.image, image,
                                                                        mask)
            return terms

        history = minimize({"latent": (latent, cfg.lr_latent)}, closure, cfg.optim)
        p.detail = latent.detach()
        with torch.no_grad():
            generated_detail = gen.decode(p.detail)
            generated = gen.combine(coarse, generated_detail)
            final = generated
            if cfg.observed_detail and unwrapped is not None and isinstance(gen, DetailVAE):
                final = self.observed_blend(coarse, generated_detail, unwrapped)
        return DetailFitResult(p, final.clamp(0, 1), generated.clamp(0, 1), history)
