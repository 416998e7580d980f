"""Stage 1: 3DMM shape fitting — landmarks, then photometric refinement.

1. :class:`~fitting.landmark_fit.LandmarkFitter` fits pose, identity and
   expression to the landmarks (FaceMesh's dense points where found, the 68
   sparse ones otherwise; Levenberg-Marquardt, well under a second).
2. :class:`ShapeFitter` then refines shape and pose jointly with SH lighting
   and a low-resolution UV albedo proxy against the skin-masked photo, with
   the cached renderer, keeping the landmark term and the coefficient priors.
   The proxy (``proxy_resolution`` texels a side) can only hold smooth
   colour and, with ``symmetric_proxy``, is the same on both halves of the
   face, so shading, including a left-right gradient, is explained by
   lighting and geometry.
3. With a :class:`~models.light_prior.LightSkinPrior`, the face's mean
   colour, which the shading alone cannot split between skin and light, is
   split by the prior and the whites of the eyes (:mod:`fitting.eye_probe`):
   the proxy takes the skin's share and the light the rest (the render is
   unchanged), so the unwrapping and stage 2 start from a light that
   carries the scene's colour cast (the default prior splits colour only).
4. Photos of one person (``batch.groups``, :mod:`fitting.groups`) share one
   identity: the mean of their landmark fits, refined against all of them;
   pose, expression, light and proxy stay per photo.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import torch
import torch.nn.functional as F

from models.camera import PinholeCamera
from models.face_model import FaceModel
from models.light_prior import LightSkinPrior
from models.renderer import Renderer
from models.shading import AMBIENT_SHADING, scale_light_colour, sh_ambient_offset, sh_shading
from models.surface_points import SurfacePoints
from models.uv_layout import UVLayout

from .config import ShapeFitConfig
from .eye_probe import iris_colour, sclera_colour
from .gaze import fit_gaze
from .landmark_fit import LandmarkFitter, LandmarkTargets, normalized_landmark_error
from .losses import gaussian_prior, landmark_loss, lighting_monochrome_loss, photometric_loss
from .optim import minimize
from .params import FaceParams
from .progress import StepProgress
from .structures import FaceBatch, FitState

__all__ = ["ShapeFitter", "fit_mask", "skin_colour", "normalize_light_scale"]

#: Side of the UV map the albedo proxy is rendered from.
PROXY_MAP_SIZE = 64

def normalize_light_scale(gamma: torch.Tensor, normals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fix the albedo/light scale ambiguity: rescale the light so that the mean shading over the visible face,
    weighted by how directly each point faces the camera, is 1 (mean over RGB).

    Albedo times shading is unchanged when the light is divided by ``s`` and
    the albedo multiplied by it. With this ``s`` an albedo is the face's
    colour under its own lighting with the light's average over the visible
    face normalised away, so the albedo's brightness is the photo's, whether
    the light is frontal or comes from the side (a convention based on one
    direction would make side-lit albedos several times too dark).

    Args:
        gamma: (B, 27) SH lighting (without the ambient offset).
        normals: (B, V, 3) world-space vertex normals of the face region.

    Returns:
        The rescaled lighting (B, 27) and the albedo factor ``s`` (B,).
    """
    weight = normals[..., 2].clamp_min(0)  # facing the camera (+z)
    shading = sh_shading(normals, gamma).mean(-1)  # (B, V)
    scale = ((shading * weight).sum(1) / weight.sum(1).clamp_min(1e-6)).clamp_min(1e-3)
    offset = sh_ambient_offset(gamma.dtype, gamma.device)
    return (gamma + offset) / scale[:, None] - offset, scale


def fit_mask(render_mask: torch.Tensor, skin_mask: torch.Tensor, parse_mask: torch.Tensor | None) -> torch.Tensor:
    """Pixels the colour losses use: rendered x skin (x parse), (B, 1, H, W)."""
    mask = render_mask * skin_mask
    return mask * parse_mask if parse_mask is not None else mask


def skin_colour(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Median colour of the masked pixels, (B, 3) (grey 0.5 where the mask is empty)."""
    out = []
    for img, m in zip(image, mask):
        pixels = img[:, m[0] > 0.5]
        out.append(pixels.median(1).values if pixels.shape[1] else img.new_full((3,), 0.5))
    return torch.stack(out)


class ShapeFitter:
    """Stage 1 for a batch of aligned 224x224 faces (a :class:`~fitting.structures.Stage`).

    Args:
        face_model: the face model.
        config: stage settings.
        initialiser: optional ``image (B, 3, 224, 224) -> FaceParams`` giving the
            landmark fit its start (the Deep3D regressor for HiFi3D++ and BFM).
        dense_points: where the dense landmarks lie on the surface (None: sparse landmarks only).
        light_prior: splits the face's mean colour between skin and light (None: all of it is skin).
        image_size: side of the aligned crops (224 for the reference camera).
    """

    name = "stage1"

    def __init__(self, face_model: FaceModel, config: ShapeFitConfig | None = None,
                 initialiser: Callable[[torch.Tensor], FaceParams] | None = None,
                 dense_points: SurfacePoints | None = None, light_prior: LightSkinPrior | None = None,
                 image_size: int = 224):
        self.model = face_model
        self.config = config or ShapeFitConfig()
        self.initialiser = initialiser
        self.light_prior = light_prior
        self.camera = PinholeCamera(face_model.camera_distance, image_size)
        self.landmark_fitter = LandmarkFitter(face_model, self.camera, self.config.landmarks, dense_points)
        self.renderer = Renderer.for_face_model(face_model, self.camera, self.config.render)
        device = face_model.mean_shape.device
        self.proxy_layout = UVLayout(face_model.cpu(), PROXY_MAP_SIZE).to(device)
        face_model.to(device)
        self.progress = StepProgress()

    def proxy_map(self, proxy: torch.Tensor) -> torch.Tensor:
        """The albedo proxy (B, 3, P, P) as a (B, 3, 64, 64) UV map, averaged with its mirror image when
        ``symmetric_proxy`` is on."""
        albedo = F.interpolate(proxy, size=PROXY_MAP_SIZE, mode="bilinear", align_corners=False)
        if not self.config.refine.symmetric_proxy:
            return albedo
        return 0.5 * (albedo + self.proxy_layout.mirrored(albedo))

    def face_colour(self, proxy: torch.Tensor) -> torch.Tensor:
        """Mean colour (B, 3) of the albedo proxy (B, 3, P, P) over the face model's UV layout."""
        mask = self.proxy_layout.mask
        return (self.proxy_map(proxy) * mask).flatten(2).sum(-1) / mask.sum().clamp_min(1.0)

    def __call__(self, batch: FaceBatch, state: FitState) -> FitState:
        """Fit pose, identity, expression and lighting; sets ``params``, the fitted landmarks and their
        errors, the ``stage1`` albedo proxy, the face, sclera, iris and light colour metrics and the loss history."""
        image, landmarks = batch.image, batch.landmarks
        init = self.initialiser(image) if self.initialiser is not None else None
        targets = LandmarkTargets.from_batch(batch)
        params, log = self.landmark_fitter.fit(targets, init)
        groups = batch.photo_groups
        if not groups.trivial:  # one identity per person: the mean of its photos' landmark fits, refined jointly
            params.identity = groups.expand(groups.mean(params.identity))
        cfg = self.config.refine
        B = image.shape[0]
        proxy = skin_colour(image, batch.skin_mask)[:, :, None, None] / AMBIENT_SHADING  # undo the ambient shading
        proxy = proxy.expand(B, 3, cfg.proxy_resolution, cfg.proxy_resolution).clone()
        history: list = []
        if cfg.optim.steps > 0:
            params, proxy, history = self._refine(params, proxy, batch, targets, log)
        with torch.no_grad():
            normals = self.model.vertex_normals(params.posed(self.model).vertices)[:, self.model.face_vertex_mask]
        params.gamma, scale = normalize_light_scale(params.gamma, normals)
        proxy = proxy * scale[:, None, None, None]
        colour = self.face_colour(proxy)
        sclera, sclera_observed = sclera_colour(batch.detail_image, batch.dense_landmarks, batch.dense_valid,
                                                batch.image.shape[-1])
        iris, iris_observed = iris_colour(batch.detail_image, batch.dense_landmarks, batch.dense_valid,
                                          batch.image.shape[-1])
        light = torch.ones_like(colour)
        if self.light_prior is not None:
            skin, light = self.light_prior.split(colour, sclera, sclera_observed)
            proxy = proxy * (skin / colour.clamp_min(1e-6))[:, :, None, None]
            params.gamma = scale_light_colour(params.gamma, light)
        metrics = {f"{name}_{c}": values[:, i] for name, values in (
            ("face_colour", colour), ("sclera", sclera), ("iris", iris), ("light_gain", light))
            for i, c in enumerate("rgb")}
        metrics["sclera_observed"] = sclera_observed.float()
        metrics["iris_observed"] = iris_observed.float()
        fitter = self.landmark_fitter
        fitted = fitter.project(params, fitter.select_contour(params))
        params.gaze = fit_gaze(self.model, params, fitter.camera, batch.dense_landmarks, batch.dense_valid,
                               iris_observed, landmarks, fitted)
        return state.updated(
            params=params,
            landmarks=fitted,
            landmarks_fixed=fitter.project(params, self.model.landmark_indices.expand(B, -1)),
            landmark_residual=normalized_landmark_error(fitted, landmarks),
            landmark_residual_initial=log["error"],
            albedo_maps={self.name: self.proxy_map(proxy)},
            metrics=metrics,
            histories={self.name: history},
        )

    def _refine(self, params: FaceParams, proxy: torch.Tensor, batch: FaceBatch, targets: LandmarkTargets,
                log: dict):
        cfg = self.config.refine
        model = self.model
        image, skin_mask, parse_mask = batch.image, batch.skin_mask, batch.parse_mask
        fitter = self.landmark_fitter
        corners, bary = fitter.definition(log["index"])
        landmarks, weights = fitter.all_targets(targets), log["weights"].detach()
        rows = torch.arange(image.shape[0], device=image.device)[:, None, None]
        p = params.detach()
        groups = batch.photo_groups
        identity = groups.mean(p.identity)  # (G, Ki): shared by a person's photos
        tensors = {
            "identity": (identity.requires_grad_(), cfg.lr_identity),
            "expression": (p.expression.requires_grad_(), cfg.lr_expression),
            "angles": (p.angles.requires_grad_(), cfg.lr_angles),
            "translation": (p.translation.requires_grad_(), cfg.lr_translation_m / model.metres_per_unit),
            "gamma": (p.gamma.requires_grad_(), cfg.lr_gamma),
            "proxy": (proxy.requires_grad_(), cfg.lr_proxy),
        }
        size = self.camera.image_size
        lower, upper = model.exp_bounds

        def closure():
            p.identity = groups.expand(identity)
            out = replace(p, expression=p.expression.clamp(lower, upper)).posed(model)
            normals = model.vertex_normals(out.vertices)
            render = self.renderer(out.vertices, self.proxy_map(proxy), p.gamma, normals=normals)
            mask = fit_mask(render.mask, skin_mask, parse_mask)
            lmk = self.camera.project((out.vertices[rows, corners] * bary[..., None]).sum(2))
            return {
                "photo": cfg.w_photo * photometric_loss(render.image, image, mask),
                "landmark": cfg.w_landmark * landmark_loss(lmk, landmarks, weights, size),
                "identity": cfg.w_identity * gaussian_prior(p.identity),
                "expression": cfg.w_expression * gaussian_prior(p.expression),
                "gamma_mono": cfg.w_gamma_mono * lighting_monochrome_loss(p.gamma),
            }

        history = minimize(tensors, closure, cfg.optim, self.progress.track(self.name, cfg.optim.steps))
        with torch.no_grad():
            p.expression.clamp_(lower, upper)
            p.identity = groups.expand(identity)
        return p.detach(), proxy.detach(), history
