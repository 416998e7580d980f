"""Synthetic faces with known truth, fitted by the real pipeline.

Each face is rendered with the reference camera into a 512x512 "photo"
(:func:`testing.synthetic.make_synthetic_faces`): identity and expression
from the ICT prior, a head pose, SH lighting (a random coloured part, sigma
0.05 on each of the 27 coefficients at every level, plus one white
directional light), a known UV albedo, composited on a random
crop of a real photo (``--backgrounds``, default the shared group photos),
with Gaussian sensor noise and JPEG compression. The whole head is rendered
(the face region textured, the rest of the head with the map continued over it)
with stand-in eyes in the eye openings (:func:`testing.synthetic.draw_eyes`:
pale whites and a brown iris under the same light; the face model has no
eyeballs).
The pipeline sees only that photo: it goes through the real preprocessing
(detection, FaceMesh's dense points or dlib's 68 where FaceMesh finds no
face, alignment and the default masks), exactly like a photo; a face the
detectors miss is counted as a failure (``faces`` is detected / rendered).

Difficulties (``--difficulty``):

======  =========  ===========  ===================  ===========  ====
level   yaw        pitch        directional light    pixel noise  JPEG
======  =========  ===========  ===================  ===========  ====
easy    +-15 deg   +-10 deg     0.08 per axis        sigma 0.005  95
medium  +-30 deg   +-15 deg     0.16 per axis        sigma 0.01   85
hard    +-45 deg   +-20 deg     0.28 per axis        sigma 0.02   70
======  =========  ===========  ===================  ===========  ====

(uniform poses; the light's SH direction is Gaussian with that standard
deviation per axis; against the 0.71 ambient, 0.28 puts the far side of the
face in near darkness; noise in [0, 1] units.)

Albedo truth: by default the full unwrapped textures (features included:
:func:`testing.textures.photo_albedo_truths`) of photos of the default
models' test split (``scripts/default_models/data.split_names``: photos
that built neither model), ``--textures`` of them, each scored only where
its photo showed the face (what else such a texture holds is the photo's
hair, background or inpainting, which no albedo should reproduce); or the
maps of ``--albedo_dir``; or with ``--albedo_dir uvapm``, maps sampled from
the UVAPM's prior (inside the model and without features or detail).

Scores (the functions below take truth and estimate and can be called
directly), in UV at the true map's resolution:

* **albedo PSNR / SSIM on visible texels**: texels the photo shows (the
  unwrapping confidence of the *true* geometry > 0.5: not hidden in the
  z-buffer and facing the camera at cos > 0.375) after one least-squares gain
  per colour channel (albedo and light intensity trade off freely) and
  clamping to [0, 1];
* **albedo PSNR on unseen texels**: face texels with zero confidence (hidden
  or grazing), with the same gain;
* **albedo gain**: that gain, averaged over the channels: how far the
  estimate's brightness is from the truth's (1 is right; the scores above
  forgive it);
* **vertex error**: mean distance over the face region after rigid
  alignment, in mm;
* **registration error**: how far the fitted surface lies from the true one
  *in the image*, what the unwrapping inherits: the median 224-crop distance
  between the fitted and the true projection of the camera-facing face
  vertices, over the outer-eye-corner distance;
* **landmark error**: the fitted 68 landmarks (jaw on the silhouette)
  against the true ones, divided by the true outer-eye-corner distance (the
  detected landmarks' own error is listed beside it);
* **lighting error**: mean absolute difference between the fitted and true
  SH shading over camera-facing unit normals, the fitted shading divided by
  the albedo gain, relative to the mean true shading.

Methods compared in the same run: the UVAPM mean albedo (with the mean face
shape for the vertex error), the unwrapped photo texture (stage 1 geometry
and light, mirrored and inpainted where unseen), stage 2 (the coarse UVAPM
albedo, before stage 3) and stage 3 (the full pipeline). Two bounds beside
them (:data:`INSTRUMENTS`, albedo scores only): the photo unwrapped exactly
as the pipeline does but with the true shape, pose and light (what perfect
registration and lighting would give; no masks), and the least-squares
projection of the true map onto the UVAPM (what the coarse model can hold
at best).

**The same face under several scene lights** (``--light_faces``, default
4): easy-level faces rendered again under each of :data:`SCENE_LIGHTS`
(neutral, tungsten, shade, magenta and green stage light, a dim scene: the
whole light, ambient included, multiplied by a colour), with everything
else (pose, albedo, background, noise) the same. Scored without any gain,
since a scene's colour is what the albedo must not take: the median CIELAB
colour of the recovered albedo over the visible texels against the truth's
(``dE to truth``, CIE76), and per face the mean CIE76 difference between the
albedo colours recovered under the different lights (``spread across
lights``; 0 for a light-invariant albedo). The photo's own skin colour
(median over the crop's skin mask) is scored the same way as the reference.

**Occluders** (``--occluder_faces``, default 4): easy-level faces fitted
as rendered and again with glasses frames and hair strands drawn over the
face (:func:`draw_occluders`); the albedo's visible-texel PSNR against the
truth with and without them (an albedo that keeps occluders out loses
nothing).

Usage::

    python -m benchmarks.synthetic_gt [--n 10] [--difficulty all] [--albedo_dir DIR] [--light_faces 4]
        [--occluder_faces 4] [--quick]

Results: ``benchmarks/results/synthetic_gt[_quick].{json,md,csv}`` (the CSV per face) and
``synthetic_lights[_quick].{json,md,csv}`` (the scene-light experiment) and
``synthetic_occluders[_quick].{json,md,csv}`` (the occluder experiment).
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from assets import load_installed_face_model
from fitting.landmark_fit import normalized_landmark_error
from fitting.metrics import masked_psnr, masked_ssim, skin_tone
from fitting.params import FaceParams
from fitting.pipeline import Pipeline
from fitting.preprocess.alignment import CROP_SIZE, apply_affine
from fitting.preprocess.preprocessor import PreprocessError, Preprocessor
from fitting.structures import FaceResult, ProcessedFace
from fitting.unwrap import unwrap_texture
from models.camera import PinholeCamera
from models.face_model import FaceModel
from models.lighting import sphere_normals
from models.shading import sh_shading
from models.uv_albedo_model import UVAlbedoModel
from models.uv_layout import UVLayout
from testing.synthetic import make_synthetic_faces, vertex_error_mm
from testing.textures import photo_albedo_truths
from utils.errors import ToolkitError
from utils.image_io import list_images, read_image, write_image
from utils.runtime import resolve_device, seed_everything

from . import common
from .fit_setup import add_fitting_args, fitting_config

__all__ = [
    "Difficulty", "DIFFICULTIES", "INSTRUMENTS", "GroundTruth", "Estimate", "UVMasks", "SceneMaker", "uv_masks",
    "channel_gain", "albedo_scores", "lighting_error", "registration_error", "score", "bounds", "light_spread",
    "occluder_effect", "draw_occluders", "SCENE_LIGHTS", "main",
]

logger = logging.getLogger("uvapm.benchmarks")

PHOTO_SIZE = 512
METHODS = ("UVAPM mean albedo (mean shape)", "unwrapped photo texture", "stage 2 (no stage 3)",
           "stage 3 (full pipeline)")
#: Bounds rather than methods: what the unwrapping gives with perfect registration, and the UVAPM's own capacity.
INSTRUMENTS = ("bound: photo unwrapped with the true shape, pose and light", "bound: UVAPM projection of the truth")
SCORES = ("psnr_visible", "ssim_visible", "psnr_unseen", "unseen_share", "albedo_gain", "vertex_mm",
          "registration_error", "landmark_error", "lighting_error")


@dataclass(frozen=True)
class Difficulty:
    """How hard a synthetic face is (see the module docstring for the levels)."""

    max_yaw_deg: float
    max_pitch_deg: float
    light_strength: float
    noise_sigma: float
    jpeg_quality: int


DIFFICULTIES = {
    "easy": Difficulty(15.0, 10.0, 0.08, 0.005, 95),
    "medium": Difficulty(30.0, 15.0, 0.16, 0.01, 85),
    "hard": Difficulty(45.0, 20.0, 0.28, 0.02, 70),
}

#: Scene lights of the light-spread experiment: a multiplier of the whole SH light per colour channel.
SCENE_LIGHTS = {
    "neutral": (1.0, 1.0, 1.0),
    "tungsten": (1.15, 0.92, 0.62),
    "shade": (0.82, 0.95, 1.2),
    "magenta stage": (1.12, 0.7, 1.08),
    "green stage": (0.8, 1.12, 0.78),
    "dim": (0.45, 0.45, 0.45),
}
LIGHT_METHODS = ("photo skin (input)", "unwrapped photo texture", "stage 3 (full pipeline)")


@dataclass
class GroundTruth:
    """The truth of a batch of synthetic faces (CPU tensors).

    Attributes:
        params: the true parameters.
        vertices: (B, V, 3) posed vertices.
        landmarks: (B, 68, 2) noise-free projected landmarks, 224-crop pixels.
        albedo: (B, 3, R, R) UV albedo in [0, 1].
        crop_vertices: (B, V, 2) the posed vertices projected into the 224 crop's pixels.
        photo: (B, 3, S, S) the photo the pipeline was given, in [0, 1] (the true camera's view).
        albedo_known: (B, 1, R, R) 1 where ``albedo`` is the face's albedo (a photo texture's face as its photo
            showed it, not its hair, background or inpainting), or None where all of it is.
    """

    params: FaceParams
    vertices: torch.Tensor
    landmarks: torch.Tensor
    albedo: torch.Tensor
    crop_vertices: torch.Tensor
    photo: torch.Tensor
    albedo_known: torch.Tensor | None = None


@dataclass
class Estimate:
    """What a method recovered for a batch; parts it does not estimate are None.

    Attributes:
        albedo: (B, 3, r, r) UV albedo at any resolution.
        vertices: (B, V, 3) posed vertices.
        landmarks: (B, 68, 2) fitted landmarks, 224-crop pixels.
        gamma: (B, 27) SH lighting.
    """

    albedo: torch.Tensor | None = None
    vertices: torch.Tensor | None = None
    landmarks: torch.Tensor | None = None
    gamma: torch.Tensor | None = None


@dataclass
class UVMasks:
    """Texel masks of a batch at the truth's resolution.

    Attributes:
        visible: (B, 1, R, R) texels seen by the photo (true unwrapping confidence > 0.5).
        unseen: (B, 1, R, R) face texels with zero confidence.
        face: (1, 1, R, R) texels of the face region (the UV layout).
    """

    visible: torch.Tensor
    unseen: torch.Tensor
    face: torch.Tensor


# ----------------------------------------------------------------------------------------------------------- scoring


def uv_masks(face_model: FaceModel, params: FaceParams, crop: torch.Tensor, layout: UVLayout,
             known: torch.Tensor | None = None) -> UVMasks:
    """Visible and unseen texels of the true geometry, from the unwrapping confidence.

    Args:
        face_model: the face model (on the CPU).
        params: the true parameters.
        crop: (B, 3, S, S) the rendered crop (only its size matters).
        layout: the UV layout at the truth's resolution.
        known: optional (B, 1, R, R) where the truth is an albedo (:attr:`GroundTruth.albedo_known`); the
            visible and unseen texels are taken within it.
    """
    confidence = unwrap_texture(face_model, params, crop, None, layout).confidence
    face = layout.mask[None] * (1.0 if known is None else known)
    return UVMasks(visible=(confidence > 0.5).float() * face, unseen=(confidence <= 0).float() * face, face=face)


def _resized(uv_map: torch.Tensor, resolution: int) -> torch.Tensor:
    if uv_map.shape[-1] > resolution:
        return F.interpolate(uv_map, size=resolution, mode="area")
    if uv_map.shape[-1] < resolution:
        return F.interpolate(uv_map, size=resolution, mode="bilinear", align_corners=False)
    return uv_map


def channel_gain(truth: torch.Tensor, estimate: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-channel gain g (B, 3) minimising sum over the mask of (g * estimate - truth)^2."""
    w = mask.expand_as(truth)
    return (w * estimate * truth).flatten(2).sum(2) / (w * estimate**2).flatten(2).sum(2).clamp_min(1e-12)


def albedo_scores(truth: torch.Tensor, estimate: torch.Tensor, masks: UVMasks) -> dict[str, torch.Tensor]:
    """Albedo scores (see the module docstring), each (B,); NaN where a mask is empty.

    Args:
        truth: (B, 3, R, R) true albedo.
        estimate: (B, 3, r, r) estimated albedo (resized to R: area down, bilinear up).
        masks: the visible and unseen texels.

    Returns:
        ``psnr_visible``, ``ssim_visible``, ``psnr_unseen`` (dB / SSIM) and ``gain`` (B, 3).
    """
    estimate = _resized(estimate.float(), truth.shape[-1])
    gain = channel_gain(truth, estimate, masks.visible)
    adjusted = (estimate * gain[:, :, None, None]).clamp(0, 1)

    def psnr(mask):
        out = masked_psnr(adjusted, truth, mask)
        return torch.where(mask.flatten(1).sum(1) > 0, out, torch.full_like(out, float("nan")))

    return {"psnr_visible": psnr(masks.visible), "ssim_visible": masked_ssim(adjusted, truth, masks.visible),
            "psnr_unseen": psnr(masks.unseen), "gain": gain}


def lighting_error(true_gamma: torch.Tensor, estimated_gamma: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
    """Relative shading error (B,): mean |S_est / gain - S_true| / mean S_true over camera-facing normals.

    Args:
        true_gamma, estimated_gamma: (B, 27) SH lighting.
        gain: (B, 3) the albedo gain (the estimate's albedo is multiplied by it, so its shading is divided).
    """
    normals = sphere_normals(hemisphere=True).to(true_gamma)[None].expand(len(true_gamma), -1, -1)
    true_shading = sh_shading(normals, true_gamma)
    estimated = sh_shading(normals, estimated_gamma.to(true_gamma)) / gain[:, None, :]
    return (estimated - true_shading).abs().mean((1, 2)) / true_shading.mean((1, 2)).abs().clamp_min(1e-8)


def registration_error(face_model: FaceModel, truth: GroundTruth, vertices: torch.Tensor) -> torch.Tensor:
    """How far the fitted surface lies from the true one in the image (B,): the median 224-crop distance
    between the fitted and true projections of the face-region vertices that face the camera (true normal
    z > 0.4), over the true outer-eye-corner distance. What the unwrapping inherits: a texel lands on the photo
    pixel of another point of the skin by this much.

    Args:
        vertices: (B, V, 3) fitted posed vertices.
    """
    pixels = PinholeCamera(face_model.camera_distance, CROP_SIZE).project(vertices)
    facing = (face_model.vertex_normals(truth.vertices)[..., 2] > 0.4) & face_model.face_vertex_mask.cpu()
    distance = (pixels - truth.crop_vertices).norm(dim=-1)
    eyes = (truth.landmarks[:, 36] - truth.landmarks[:, 45]).norm(dim=-1)
    return torch.stack([d[f].median() for d, f in zip(distance, facing)]) / eyes


def score(face_model: FaceModel, truth: GroundTruth, estimate: Estimate, masks: UVMasks) -> dict[str, torch.Tensor]:
    """Every score of :data:`SCORES` (B,) for one method; NaN for what it does not estimate."""
    B = truth.albedo.shape[0]
    nan = torch.full((B,), float("nan"))
    out = {name: nan for name in SCORES}
    out["unseen_share"] = masks.unseen.flatten(1).sum(1) / masks.face.flatten(1).sum(1)
    if estimate.albedo is not None:
        albedo = albedo_scores(truth.albedo, estimate.albedo.cpu(), masks)
        out.update({k: albedo[k] for k in ("psnr_visible", "ssim_visible", "psnr_unseen")})
        out["albedo_gain"] = albedo["gain"].mean(1)
        if estimate.gamma is not None:
            out["lighting_error"] = lighting_error(truth.params.gamma, estimate.gamma.cpu(), albedo["gain"])
    if estimate.vertices is not None:
        out["vertex_mm"] = vertex_error_mm(face_model, estimate.vertices.cpu(), truth.vertices)
        out["registration_error"] = registration_error(face_model, truth, estimate.vertices.cpu())
    if estimate.landmarks is not None:
        out["landmark_error"] = normalized_landmark_error(estimate.landmarks.cpu(), truth.landmarks)
    return out


# ------------------------------------------------------------------------------------------------------- the scenes


def draw_occluders(photo: np.ndarray, landmarks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Glasses frames and hair strands drawn over a face, as photos have them.

    Args:
        photo: (H, W, 3) float image in [0, 1].
        landmarks: (68, 2) the face's landmarks in the photo's pixels.
        rng: draws the frame's colour and the strands.

    Returns:
        A copy with dark rectangular frames around both eyes (a bridge and temples to the face's sides, about a
        tenth of the eye's width thick) and 8-14 thin strands of dark hair falling from the hairline across the
        forehead to the brows.
    """
    out = np.ascontiguousarray(photo.copy())
    eyes = [landmarks[36:42], landmarks[42:48]]
    width = float(np.mean([np.linalg.norm(e[3] - e[0]) for e in eyes]))
    thickness = max(2, int(round(0.12 * width)))
    frame = tuple(float(v) for v in rng.uniform(0.02, 0.12) * np.array([1.0, 0.9, 0.85]))
    inner = []
    for eye, temple in zip(eyes, (landmarks[0], landmarks[16])):
        centre = eye.mean(0)
        half = np.array([0.95 * width, 0.6 * width])
        corners = [centre - half, centre + half]
        cv2.rectangle(out, tuple(int(v) for v in corners[0]), tuple(int(v) for v in corners[1]), frame, thickness,
                      cv2.LINE_AA)
        outer_x = corners[0][0] if temple[0] < centre[0] else corners[1][0]
        cv2.line(out, (int(outer_x), int(centre[1] - 0.3 * width)), (int(temple[0]), int(temple[1] - 0.2 * width)),
                 frame, thickness, cv2.LINE_AA)
        inner.append((corners[1][0] if temple[0] < centre[0] else corners[0][0], centre[1] - 0.2 * width))
    cv2.line(out, tuple(int(v) for v in inner[0]), tuple(int(v) for v in inner[1]), frame, thickness, cv2.LINE_AA)
    brows = landmarks[17:27]
    top = brows[:, 1].min() - 1.3 * width  # about the hairline
    hair = tuple(float(v) for v in rng.uniform(0.05, 0.2) * np.array([1.0, 0.75, 0.55]))
    for _ in range(int(rng.integers(8, 15))):
        x0 = rng.uniform(brows[:, 0].min(), brows[:, 0].max())
        start = np.array([x0, top])
        end = np.array([x0 + rng.uniform(-1.0, 1.0) * width, brows[:, 1].min() + rng.uniform(-0.5, 0.1) * width])
        bend = (start + end) / 2 + np.array([rng.uniform(-0.5, 0.5) * width, 0.0])
        t = np.linspace(0.0, 1.0, 24)[:, None]
        curve = (1 - t) ** 2 * start + 2 * (1 - t) * t * bend + t**2 * end
        cv2.polylines(out, [np.round(curve).astype(np.int32)], False, hair, int(rng.integers(2, 5)), cv2.LINE_AA)
    return out


class SceneMaker:
    """Synthetic faces and the pipeline inputs made from them by the real preprocessing (seeded per face).

    Args:
        face_model: the face model (on the CPU).
        backgrounds: photos to crop backgrounds from.
        albedo_maps: (3, R, R) albedo truths, or None to sample ``uvapm``'s prior.
        uvapm: the UV albedo model (on any device).
        preprocessor: the preprocessing every photo gets.
        seed: base seed.
    """

    def __init__(self, face_model: FaceModel, backgrounds: list[Path], albedo_maps: list[torch.Tensor] | None,
                 uvapm: UVAlbedoModel, preprocessor: Preprocessor, seed: int,
                 albedo_known: list[torch.Tensor] | None = None):
        if not backgrounds:
            raise ToolkitError("no background photos found (see --backgrounds)")
        self.face_model, self.backgrounds, self.albedo_maps = face_model, backgrounds, albedo_maps
        self.albedo_known = albedo_known
        self.uvapm, self.preprocessor, self.seed = uvapm, preprocessor, seed

    def _background(self, rng: np.random.Generator) -> torch.Tensor:
        photo = read_image(self.backgrounds[rng.integers(len(self.backgrounds))])
        height, width = photo.shape[:2]
        side = int(rng.uniform(0.3, 1.0) * min(height, width))
        y, x = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        crop = cv2.resize(photo[y : y + side, x : x + side], (PHOTO_SIZE, PHOTO_SIZE), interpolation=cv2.INTER_AREA)
        return torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255.0

    def _albedo(self, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor | None]:
        """An albedo truth (1, 3, R, R) and where it is known (1, 1, R, R) or None."""
        if self.albedo_maps is None:
            generator = torch.Generator().manual_seed(int(rng.integers(2**31)))
            with torch.no_grad():
                return self.uvapm.sample(1, generator).clamp(0, 1).cpu(), None
        index = rng.integers(len(self.albedo_maps))
        return self.albedo_maps[index][None], None if self.albedo_known is None else self.albedo_known[index][None]

    def make(self, level: str, index: int, light_colour: tuple[float, float, float] | None = None,
             occluders: bool = False, yaw_deg: float | None = None, light: torch.Tensor | None = None
             ) -> tuple[str, np.ndarray, ProcessedFace | None, GroundTruth]:
        """Face ``index`` of a difficulty level: its name, photo, processed face (None when no face is found)
        and truth (landmarks in the processed crop's pixels); ``light_colour`` tints the whole light,
        ``occluders`` draws glasses and hair over the face (:func:`draw_occluders`), ``yaw_deg`` turns the head
        and ``light`` (1, 27) replaces the SH light (the face, background and noise stay the same)."""
        difficulty = DIFFICULTIES[level]
        rng = np.random.default_rng([self.seed, list(DIFFICULTIES).index(level), index])
        face_seed = int(rng.integers(2**31))
        albedo, known = self._albedo(rng)  # drawn after the face's seed, as the scenes always were
        synthetic = make_synthetic_faces(
            self.face_model, 1, seed=face_seed, max_yaw_deg=difficulty.max_yaw_deg,
            max_pitch_deg=difficulty.max_pitch_deg, light_strength=difficulty.light_strength,
            albedo_map=albedo, background=self._background(rng), image_size=PHOTO_SIZE, head=True,
            light_colour=light_colour, eyes=True, yaw_deg=yaw_deg, light=light,
        )
        clean = synthetic.image[0].permute(1, 2, 0).numpy()
        if occluders:
            clean = draw_occluders(clean, synthetic.landmarks[0].numpy(), np.random.default_rng([self.seed, index]))
        noisy = np.clip(clean + rng.normal(0.0, difficulty.noise_sigma, clean.shape), 0, 1)
        _, jpeg = cv2.imencode(".jpg", cv2.cvtColor((noisy * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, difficulty.jpeg_quality])
        photo = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        name = f"{level}_{index:03d}"
        try:
            face = self.preprocessor(photo, source=name)[0]
        except PreprocessError:
            face = None
        landmarks = synthetic.landmarks[0].numpy().astype(np.float64)  # photo pixels
        vertices = PinholeCamera(self.face_model.camera_distance, PHOTO_SIZE).project(synthetic.vertices.cpu())
        vertices = vertices[0].double().numpy()
        if face is not None:
            landmarks = apply_affine(face.transform[0].double().numpy(), landmarks)
            vertices = apply_affine(face.transform[0].double().numpy(), vertices)
        truth = GroundTruth(synthetic.params.to("cpu"), synthetic.vertices.cpu(),
                            torch.from_numpy(landmarks).float()[None], synthetic.albedo_map.cpu(),
                            torch.from_numpy(vertices).float()[None],
                            torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255.0, known)
        return name, photo, face, truth


def bounds(pipeline: Pipeline, truth: GroundTruth, face_model: FaceModel, layout: UVLayout) -> dict[str, Estimate]:
    """The albedo of each of :data:`INSTRUMENTS`: the photo unwrapped (as the pipeline does, mirrored and
    inpainted) with the true geometry and light instead of the fitted ones, at ``layout``'s resolution, and
    the least-squares projection of the true map onto the UVAPM (ridge 1e-3)."""
    uvapm = pipeline.uvapm
    with torch.no_grad():
        unwrapped = unwrap_texture(face_model, truth.params, truth.photo, None, layout).filled
        albedo = _resized(truth.albedo, uvapm.resolution).to(uvapm.mean.device)
        projected = uvapm(uvapm.encode(albedo, ridge=1e-3)).clamp(0, 1).cpu()
    return {INSTRUMENTS[0]: Estimate(albedo=unwrapped), INSTRUMENTS[1]: Estimate(albedo=projected)}


def estimates(pipeline: Pipeline, result: FaceResult, face_model: FaceModel) -> dict[str, Estimate]:
    """The pipeline's result and the baselines, per method of :data:`METHODS` (stage 3 only when it ran)."""
    params = result.params.to("cpu")
    with torch.no_grad():
        vertices = params.posed(face_model).vertices
        mean_vertices = face_model(rotation=params.rotation, translation=params.translation).vertices
    fitted = dict(vertices=vertices, landmarks=result.landmarks[None], gamma=params.gamma)
    out = {
        METHODS[0]: Estimate(albedo=pipeline.uvapm.mean[None].clamp(0, 1), vertices=mean_vertices),
        METHODS[1]: Estimate(albedo=result.uv_texture[None]),
        METHODS[2]: Estimate(albedo=result.albedo_maps["stage2"][None], **fitted),
    }
    if "stage3" in result.albedo_maps:
        out[METHODS[3]] = Estimate(albedo=result.albedo_maps["stage3"][None], **fitted)
    return out


def _montage(result: FaceResult, truth: GroundTruth, masks: UVMasks) -> np.ndarray:
    """Crop | true albedo | unwrapped | stage 2 | stage 3 | visible (green) / unseen (red) texels, 224 px each."""
    size = CROP_SIZE

    def panel(image):
        return F.interpolate(image[None].float().cpu(), size=size, mode="area")[0].clamp(0, 1)

    maps = [truth.albedo[0], result.uv_texture, result.albedo_maps["stage2"]]
    maps += [result.albedo_maps["stage3"]] if "stage3" in result.albedo_maps else []
    coverage = torch.cat([masks.unseen[0], masks.visible[0], torch.zeros_like(masks.visible[0])])
    panels = [result.face.image[0], *maps, coverage]
    return torch.cat([panel(p) for p in panels], 2).permute(1, 2, 0).numpy()


def _summary_rows(records: list[dict]) -> list[dict]:
    rows = []
    for level in DIFFICULTIES:
        total = len({r["face"] for r in records if r["difficulty"] == level})
        for method in (*METHODS, *INSTRUMENTS):
            chosen = [r for r in records if r["difficulty"] == level and r["method"] == method]
            if not chosen:
                continue
            row = {"difficulty": level, "method": method, "faces": f"{len(chosen)}/{total}"}
            for name in (*SCORES, "input_landmark_error"):
                values = np.array([r[name] for r in chosen], dtype=np.float64)
                row[name] = float(np.nanmean(values)) if np.isfinite(values).any() else ""
            rows.append(row)
    return rows


def _lab(image: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """(3,) median CIELAB colour of ``image`` (1, 3, r, r) where ``mask`` (1, 1, R, R) > 0.5 (at R)."""
    tone = skin_tone(_resized(image.float().cpu(), mask.shape[-1]), mask.cpu())
    return np.array([float(tone[k][0]) for k in ("L", "a", "b")])


def _fit_easy_scene(pipeline: Pipeline, maker: SceneMaker, face_model: FaceModel, layouts: dict[int, UVLayout],
                    index: int, variant: str, seed: int, **scene
                    ) -> tuple[ProcessedFace | None, GroundTruth, UVMasks, FaceResult | None]:
    """Easy-level face ``index`` made with ``scene`` (:meth:`SceneMaker.make`'s options), its texel masks and
    its fit, named ``<name>_<variant>`` (None when no face was detected); ``layouts`` caches UV layouts."""
    name, photo, face, truth = maker.make("easy", index, **scene)
    resolution = truth.albedo.shape[-1]
    if resolution not in layouts:
        layouts[resolution] = UVLayout(face_model, resolution)
    masks = uv_masks(face_model, truth.params, torch.zeros(1, 3, PHOTO_SIZE, PHOTO_SIZE), layouts[resolution],
                     truth.albedo_known)
    if face is None:
        return None, truth, masks, None
    seed_everything(seed)
    return face, truth, masks, pipeline.run(pipeline.batch([f"{name}_{variant}"], [face], [photo]))[0]


def light_spread(pipeline: Pipeline, maker: SceneMaker, face_model: FaceModel, faces: int, lights: dict,
                 seed: int, quiet: bool) -> tuple[list[dict], list[dict]]:
    """The scene-light experiment (module docstring): per-fit records and the summary rows."""
    records = []
    layouts: dict[int, UVLayout] = {}
    jobs = [(i, light) for i in range(faces) for light in lights]
    for index, light in tqdm(jobs, desc="scene lights", unit="fit", disable=quiet):
        face, truth, masks, result = _fit_easy_scene(pipeline, maker, face_model, layouts, index, light, seed,
                                                     light_colour=lights[light])
        info = {"face": index, "light": light}
        if result is None:
            records.append({**info, "method": "detection failed"})
            continue
        true_lab = _lab(truth.albedo, masks.visible)
        final = result.albedo_maps.get("stage3", result.albedo_maps["stage2"])
        photo_tone = skin_tone(face.image, face.skin_mask)
        found = {LIGHT_METHODS[0]: np.array([float(photo_tone[k][0]) for k in ("L", "a", "b")]),
                 LIGHT_METHODS[1]: _lab(result.uv_texture[None], masks.visible),
                 LIGHT_METHODS[2]: _lab(final[None], masks.visible)}
        for method, lab in found.items():
            records.append({**info, "method": method, "L": lab[0], "a": lab[1], "b": lab[2],
                            "dE_truth": float(np.linalg.norm(lab - true_lab))})
    rows = []
    for method in LIGHT_METHODS:
        chosen = [r for r in records if r["method"] == method]
        row = {"method": method, "faces": len({r["face"] for r in chosen})}
        for light in lights:
            values = [r["dE_truth"] for r in chosen if r["light"] == light]
            row[f"dE {light}"] = float(np.mean(values)) if values else ""
        row["mean dE to truth"] = float(np.mean([r["dE_truth"] for r in chosen])) if chosen else ""
        spreads = []
        for index in {r["face"] for r in chosen}:
            labs = [np.array([r["L"], r["a"], r["b"]]) for r in chosen if r["face"] == index]
            pairs = [np.linalg.norm(x - y) for i, x in enumerate(labs) for y in labs[i + 1:]]
            if pairs:
                spreads.append(float(np.mean(pairs)))
        row["spread across lights"] = float(np.mean(spreads)) if spreads else ""
        rows.append(row)
    return records, rows


OCCLUDER_METHODS = ("unwrapped photo texture", "stage 3 (full pipeline)")


def occluder_effect(pipeline: Pipeline, maker: SceneMaker, face_model: FaceModel, faces: int, seed: int,
                    quiet: bool, out_dir: Path | None) -> tuple[list[dict], list[dict]]:
    """The occluder experiment (module docstring): per-fit records and the summary rows."""
    records = []
    layouts: dict[int, UVLayout] = {}
    jobs = [(i, occluded) for i in range(faces) for occluded in (False, True)]
    for index, occluded in tqdm(jobs, desc="occluders", unit="fit", disable=quiet):
        _, truth, masks, result = _fit_easy_scene(pipeline, maker, face_model, layouts, index,
                                                  "occluded" if occluded else "plain", seed, occluders=occluded)
        info = {"face": index, "occluders": occluded}
        if result is None:
            records.append({**info, "method": "detection failed"})
            continue
        found = estimates(pipeline, result, face_model)
        for method in OCCLUDER_METHODS:
            if method in found:
                scores = albedo_scores(truth.albedo, found[method].albedo.cpu(), masks)
                records.append({**info, "method": method, "psnr_visible": float(scores["psnr_visible"][0])})
        if out_dir is not None:
            write_image(out_dir / f"occluders_{index:03d}_{'occluded' if occluded else 'plain'}.png",
                        _montage(result, truth, masks))
    rows = []
    for method in OCCLUDER_METHODS:
        pairs = []
        for index in range(faces):
            by = {r["occluders"]: r["psnr_visible"] for r in records if r["face"] == index and r["method"] == method}
            if len(by) == 2:
                pairs.append((by[False], by[True]))
        if pairs:
            plain, occluded = np.array(pairs).T
            rows.append({"method": method, "faces": len(pairs), "psnr_visible plain": float(plain.mean()),
                         "psnr_visible with glasses and hair": float(occluded.mean()),
                         "difference (dB)": float((occluded - plain).mean()),
                         "worst difference (dB)": float((occluded - plain).min())})
    return records, rows


def _albedo_truths(args, face_model: FaceModel, pipeline: Pipeline
                   ) -> tuple[list[torch.Tensor] | None, list[torch.Tensor] | None, str]:
    """The albedo truths (see the module docstring), where each is known (None: everywhere) and a sentence
    saying what they are."""
    if args.albedo_dir == "uvapm":
        R = pipeline.uvapm.resolution
        return None, None, (f"maps sampled from the UVAPM's prior ({R}x{R}, inside the model, without features or "
                            "detail)")
    if args.albedo_dir:
        paths = [p for p in list_images(args.albedo_dir) if not p.stem.endswith("_conf")]
        if not paths:
            raise ToolkitError(f"{args.albedo_dir}: no UV textures found")
        maps = [torch.from_numpy(read_image(p).copy()).permute(2, 0, 1).float() / 255.0 for p in paths]
        return maps, None, f"the {len(maps)} UV maps of {args.albedo_dir}"
    from scripts.default_models.data import split_names

    photos = {p.stem: p for p in list_images(args.photos)}
    if not photos:
        raise ToolkitError(f"{args.photos}: no photos for the albedo truths (see --photos or --albedo_dir)")
    count = args.textures if args.textures is not None else (2 if args.quick else 12)
    test = split_names(list(photos), seed=0)["test"][:count]
    truths = photo_albedo_truths(face_model, [photos[n] for n in test], pipeline.dense_points)
    maps, known = [t for t, _ in truths], [k for _, k in truths]
    return maps, known, (f"full unwrapped textures (features included) of {len(maps)} photos of the default models' "
                         f"test split ({', '.join(test)}), scored where their photo showed the face (its parse "
                         "mask unwrapped, confidence > 0.5: not the hair, background or inpainting they also hold)")


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic_gt", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, help="faces per difficulty (default 10; 1 with --quick)")
    parser.add_argument("--difficulty", choices=(*DIFFICULTIES, "all"), default="all")
    parser.add_argument("--albedo_dir", help="albedo truths: a folder of UV maps (PNG, *_conf.png ignored), or "
                        "'uvapm' for samples of its prior (default: textures of the recipe's test photos)")
    parser.add_argument("--photos", default=str(common.SHARED / "data" / "faces" / "single"),
                        help="the default models' photo set, whose test split gives the albedo truths")
    parser.add_argument("--textures", type=int, help="test photos to take textures from (default 12; 2 quick)")
    parser.add_argument("--backgrounds", default=str(common.SHARED / "data" / "faces" / "multi"),
                        help="photos cropped for backgrounds (default: the shared group photos)")
    parser.add_argument("--output_dir", help="also write a picture per face here (crop | UV maps | texel masks)")
    parser.add_argument("--light_faces", type=int,
                        help="faces of the scene-light experiment, each fitted under every scene light "
                        "(default 4; 1 with --quick; 0 skips it)")
    parser.add_argument("--occluder_faces", type=int,
                        help="faces of the occluder experiment, each fitted without and with drawn glasses and hair "
                        "(default 4; 1 with --quick; 0 skips it)")
    add_fitting_args(parser)
    return parser.parse_args(argv)


def run(args, argv: list[str]) -> list[dict]:
    """The benchmark; returns the summary rows."""
    n = args.n if args.n is not None else (1 if args.quick else 10)
    levels = list(DIFFICULTIES) if args.difficulty == "all" else [args.difficulty]
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="uvapm_bench_") as scratch:
        config, models = fitting_config(args, Path(scratch))
        pipeline = Pipeline(config, device)
    face_model = pipeline.face_model if device.type == "cpu" else FaceModel(
        load_installed_face_model(config.face_model))
    albedo_maps, albedo_known, albedo_note = _albedo_truths(args, face_model, pipeline)
    preprocessor = Preprocessor(replace(config.preprocess, device=config.device,
                                        checkpoints_dir=config.checkpoints_dir, visualise=False))
    maker = SceneMaker(face_model, list_images(args.backgrounds), albedo_maps, pipeline.uvapm, preprocessor,
                       args.seed, albedo_known)
    layouts: dict[int, UVLayout] = {}
    records = []
    out_dir = Path(args.output_dir) if args.output_dir else None
    jobs = [(level, i) for level in levels for i in range(n)]
    for level, index in tqdm(jobs, desc="synthetic faces", unit="face", disable=args.quiet):
        name, photo, face, truth = maker.make(level, index)
        resolution = truth.albedo.shape[-1]
        if resolution not in layouts:
            layouts[resolution] = UVLayout(face_model, resolution)
        clean_crop = torch.zeros(1, 3, PHOTO_SIZE, PHOTO_SIZE)  # only its size matters
        masks = uv_masks(face_model, truth.params, clean_crop, layouts[resolution], truth.albedo_known)
        angles = truth.params.angles[0] * 180 / math.pi
        info = {"face": name, "difficulty": level, "pitch_deg": float(angles[0]), "yaw_deg": float(angles[1])}
        if face is None:
            records.append({**info, "method": "detection failed", "detected": 0.0})
            continue
        seed_everything(config.seed)
        result = pipeline.run(pipeline.batch([name], [face], [photo]))[0]
        input_error = float(normalized_landmark_error(face.landmarks.float(), truth.landmarks)[0])
        unwrap_resolution = config.unwrap.resolution
        if unwrap_resolution not in layouts:
            layouts[unwrap_resolution] = UVLayout(face_model, unwrap_resolution)
        methods = {**estimates(pipeline, result, face_model),
                   **bounds(pipeline, truth, face_model, layouts[unwrap_resolution])}
        for method, estimate in methods.items():
            scores = score(face_model, truth, estimate, masks)
            records.append({**info, "method": method, "detected": 1.0, "input_landmark_error": input_error,
                            "landmark_source": face.info.landmarks.split(" ")[0],
                            **{k: float(v[0]) for k, v in scores.items()}})
        if out_dir is not None:
            write_image(out_dir / f"{name}.png", _montage(result, truth, masks))
    rows = _summary_rows(records)
    name = "synthetic_gt_quick" if args.quick else "synthetic_gt"
    levels_note = "; ".join(f"{k}: yaw +-{d.max_yaw_deg:g} deg, pitch +-{d.max_pitch_deg:g} deg, light "
                            f"{d.light_strength:g}, noise {d.noise_sigma:g}, JPEG {d.jpeg_quality}"
                            for k, d in DIFFICULTIES.items() if k in levels)
    notes = (
        f"Albedo truth: {albedo_note}. Backgrounds: random crops of {args.backgrounds}. Difficulties: {levels_note}. "
        "Every photo goes through the real preprocessing (detection, FaceMesh or dlib landmarks, alignment, "
        "default masks); faces: detected / rendered. Albedo PSNR/SSIM in UV at "
        "the truth's resolution over visible texels (true unwrapping confidence > 0.5), after one least-squares gain "
        "per colour channel (computed on the visible texels, also applied to the unseen ones) and clamping to [0, 1]; "
        "albedo_gain: that gain averaged over the channels (1: the estimate is as bright as the truth). Unseen: "
        "face texels with zero confidence (unseen_share: their share of the face texels). Vertex error: "
        "mm over the face region after rigid alignment (the mean-albedo row uses the mean face shape). Registration "
        "error: median 224-crop distance between the fitted and true projections of the camera-facing face vertices "
        "/ true outer-eye-corner distance. Bounds (albedo only): the photo unwrapped with the true shape, pose and "
        "light (no masks); the least-squares UVAPM projection of the true map (ridge 1e-3). Landmark "
        "errors: mean distance / true outer-eye-corner distance (input: the detected landmarks the fit was given). "
        "Lighting error: mean |fitted shading / gain - true shading| / mean true shading over camera-facing "
        f"normals. {models.description} Per-face values: {name}.csv."
    )
    columns = ["difficulty", "method", "faces", *SCORES, "input_landmark_error"]
    common.report(name, "Synthetic faces with known truth: albedo, shape, landmarks, lighting", rows, columns,
                  "python -m benchmarks.synthetic_gt " + " ".join(argv), notes)
    common.write_csv(name, records, list(dict.fromkeys(k for r in records for k in r)))
    light_faces = args.light_faces if args.light_faces is not None else (1 if args.quick else 4)
    if light_faces > 0:
        lights = dict(list(SCENE_LIGHTS.items())[:2]) if args.quick else SCENE_LIGHTS
        light_records, light_rows = light_spread(pipeline, maker, face_model, light_faces, lights, config.seed,
                                                 args.quiet)
        light_name = "synthetic_lights_quick" if args.quick else "synthetic_lights"
        light_notes = (
            f"{light_faces} easy-level faces (albedo truth: {albedo_note}), each rendered under every scene light "
            "(the whole SH light, ambient included, times an RGB colour: "
            + "; ".join(f"{k} {v}" for k, v in lights.items())
            + ") with the same pose, background and noise, and fitted by the full pipeline. Colours: median "
            "CIELAB (D65) over the visible texels (true unwrapping confidence > 0.5) of the albedo, no gain; photo "
            "skin: median over the crop's skin mask. dE: CIE76 to the truth's median colour over the same texels; "
            "spread across lights: per face, the mean CIE76 difference between the colours recovered under the "
            f"different lights, averaged over faces. {models.description} Per-fit values: {light_name}.csv."
        )
        columns = ["method", "faces", *[f"dE {k}" for k in lights], "mean dE to truth", "spread across lights"]
        common.report(light_name, "Synthetic faces under scene lights: albedo colour against the truth", light_rows,
                      columns, "python -m benchmarks.synthetic_gt " + " ".join(argv), light_notes)
        common.write_csv(light_name, light_records, list(dict.fromkeys(k for r in light_records for k in r)))
    occluder_faces = args.occluder_faces if args.occluder_faces is not None else (1 if args.quick else 4)
    if occluder_faces > 0:
        occ_records, occ_rows = occluder_effect(pipeline, maker, face_model, occluder_faces, config.seed,
                                                args.quiet, out_dir)
        occ_name = "synthetic_occluders_quick" if args.quick else "synthetic_occluders"
        occ_notes = (
            f"{occluder_faces} easy-level faces (albedo truth: {albedo_note}), each fitted twice by the full "
            "pipeline: as rendered, and with glasses frames and 8-14 hair strands drawn over the face "
            "(benchmarks.synthetic_gt.draw_occluders), everything else the same. Albedo PSNR over the visible "
            "texels against the truth (which has neither), after the per-channel gain as in synthetic_gt.md; "
            f"difference: with minus without, mean and worst over faces. {models.description} "
            f"Per-fit values: {occ_name}.csv."
        )
        columns = ["method", "faces", "psnr_visible plain", "psnr_visible with glasses and hair", "difference (dB)",
                   "worst difference (dB)"]
        common.report(occ_name, "Synthetic faces with drawn glasses and hair: albedo against the truth", occ_rows,
                      columns, "python -m benchmarks.synthetic_gt " + " ".join(argv), occ_notes)
        common.write_csv(occ_name, occ_records, list(dict.fromkeys(k for r in occ_records for k in r)))
    return rows


def main(argv=None) -> int:
    return common.benchmark_main(argv, _parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
