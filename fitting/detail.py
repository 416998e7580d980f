"""Stage 3: high-frequency albedo detail from the detail generator.

Shape, lighting and the coarse albedo are fixed from stage 2. The detail
generator's latent is optimised so that the rendered albedo
``model.combine(coarse, model.decode(z))`` matches the photo at the UV
detail resolution: a photometric term, a term on the high-frequency band
(image minus its Gaussian blur) where pores, stubble and fine wrinkles live,
the perceptual term when the official VGG is present, and a Gaussian prior
on the latent. The photo is the original re-warped into a crop of
``render_size`` pixels, so the detail is not limited by the 224 crop.

A generator that can encode a texture (ours) starts its latent from the
encoding of the detail seen in the unwrapped photo texture (one encoder
pass), so a few steps suffice. With ``observed_detail`` on, the final map
then takes what the photo shows where the unwrapping is confident. With
``observed_band: full``: the unwrapped texture itself, colour-balanced to
the models' albedo (one gain per channel: the photo's structure, the colour
of the fit's light/skin separation and skin prior), and elsewhere the
coarse albedo with the generated detail plus the seen texels' difference
from it, continued by push-pull filling over the confidence (mirrored
texels count with their mirror's, see :mod:`fitting.unwrap`) over the
texels the UV model varies (``coarse_support``), and past them fading to
none over a band ``unseen_fade`` of the map side wide, where the coarse
albedo's own completion (the skin tone) takes over: no seam where the view
ends, no flat fill, any generator, and the face's darker border ring is not
carried over the ears, neck and scalp. With ``high``: only its
high-frequency detail, in place of the generated detail (generators whose
combination is additive; the paper's HSV replacement has no such split).
Photos of one person (``batch.groups``) share one latent (their unwrapped
textures are already one, :func:`fitting.unwrap.fuse_unwrapped`). What a
generator offers is asked through the
:class:`~models.detail_generator.DetailGenerator` protocol, never its class.
"""

from __future__ import annotations

import torch

from models.camera import PinholeCamera
from models.config import RenderSettings
from models.detail_generator import DetailGenerator
from models.face_model import FaceModel
from models.filters import faded_fill, gaussian_high_pass
from models.renderer import Renderer
from utils.config import ConfigError

from .config import DetailFitConfig
from .losses import gaussian_prior, photometric_loss
from .networks import OptionalNetworks, perceptual_loss
from .optim import minimize
from .progress import StepProgress
from .shape import fit_mask
from .structures import FaceBatch, FitState
from .unwrap import UnwrapResult, with_reliability

__all__ = ["OBSERVED_BANDS", "DetailFitter", "balanced_to"]

#: Values of :attr:`~fitting.config.DetailFitConfig.observed_band`.
OBSERVED_BANDS = ("full", "high")


class DetailFitter:
    """Stage 3 for a batch (a :class:`~fitting.structures.Stage`).

    Args:
        face_model: the face model.
        detail_model: a :class:`~models.detail_generator.DetailGenerator` (ours or the paper's).
        networks: optional perceptual network.
        config: stage settings.
        coarse_support: optional (1, 1, r, r) where the coarse albedo's model varies
            (:meth:`~models.uv_albedo_model.UVAlbedoModel.support`): the seen residual is continued unfaded
            there (without it, only over the seen texels).
    """

    name = "stage3"

    def __init__(self, face_model: FaceModel, detail_model: DetailGenerator,
                 networks: OptionalNetworks | None = None, config: DetailFitConfig | None = None,
                 coarse_support: torch.Tensor | None = None):
        self.model = face_model
        self.coarse_support = coarse_support
        self.detail_model = detail_model.eval().requires_grad_(False)
        self.networks = networks or OptionalNetworks()
        self.config = config or DetailFitConfig()
        camera = PinholeCamera(face_model.camera_distance, self.config.render_size)
        self.renderer = Renderer.for_face_model(face_model, camera, RenderSettings(refresh_pixels=float("inf")))
        if self.config.observed_band not in OBSERVED_BANDS:
            raise ConfigError(f"detail.observed_band: {self.config.observed_band!r} is not one of "
                              f"{', '.join(OBSERVED_BANDS)}")
        self.progress = StepProgress()

    def _initial_latent(self, unwrapped: UnwrapResult | None, batch: int, device) -> torch.Tensor:
        gen = self.detail_model
        start = None
        if unwrapped is not None and self.config.init_from_unwrap:
            start = gen.initial_latent(unwrapped.filled)
        return start if start is not None else torch.zeros(batch, gen.latent_dim, device=device)

    def _observed_blend(self, coarse: torch.Tensor, generated: torch.Tensor,
                        unwrapped: UnwrapResult | None) -> torch.Tensor | None:
        """The final map with what the photo shows carried in by the unwrapping's confidence (B, 3, R, R) (see
        the module docstring), or None when the generator cannot take the photo's detail."""
        if unwrapped is None or not self.config.observed_detail:
            return None
        gen = self.detail_model
        if self.config.observed_band == "full":
            confidence = _resize(unwrapped.filled_confidence, gen.resolution)
            models = gen.combine(coarse, generated)
            seen = balanced_to(_resize(unwrapped.filled, gen.resolution), models, confidence)
            support = None if self.coarse_support is None else _resize(self.coarse_support, gen.resolution)
            return models + faded_fill(seen - models, confidence, 0.0, self.config.unseen_fade, keep=support)
        observed = gen.observed_detail(unwrapped.filled)
        if observed is None:
            return None
        confidence = _resize(unwrapped.confidence, gen.resolution)
        return gen.combine(coarse, confidence * observed + (1 - confidence) * generated)

    def __call__(self, batch: FaceBatch, state: FitState) -> FitState:
        """Fit the detail latent against ``batch.detail_image`` with shape, light and the coarse albedo fixed;
        sets ``params.detail`` and the ``stage3`` albedo map (B, 3, R, R) at the generator's resolution."""
        cfg, gen, model = self.config, self.detail_model, self.model
        S = cfg.render_size
        image = _resize(batch.detail_image, S)
        skin_mask, parse_mask = _resize(batch.skin_mask, S), _resize(batch.parse_mask, S)
        if cfg.weight_by_reliability:  # occluders the unwrapping rejected stay out of the fit too
            parse_mask = with_reliability(parse_mask, state.unwrapped)
        coarse = state.albedo_maps["stage2"]
        p = state.params.detach()
        with torch.no_grad():
            vertices = p.posed(model).vertices
            normals = model.vertex_normals(vertices)
        self.renderer.invalidate()
        groups = batch.photo_groups  # one latent per person
        latent = groups.mean(self._initial_latent(state.unwrapped, len(batch), image.device)).detach().requires_grad_()
        target_high = gaussian_high_pass(image, cfg.high_pass_sigma)

        def closure():
            albedo = gen.combine(coarse, gen.decode(groups.expand(latent)))
            render = self.renderer(vertices, albedo, p.gamma, normals=normals)
            mask = fit_mask(render.mask, skin_mask, parse_mask)
            terms = {
                "photo": cfg.w_photo * photometric_loss(render.image, image, mask),
                "high_freq": cfg.w_high_freq * photometric_loss(gaussian_high_pass(render.image, cfg.high_pass_sigma),
                                                                target_high, mask),
                "prior": cfg.w_prior * gaussian_prior(groups.expand(latent)) / latent.shape[-1],
            }
            if self.networks.vgg is not None:
                terms["perceptual"] = cfg.w_perceptual * perceptual_loss(self.networks.vgg, render.image, image,
                                                                        mask)
            return terms

        history = minimize({"latent": (latent, cfg.lr_latent)}, closure, cfg.optim,
                           self.progress.track(self.name, cfg.optim.steps))
        p.detail = groups.expand(latent.detach())
        with torch.no_grad():
            generated_detail = gen.decode(p.detail)
            final = self._observed_blend(coarse, generated_detail, state.unwrapped)
            if final is None:
                final = gen.combine(coarse, generated_detail)
        return state.updated(params=p, albedo_maps={self.name: final.clamp(0, 1)}, histories={self.name: history})


def balanced_to(texture: torch.Tensor, reference: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``texture`` (B, 3, R, R) times the per-channel gain that gives it ``reference``'s weighted mean colour
    (B, 3, R, R) over ``weight`` (B, 1, R, R): its structure kept, its colour balance the reference's."""
    gain = (weight * reference).flatten(2).sum(2) / (weight * texture).flatten(2).sum(2).clamp_min(1e-6)
    return (texture * gain[:, :, None, None]).clamp(0, 1)


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size:
        return x
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)
