"""Texture unwrapping: photo + fitted shape -> de-lit UV texture with confidence.

For every texel of the face model's UV layout, :func:`unwrap_texture` finds
its 3D point on the fitted mesh, projects it into the photo, samples the
colour, divides by the fitted SH shading (a pseudo-albedo), and scores how
much to trust it:

    confidence = visible (z-buffer) x facing ramp x face mask x inside the image

where the facing ramp goes from 0 at a grazing angle (cos = ``facing_min``)
to 1 at ``facing_full`` and the face mask is the crop's parse mask (brows,
nose and lips in; eyes, inner mouth, hair, glasses and background out: the
features belong in an albedo map) or, with ``mask: skin``, its skin mask.
Pixels much darker or brighter than the median of the face around them
(:func:`outlier_reliability`: glasses frames, hair strands, specular
highlights, which are thinner than the window while brows, lips and
nostrils are wider) lose their confidence too, and that per-pixel
reliability is kept (``UnwrapResult.pixel_reliability``) so that the colour
fits of stages 2 and 3 leave the same pixels out. Unseen texels are then
filled by mirroring across the face's symmetry where the other side was
seen, and the rest by a smooth push-pull inpainting; the raw texture and
its confidence are kept beside the filled texture. This is
how UV albedo datasets are built from photo folders (FFHQ-UV's step 4 does
the same from three synthetic views).

Several photos of one person (``batch.groups``) give one texture
(:func:`fuse_unwrapped`): each photo's brought to the person's colour, then
averaged by confidence before the mirroring and inpainting, so what one photo
hides another fills, and each photo's light takes its colour difference.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from models.camera import PinholeCamera
from models.config import RenderSettings
from models.face_model import FaceModel
from models.filters import push_pull_fill
from models.renderer import Renderer
from models.shading import scale_light_colour, sh_shading
from models.uv_layout import UVLayout
from utils.config import ConfigError

from .config import UnwrapConfig
from .glasses import detect_glasses
from .groups import PhotoGroups
from .params import FaceParams
from .structures import FaceBatch, FitState

__all__ = ["UNWRAP_MASKS", "UnwrapResult", "Unwrapper", "unwrap_texture", "completed", "fuse_unwrapped",
           "sample_image", "outlier_reliability", "with_reliability"]

#: Values of :attr:`~fitting.config.UnwrapConfig.mask`.
UNWRAP_MASKS = ("parse", "skin")


@dataclass
class UnwrapResult:
    """Unwrapped textures of a batch.

    Attributes:
        texture: (B, 3, R, R) de-lit colour where seen (zero elsewhere).
        confidence: (B, 1, R, R) trust in each texel of ``texture``, in [0, 1].
        filled: (B, 3, R, R) ``texture`` completed by mirroring and inpainting.
        filled_confidence: (B, 1, R, R) confidence after mirroring (inpainted texels are 0).
        coverage: (B,) mean confidence over the layout's texels.
        pixel_reliability: (B, 1, S, S) trust in each pixel of the photo crop it was unwrapped from
            (:func:`outlier_reliability`: 0 on glasses frames, hair strands, highlights); the colour fits of
            stages 2 and 3 weight their pixels by it. None: every pixel trusted.
        skin_confidence: (B, 1, R, R) ``confidence`` with the crop's skin mask in place of the given mask
            (brows, lips, eyelids and nostrils out): which texels show skin, for measuring the albedo's skin
            tone like the photo's (fused like ``confidence`` for several photos of one person); None when no skin
            mask was given.
    """

    texture: torch.Tensor
    confidence: torch.Tensor
    filled: torch.Tensor
    filled_confidence: torch.Tensor
    coverage: torch.Tensor
    pixel_reliability: torch.Tensor | None = None
    skin_confidence: torch.Tensor | None = None

    def reliability_at(self, size: int) -> torch.Tensor | None:
        """``pixel_reliability`` resized to (B, 1, size, size) (area-averaged when smaller), or None."""
        rel = self.pixel_reliability
        if rel is None or rel.shape[-1] == size:
            return rel
        mode = "area" if size < rel.shape[-1] else "bilinear"
        return F.interpolate(rel, size=size, mode=mode, **({} if mode == "area" else {"align_corners": False}))


def with_reliability(parse_mask: torch.Tensor, unwrapped: UnwrapResult | None) -> torch.Tensor:
    """``parse_mask`` (B, 1, S, S) times the unwrapping's pixel reliability at size S (unchanged without one):
    the pixels a colour fit may trust."""
    reliability = None if unwrapped is None else unwrapped.reliability_at(parse_mask.shape[-1])
    return parse_mask if reliability is None else parse_mask * reliability


def sample_image(image: torch.Tensor, pixels: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """Sample an image at pixel positions.

    Args:
        image: (B, C, H, W).
        pixels: (B, h, w, 2) positions in pixels (x right, y down, centres at +0.5).

    Returns:
        (B, C, h, w); zero outside the image.
    """
    H, W = image.shape[-2:]
    grid = torch.stack([2.0 * pixels[..., 0] / W - 1.0, 2.0 * pixels[..., 1] / H - 1.0], -1)
    return F.grid_sample(image, grid, mode=mode, padding_mode="zeros", align_corners=False)


#: Added to luminance and median before their ratio, so that near-black texels (deep shadow, quantisation) are
#: not judged by noise.
RATIO_FLOOR = 0.03


def _ramp(x: torch.Tensor, zero: float, one: float) -> torch.Tensor:
    """0 at ``zero``, 1 at ``one`` (either order), linear between, clamped."""
    return ((x - zero) / (one - zero)).clamp(0, 1)


def outlier_reliability(image: torch.Tensor, weight: torch.Tensor, config: UnwrapConfig) -> torch.Tensor:
    """Trust (B, 1, S, S) in [0, 1] of each pixel of an aligned crop against its neighbourhood: how far its
    luminance is from the median of the face's pixels around it.

    The median over a window of ``config.outlier_window`` pixels (in the 512-px crop; scaled with its size)
    ignores structures thinner than half the window (glasses frames, hair strands, highlights) and follows
    wider ones (brows, lips, nostrils, beard) and the shading, which varies slowly. Trust falls from 1 to 0 as
    the ratio luminance / median (each plus :data:`RATIO_FLOOR`) falls from ``outlier_dark[1]`` to
    ``outlier_dark[0]``, or rises from ``outlier_bright[0]`` to ``outlier_bright[1]``, and the rejected
    pixels' neighbours within a fifth of the window (anti-aliased edges, a frame's shadow) are rejected with
    them. Working in the crop, where every face has the same size, keeps the window the same share of the face
    everywhere (UV space stretches it).

    Args:
        image: (B, 3, S, S) the aligned crop.
        weight: (B, 1, s, s) the face's pixels (any size; the rest is filled from them before the median).
        config: the window and the ratio ramps.
    """
    import cv2
    import numpy as np

    S = image.shape[-1]
    window = int(round(config.outlier_window * S / 512)) | 1
    if config.outlier_window <= 0 or window < 3:
        return torch.ones_like(image[:, :1])
    face = F.interpolate(weight.float(), size=S, mode="bilinear", align_corners=False) > 0.5
    luminance = image.mean(1, keepdim=True)
    filled = push_pull_fill(luminance, face.float())  # the background takes the face's surroundings
    as_bytes = (filled.clamp(0, 1) * 255 + 0.5).to(torch.uint8).cpu().numpy()
    median = np.stack([cv2.medianBlur(as_bytes[b, 0], min(window, 255))[None] for b in range(len(as_bytes))])
    reference = torch.from_numpy(median).to(image).div(255.0)
    ratio = (filled + RATIO_FLOOR) / (reference + RATIO_FLOOR)
    dark_zero, dark_one = config.outlier_dark
    bright_one, bright_zero = config.outlier_bright
    trust = _ramp(ratio, dark_zero, dark_one) * _ramp(ratio, bright_zero, bright_one)
    margin = max(1, window // 5)
    return -F.max_pool2d(-trust, 2 * margin + 1, stride=1, padding=margin)


def unwrap_texture(
    face_model: FaceModel,
    params: FaceParams,
    image: torch.Tensor,
    mask: torch.Tensor | None,
    layout: UVLayout,
    config: UnwrapConfig | None = None,
    occluders: torch.Tensor | None = None,
    skin_mask: torch.Tensor | None = None,
) -> UnwrapResult:
    """Unwrap a batch of photos into the face model's UV layout.

    Args:
        face_model: the face model.
        params: fitted parameters (shape, pose and lighting).
        image: (B, 3, S, S) the aligned photo at any size S (the same view as
            the 224 crop, e.g. re-warped from the original at 512 for detail).
        mask: (B, 1, s, s) mask of the crop's pixels that may enter the texture (any size), or None.
        layout: the UV layout at the output resolution.
        config: thresholds.
        occluders: (B, 1, S, S) pixels known not to be skin (1: glasses frames, :mod:`fitting.glasses`), left
            out with the outliers; None for none.
        skin_mask: (B, 1, s, s) the crop's skin mask (any size), for ``skin_confidence``; None for none.
    """
    cfg = config or UnwrapConfig()
    B, S = image.shape[0], image.shape[-1]
    camera = PinholeCamera(face_model.camera_distance, S)
    with torch.no_grad():
        out = params.posed(face_model)
        normals = face_model.vertex_normals(out.vertices)
        positions = layout.to_uv(out.vertices)  # (B, 3, R, R)
        texel_normals = F.normalize(layout.to_uv(normals), dim=1, eps=1e-12)
        R = layout.resolution
        points = positions.permute(0, 2, 3, 1).reshape(B, R * R, 3)
        pixels = camera.project(points).view(B, R, R, 2)
        depth = camera.depth(points).view(B, 1, R, R)

        render = Renderer.for_face_model(face_model, camera, RenderSettings(refresh_pixels=0.0))(
            out.vertices, vertex_colors=torch.zeros_like(out.vertices), normals=normals
        )
        surface_depth = torch.where(render.mask > 0, render.depth, torch.full_like(render.depth, float("inf")))
        seen_depth = sample_image(surface_depth.nan_to_num(posinf=1e9), pixels, mode="nearest")
        tolerance = cfg.depth_tolerance_m / face_model.metres_per_unit
        visible = (depth <= seen_depth + tolerance).float()

        to_camera = F.normalize(torch.tensor([0.0, 0.0, camera.distance]).to(positions)[None, :, None, None]
                                - positions, dim=1)
        facing = (texel_normals * to_camera).sum(1, keepdim=True)
        facing_weight = ((facing - cfg.facing_min) / (cfg.facing_full - cfg.facing_min)).clamp(0, 1)
        inside = ((pixels >= 0) & (pixels <= S)).all(-1)[:, None].float()
        allowed = sample_image(mask, pixels * (mask.shape[-1] / S)) if mask is not None else 1.0
        reliability = None
        if mask is not None:
            reliability = outlier_reliability(image, mask, cfg)
        if occluders is not None:
            reliability = (1.0 - occluders) * (1.0 if reliability is None else reliability)
        trusted = sample_image(reliability, pixels) if reliability is not None else 1.0
        seen = layout.mask * visible * facing_weight * inside * trusted
        confidence = seen * allowed
        skin = None if skin_mask is None else seen * sample_image(skin_mask, pixels * (skin_mask.shape[-1] / S))

        colour = sample_image(image, pixels)
        flat_normals = texel_normals.permute(0, 2, 3, 1).reshape(B, R * R, 3)
        shading = sh_shading(flat_normals, params.gamma).view(B, R, R, 3).permute(0, 3, 1, 2)
        texture = (colour / shading.clamp_min(cfg.min_shading)).clamp(0, 1) * (confidence > 0)
    return replace(completed(texture, confidence, layout, cfg), pixel_reliability=reliability, skin_confidence=skin)


def completed(texture: torch.Tensor, confidence: torch.Tensor, layout: UVLayout,
              config: UnwrapConfig | None = None) -> UnwrapResult:
    """A seen texture (B, 3, R, R) and its confidence (B, 1, R, R) completed: mirrored across the face's
    symmetry where the other side was seen (weight ``mirror_weight``), push-pull inpainted elsewhere."""
    cfg = config or UnwrapConfig()
    with torch.no_grad():
        mirror_texture, mirror_conf = layout.mirrored(texture), layout.mirrored(confidence) * cfg.mirror_weight
        weight = confidence + (1 - confidence) * mirror_conf
        blended = (confidence * texture + (1 - confidence) * mirror_conf * mirror_texture) / weight.clamp_min(1e-6)
        filled = push_pull_fill(blended, weight.clamp(0, 1))
        coverage = (confidence * layout.mask).flatten(1).sum(1) / layout.mask.sum()
    return UnwrapResult(texture, confidence, filled, weight * layout.mask, coverage)


def fuse_unwrapped(unwrapped: UnwrapResult, groups: PhotoGroups, layout: UVLayout,
                   config: UnwrapConfig | None = None) -> tuple[UnwrapResult, torch.Tensor]:
    """One texture per person from the unwrapped textures of its photos, each photo's row taking it.

    Each photo's de-lit texture is first brought to the person's colour (one gain per channel: its
    confidence-weighted mean colour over the person's, what differs between photos being their lights), then
    the textures are averaged by confidence; a texel's fused confidence is ``1 - prod(1 - c_i)`` (seen by any
    photo), and the result is completed as one photo's (:func:`completed`).

    Returns:
        The fused result (B rows, equal within a person) and the gains (B, 3) applied to each photo's texture
        (its light is to be divided by them to render the photo unchanged).
    """
    texture, confidence = unwrapped.texture, unwrapped.confidence
    seen_colour = (confidence * texture).flatten(2).sum(2) / confidence.flatten(2).sum(2).clamp_min(1e-6)  # (B, 3)
    seen_amount = confidence.flatten(1).sum(1)
    gain = groups.expand(groups.mean(seen_colour, seen_amount)) / seen_colour.clamp_min(1e-6)
    balanced = (texture * gain[:, :, None, None]).clamp(0, 1)
    fused_texture = groups.mean(confidence * balanced) / groups.mean(confidence).clamp_min(1e-6)
    fused_confidence = torch.stack([1 - (1 - confidence[groups.members(g)]).prod(0)
                                    for g in range(groups.num_groups)])
    fused = completed(fused_texture * (fused_confidence > 0), fused_confidence, layout, config)
    skin = unwrapped.skin_confidence
    if skin is not None:  # shown as skin by any photo, like the confidence
        skin = groups.expand(torch.stack([1 - (1 - skin[groups.members(g)]).prod(0)
                                          for g in range(groups.num_groups)]))
    rows = UnwrapResult(*(groups.expand(t) for t in (fused.texture, fused.confidence, fused.filled,
                                                     fused.filled_confidence, fused.coverage)),
                        pixel_reliability=unwrapped.pixel_reliability,  # each photo's own
                        skin_confidence=skin)
    return rows, gain


class Unwrapper:
    """Unwrapping as a pipeline stage (:class:`~fitting.structures.Stage`): the batch's detail-resolution
    photo (``batch.detail_image``) unwrapped with the stage-1 shape and light into ``state.unwrapped``, gated by
    the batch's parse or skin mask (``config.mask``) and with glasses frames left out (:mod:`fitting.glasses`;
    ``glasses_score`` and ``glasses_detected`` go to the metrics).

    Args:
        face_model: the face model.
        config: thresholds and the UV resolution.
    """

    name = "unwrap"

    def __init__(self, face_model: FaceModel, config: UnwrapConfig | None = None):
        self.model = face_model
        self.config = config or UnwrapConfig()
        if self.config.mask not in UNWRAP_MASKS:
            raise ConfigError(f"unwrap.mask: {self.config.mask!r} is not one of {', '.join(UNWRAP_MASKS)}")
        for key in ("outlier_dark", "outlier_bright"):
            pair = getattr(self.config, key)
            if len(pair) != 2 or not (0 < pair[0] < pair[1]):
                raise ConfigError(f"unwrap.{key}: expected two increasing positive ratios, got {pair}")
        device = face_model.mean_shape.device
        self.layout = UVLayout(face_model.cpu(), self.config.resolution).to(device)
        face_model.to(device)

    def __call__(self, batch: FaceBatch, state: FitState) -> FitState:
        mask = batch.parse_mask if self.config.mask == "parse" else batch.skin_mask
        glasses = detect_glasses(batch.detail_image, batch.dense_landmarks, batch.dense_valid, batch.image.shape[-1],
                                 self.config.glasses)
        unwrapped = unwrap_texture(self.model, state.params, batch.detail_image, mask, self.layout, self.config,
                                   occluders=glasses.mask, skin_mask=batch.skin_mask)
        metrics = {"glasses_score": glasses.score, "glasses_detected": glasses.present.float()}
        groups = batch.photo_groups
        if groups.trivial:
            return state.updated(unwrapped=unwrapped, metrics=metrics)
        unwrapped, gain = fuse_unwrapped(unwrapped, groups, self.layout, self.config)
        params = replace(state.params, gamma=scale_light_colour(state.params.gamma, 1.0 / gain))
        return state.updated(unwrapped=unwrapped, params=params, metrics=metrics)
