"""Stage 1: 3DMM shape fitting — landmarks, then photometric refinement.

1. :class:`~fitting.landmark_fit.LandmarkFitter` fits pose, identity and
   expression to the 68 landmarks (Levenberg-Marquardt, well under a second).
2. :class:`ShapeFitter` then refines shape and pose jointly with SH lighting
   and a low-resolution UV albedo proxy against the skin-masked photo, with
   the cached renderer, keeping the landmark term and the coefficient priors.
   The proxy (``proxy_resolution`` texels a side) can only hold smooth
   colour, so shading is explained by lighting and geometry.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from models.camera import PinholeCamera
from models.face_model import FaceModel
from models.renderer import Renderer, RenderSettings
from models.shading import AMBIENT_OFFSET, sh_shading

from .landmark_fit import LandmarkFitConfig, LandmarkFitter, landmark_weights, normalized_landmark_error
from .losses import gaussian_prior, landmark_loss, lighting_monochrome_loss, photometric_loss
from .optim import OptimConfig, minimize
from .params import FaceParams

__all__ = ["PhotometricShapeConfig", "ShapeFitConfig", "ShapeFitter", "ShapeFitResult", "fit_mask", "skin_colour",
           "normalize_light_scale"]

logger = logging.getLogger("uvapm.fitting.shape")


@dataclass
class PhotometricShapeConfig:
    """Photometric refinement of shape, pose and lighting.

    Attributes:
        optim: steps and schedule.
        lr_identity, lr_expression, lr_angles, lr_gamma, lr_proxy: Adam learning rates
            (coefficient units, radians, SH units, albedo units).
        lr_translation_m: translation learning rate in metres (converted to model units).
        proxy_resolution: side of the UV albedo proxy.
        w_photo, w_landmark, w_identity, w_expression, w_gamma_mono: loss weights. The
            landmark term is the weighted mean squared distance in units of the image size.
    """

    optim: OptimConfig = field(default_factory=lambda: OptimConfig(steps=60, rampdown=0.3))
    lr_identity: float = 0.03
    lr_expression: float = 0.01
    lr_angles: float = 0.003
    lr_translation_m: float = 0.0005
    lr_gamma: float = 0.01
    lr_proxy: float = 0.02
    proxy_resolution: int = 8
    w_photo: float = 1.0
    w_landmark: float = 200.0
    w_identity: float = 2e-4
    w_expression: float = 1e-3
    w_gamma_mono: float = 1.0


@dataclass
class ShapeFitConfig:
    """Stage-1 settings: the landmark fit, then the photometric refinement (``refine.optim.steps = 0`` skips it)."""

    landmarks: LandmarkFitConfig = field(default_factory=LandmarkFitConfig)
    refine: PhotometricShapeConfig = field(default_factory=PhotometricShapeConfig)
    render: RenderSettings = field(default_factory=RenderSettings)


@dataclass
class ShapeFitResult:
    """Stage-1 result for a batch.

    Attributes:
        params: fitted parameters (identity, expression, pose, lighting).
        landmarks: (B, 68, 2) fitted landmark positions (jaw on the silhouette).
        landmark_error: (B,) normalised landmark error (by the outer-eye-corner distance).
        landmark_error_initial: (B,) the same after the landmark fit alone.
        albedo_proxy: (B, 3, r, r) the low-resolution UV albedo of the refinement.
        history: per-step loss terms of the refinement.
    """

    params: FaceParams
    landmarks: torch.Tensor
    landmark_error: torch.Tensor
    landmark_error_initial: torch.Tensor
    albedo_proxy: torch.Tensor
    history: list


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
    offset = torch.zeros(27, dtype=gamma.dtype, device=gamma.device)
    offset[::9] = AMBIENT_OFFSET
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
    """Stage 1 for a batch of aligned 224x224 faces.

    Args:
        face_model: the face model.
        config: stage settings.
        image_size: side of the aligned crops (224 for the reference camera).
    """

    def __init__(self, face_model: FaceModel, config: ShapeFitConfig | None = None, image_size: int = 224):
        self.model = face_model
        self.config = config or ShapeFitConfig()
        self.camera = PinholeCamera(face_model.camera_distance, image_size)
        self.landmark_fitter = LandmarkFitter(face_model, self.camera, self.config.landmarks)
        self.renderer = Renderer.for_face_model(face_model, self.camera, self.config.render)

    def fit(
        self,
        image: torch.Tensor,
        landmarks: torch.Tensor,
        skin_mask: torch.Tensor,
        parse_mask: torch.Tensor | None = None,
        init: FaceParams | None = None,
    ) -> ShapeFitResult:
        """Fit a batch.

        Args:
            image: (B, 3, S, S) aligned photos in [0, 1].
            landmarks: (B, 68, 2) detected landmarks in crop pixels.
            skin_mask, parse_mask: (B, 1, S, S) masks in [0, 1].
            init: optional starting parameters (e.g. from a regressor).
        """
        params, log = self.landmark_fitter.fit(landmarks, init)
        initial_error = log["error"]
        cfg = self.config.refine
        B = image.shape[0]
        proxy = skin_colour(image, skin_mask)[:, :, None, None] / 0.709  # undo the ambient shading
        proxy = proxy.expand(B, 3, cfg.proxy_resolution, cfg.proxy_resolution).clone()
        history: list = []
        if cfg.optim.steps > 0:
            params, proxy, history = self._refine(params, proxy, image, landmarks, skin_mask, parse_mask,
                                                  log["index"])
        with torch.no_grad():
            vertices = self.model(params.identity, params.expression, params.rotation, params.translation).vertices
            normals = self.model.vertex_normals(vertices)[:, self.model.face_vertex_mask]
        params.gamma, scale = normalize_light_scale(params.gamma, normals)
        proxy = proxy * scale[:, None, None, None]
        index = self.landmark_fitter._select_contour(
            torch.cat([params.angles, params.translation, params.identity, params.expression], 1)
        )
        fitted = self.landmark_fitter._project(params, index)
        return ShapeFitResult(
            params=params,
            landmarks=fitted,
            landmark_error=normalized_landmark_error(fitted, landmarks),
            landmark_error_initial=initial_error,
            albedo_proxy=proxy,
            history=history,
        )

    def _refine(self, params, proxy, image, landmarks, skin_mask, parse_mask, index):
        cfg = self.config.refine
        model = self.model
        p = params.detach()
        tensors = {
            "identity": (p.identity.requires_grad_(), cfg.lr_identity),
            "expression": (p.expression.requires_grad_(), cfg.lr_expression),
            "angles": (p.angles.requires_grad_(), cfg.lr_angles),
            "translation": (p.translation.requires_grad_(), cfg.lr_translation_m / model.metres_per_unit),
            "gamma": (p.gamma.requires_grad_(), cfg.lr_gamma),
            "proxy": (proxy.requires_grad_(), cfg.lr_proxy),
        }
        weights = landmark_weights(self.config.landmarks.weights).to(image.device)
        size = self.camera.image_size
        lower, upper = model.exp_bounds

        def closure():
            out = model(p.identity, p.expression.clamp(lower, upper), p.rotation, p.translation)
            albedo = F.interpolate(proxy, size=64, mode="bilinear", align_corners=False)
            render = self.renderer(out.vertices, albedo, p.gamma, normals=model.vertex_normals(out.vertices))
            mask = fit_mask(render.mask, skin_mask, parse_mask)
            lmk = self.camera.project(torch.gather(out.vertices, 1, index[..., None].expand(-1, -1, 3)))
            return {
                "photo": cfg.w_photo * photometric_loss(render.image, image, mask),
                "landmark": cfg.w_landmark * landmark_loss(lmk, landmarks, weights, size),
                "identity": cfg.w_identity * gaussian_prior(p.identity),
                "expression": cfg.w_expression * gaussian_prior(p.expression),
                "gamma_mono": cfg.w_gamma_mono * lighting_monochrome_loss(p.gamma),
            }

        history = minimize(tensors, closure, cfg.optim)
        with torch.no_grad():
            p.expression.clamp_(lower, upper)
        return p.detach(), proxy.detach(), history
