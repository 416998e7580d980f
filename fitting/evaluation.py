"""Re-render metrics: each stage's albedo rendered with the final shape and light, against the photo.

:class:`ReRenderEvaluation` is the last stage of a fit. For every albedo map
in the state it renders the face at 224 px (and, for the texture stages, at
the detail crop's resolution), composites the render on the crop and scores
it inside the skin mask: PSNR, SSIM and high-frequency PSNR. These numbers
say how well the photo is explained, not whether the albedo is right; beside
them it reports the albedo side: the skin tone (median CIELAB colour and ITA
angle) of the final UV albedo over the texels the photo showed, and of the
photo's own skin pixels, so that a tone that is only the scene's light shows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.camera import PinholeCamera
from models.config import RenderSettings
from models.face_model import FaceModel
from models.renderer import Renderer

from .metrics import high_frequency_psnr, masked_psnr, masked_ssim, skin_tone
from .shape import fit_mask
from .structures import FaceBatch, FitState
from .unwrap import with_reliability

__all__ = ["ReRenderEvaluation"]


class ReRenderEvaluation:
    """Renders, composites and metrics of every stage's albedo (a :class:`~fitting.structures.Stage`).

    Sets ``state.renders`` (stage -> (B, 3, 224, 224) composites), ``state.render_mask`` and the metrics
    ``<stage>_psnr``, ``<stage>_ssim``, ``<stage>_high_freq_psnr`` (224 px; ``_<D>`` at the detail crop size
    for the texture stages), ``landmark_residual``, ``landmark_residual_landmark_fit``, ``unwrap_coverage``,
    ``reliable_share`` (the share of the rendered face's pixels the colour fit trusted: skin x parse masks x the
    unwrapping's pixel reliability; low when glasses, hair, hands or shadows cover the face),
    the photo's skin tone ``photo_skin_L``/``_a``/``_b``/``_ita_deg`` (skin-mask pixels of the crop) and, with
    an unwrap, the final albedo's ``albedo_skin_L``/``_a``/``_b``/``_ita_deg`` (texels whose photo pixel is
    skin, with confidence above 0.5: the unwrapping's ``skin_confidence``, which leaves brows, lips and eyelids
    out as the photo's skin mask does; its ``confidence`` where there is none).

    Args:
        face_model: the face model.
        detail_size: side D of ``batch.detail_image``.
    """

    name = "evaluate"

    def __init__(self, face_model: FaceModel, detail_size: int):
        self.model = face_model
        self.renderers = {
            size: Renderer.for_face_model(face_model, PinholeCamera(face_model.camera_distance, size),
                                          RenderSettings(refresh_pixels=0.0))
            for size in (224, detail_size)
        }

    @torch.no_grad()
    def __call__(self, batch: FaceBatch, state: FitState) -> FitState:
        maps = state.albedo_maps
        renders, metrics, render_mask = self._evaluate(batch.image, batch, state, maps, "")
        later = {k: v for k, v in maps.items() if k != "stage1"}
        if later:  # the texture stages again at the detail crop's resolution
            size = batch.detail_image.shape[-1]
            metrics.update(self._evaluate(batch.detail_image, batch, state, later, f"_{size}")[1])
        metrics["landmark_residual"] = state.landmark_residual
        metrics["landmark_residual_landmark_fit"] = state.landmark_residual_initial
        metrics.update({f"photo_skin_{k}": v for k, v in skin_tone(batch.image, batch.skin_mask).items()})
        trusted = with_reliability(batch.parse_mask, state.unwrapped)
        used = fit_mask(render_mask, batch.skin_mask, trusted).flatten(1).sum(1)
        metrics["reliable_share"] = used / render_mask.flatten(1).sum(1).clamp_min(1.0)
        if state.unwrapped is not None:
            metrics["unwrap_coverage"] = state.unwrapped.coverage
            skin = state.unwrapped.skin_confidence
            tone = skin_tone(maps[state.final_stage], state.unwrapped.confidence if skin is None else skin)
            metrics.update({f"albedo_skin_{k}": v for k, v in tone.items()})
        return state.updated(renders=renders, render_mask=render_mask, metrics=metrics)

    def _evaluate(self, image: torch.Tensor, batch: FaceBatch, state: FitState, maps: dict, suffix: str):
        size = image.shape[-1]
        resize = lambda m: F.interpolate(m, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        skin, parse = resize(batch.skin_mask), resize(batch.parse_mask)
        params = state.params
        vertices = params.posed(self.model).vertices
        normals = self.model.vertex_normals(vertices)
        renders, metrics = {}, {}
        render_mask = None
        for stage, uv in maps.items():
            out = self.renderers[size](vertices, uv, params.gamma, normals=normals)
            render_mask = out.mask
            mask = fit_mask(out.mask, skin, parse)
            rendered = out.image.clamp(0, 1)
            renders[stage] = rendered * out.mask + image * (1 - out.mask)
            metrics[f"{stage}_psnr{suffix}"] = masked_psnr(rendered, image, mask)
            metrics[f"{stage}_ssim{suffix}"] = masked_ssim(rendered, image, mask)
            metrics[f"{stage}_high_freq_psnr{suffix}"] = high_frequency_psnr(rendered, image, mask)
        return renders, metrics, render_mask
