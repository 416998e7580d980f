"""Stage 2: coarse UV albedo from the UV albedo model (UVAPM), shape fixed.

The stage-1 geometry, pose and normals stay fixed, so the renderer
rasterises once and every step only decodes the UVAPM map, samples it and
applies the SH shading. Optimised: the UVAPM coefficients (in standard
deviations) and the SH lighting. Losses (weights in :class:`AlbedoFitConfig`):

* photometric distance in the skin mask (render mask x skin x parse, x the
  unwrapping's pixel reliability: glasses frames, hair strands and highlights
  left out);
* ArcFace identity loss, when the official ArcFace checkpoint is present;
* LPIPS-VGG16 perceptual loss, when the official VGG checkpoint is present;
* a Gaussian prior on the coefficients and a one-colour-light prior: the
  light keeps the colour stage 1 gave it (the light/skin prior's split of
  the scene's cast) and its channels share one shape.

The map this stage hands on is the model's where the model varies
(:meth:`~models.uv_albedo_model.UVAlbedoModel.support`) and continued
smoothly from there where it holds only its mean (push-pull): a model built
from photo unwraps has in its mean there the hair, background and the holes
of the features that its maps had. The continuation fades, over a band
``unseen_fade`` of the map side wide, to the skin tone of the map (its
median over the modelled texels the photo showed as skin): the face's border
ring (the hairline, the jaw, the cheeks seen at a grazing angle) is darker
than its skin, and continued as it is it painted ears, neck, scalp and the
back of the head 5-22 CIELAB units darker than the face.

Photos of one person (``batch.groups``) share one set of coefficients, each
keeping its own light.

The coefficients start from the projection of the unwrapped photo texture
onto the model (confidence-weighted least squares with the prior), which is
already close; the reference starts from zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.camera import PinholeCamera
from models.config import RenderSettings
from models.face_model import FaceModel
from models.filters import faded_fill, masked_median
from models.renderer import Renderer
from models.shading import sh_light_colour
from models.uv_albedo_model import UVAlbedoModel

from .config import AlbedoFitConfig
from .losses import lighting_monochrome_loss, photometric_loss
from .networks import OptionalNetworks, identity_loss, perceptual_loss
from .optim import minimize
from .progress import StepProgress
from .shape import fit_mask
from .structures import FaceBatch, FitState
from .unwrap import UnwrapResult, with_reliability

__all__ = ["AlbedoFitter"]


class AlbedoFitter:
    """Stage 2 for a batch of aligned faces (a :class:`~fitting.structures.Stage`).

    Args:
        face_model: the face model.
        uvapm: the UV albedo model (its layout must match the face model's).
        networks: optional identity/perceptual networks.
        config: stage settings.
        image_size: side of the aligned crops.
    """

    name = "stage2"

    def __init__(self, face_model: FaceModel, uvapm: UVAlbedoModel, networks: OptionalNetworks | None = None,
                 config: AlbedoFitConfig | None = None, image_size: int = 224):
        uvapm.check_layout(face_model)
        self.model = face_model
        self.uvapm = uvapm
        self.networks = networks or OptionalNetworks()
        self.config = config or AlbedoFitConfig()
        self.renderer = Renderer.for_face_model(face_model, PinholeCamera(face_model.camera_distance, image_size),
                                                RenderSettings(refresh_pixels=float("inf")))
        self.progress = StepProgress()
        with torch.no_grad():
            self.support = uvapm.support()

    def initial_coefficients(self, unwrapped: UnwrapResult | None, batch: int) -> torch.Tensor:
        """Projection of the unwrapped texture (or zeros: the mean albedo)."""
        device = self.uvapm.mean.device
        if unwrapped is None or not self.config.init_from_unwrap:
            return torch.zeros(batch, self.uvapm.num_coeffs, device=device)
        return self.uvapm.encode(unwrapped.texture, unwrapped.confidence, ridge=self.config.init_ridge)

    @staticmethod
    def skin_texels(support: torch.Tensor, unwrapped: UnwrapResult | None) -> torch.Tensor:
        """(B, 1, R, R) the fully modelled texels (``support`` (B, 1, R, R) at 1) that the photo showed as skin
        (unwrapping skin confidence above 0.5), or all fully modelled texels where it showed none or is unknown."""
        modelled = (support >= 1).float()
        skin = None if unwrapped is None else unwrapped.skin_confidence
        if skin is None:
            return modelled
        shown = modelled * (F.interpolate(skin, size=support.shape[-1], mode="area") > 0.5).float()
        any_shown = shown.flatten(1).amax(1)[:, None, None, None] > 0
        return torch.where(any_shown, shown, modelled)

    def __call__(self, batch: FaceBatch, state: FitState) -> FitState:
        """Fit the UVAPM coefficients and refine the lighting with the stage-1 geometry fixed; sets
        ``params.albedo``, ``params.gamma`` and the ``stage2`` albedo map (B, 3, R, R), clamped to [0, 1]."""
        cfg, model, nets = self.config, self.model, self.networks
        image, skin_mask, parse_mask, landmarks = batch.image, batch.skin_mask, batch.parse_mask, batch.landmarks
        if cfg.weight_by_reliability:  # occluders the unwrapping rejected stay out of the fit too
            parse_mask = with_reliability(parse_mask, state.unwrapped)
        p = state.params.detach()
        with torch.no_grad():
            vertices = p.posed(model).vertices
            normals = model.vertex_normals(vertices)
        self.renderer.invalidate()
        groups = batch.photo_groups  # one set of coefficients per person (G, 3K), one light per photo
        coeffs = groups.mean(self.initial_coefficients(state.unwrapped, len(batch))).detach().requires_grad_()
        gamma = p.gamma.clone().requires_grad_()
        light_colour = sh_light_colour(p.gamma)

        std_units = self.uvapm.coefficient_units == "std"

        def closure():
            albedo = self.uvapm(groups.expand(coeffs)).clamp(0, 1)
            render = self.renderer(vertices, albedo, gamma, normals=normals)
            mask = fit_mask(render.mask, skin_mask, parse_mask)
            terms = {
                "photo": cfg.w_photo * photometric_loss(render.image, image, mask),
                "prior": (cfg.w_prior if std_units else 0.0) * self.uvapm.prior(groups.expand(coeffs)),
                "gamma_mono": cfg.w_gamma_mono * lighting_monochrome_loss(gamma, light_colour),
            }
            if nets.arcface is not None or nets.vgg is not None:
                composite = render.image * render.mask.detach() + image * (1 - render.mask.detach())
                if nets.arcface is not None:
                    terms["identity"] = cfg.w_identity * identity_loss(nets.arcface, composite, image, landmarks)
                if nets.vgg is not None:
                    vgg_mask = render.mask * parse_mask
                    terms["perceptual"] = cfg.w_perceptual * perceptual_loss(nets.vgg, render.image, image,
                                                                            vgg_mask)
            return terms

        lr = cfg.lr_albedo if std_units else cfg.lr_albedo_raw
        history = minimize({"albedo": (coeffs, lr), "gamma": (gamma, cfg.lr_gamma)}, closure, cfg.optim,
                           self.progress.track(self.name, cfg.optim.steps))
        p.albedo, p.gamma = groups.expand(coeffs.detach()), gamma.detach()
        with torch.no_grad():
            decoded = self.uvapm(p.albedo).clamp(0, 1)
            support = self.support.expand(len(batch), -1, -1, -1)
            tone = masked_median(decoded, self.skin_texels(support, state.unwrapped))
            albedo_map = faded_fill(decoded, support, tone, cfg.unseen_fade)
        return state.updated(params=p, albedo_maps={self.name: albedo_map}, histories={self.name: history})
