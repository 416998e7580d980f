"""Glasses frames: found around the eyes and kept out of the albedo.

The unwrapping's outlier test (:func:`fitting.unwrap.outlier_reliability`)
compares each pixel's luminance with its neighbourhood's. Thin frames
often pass it: a wire or gold rim is nearly as light as the skin around it,
and a frame's colour, not its luminance, is what differs. Frames also have
a shape no skin feature has: a closed curve around each eye, at a radius
that varies slowly with the angle.

:func:`detect_glasses` measures that shape. On the aligned crop at the
detail resolution, each pixel's **colour contrast** is its CIELAB
distance (CIE76) from the median of a small window (a frame is thinner
than half of it; the lightness is scaled to L*'s 0-100). From each eye's
centre (FaceMesh's eye corners), rays fan out over the band where a rim
lies (``ray_radii`` eye widths, the band flattened vertically); each ray
keeps its strongest contrast and where it lies. A ray **holds a rim** when
its peak passes ``ray_threshold`` and a neighbouring ray's peak does too
at nearly the same radius (``continuity`` eye widths): wrinkles, crow's
feet and under-eye shadows give strong peaks at scattered radii, a rim a
continuous curve. The face wears glasses when at least ``min_share`` of
the rays below and beside both eyes (the brows lie above them) hold a rim.

The frame's **mask** is then every pixel of contrast above
``pixel_threshold`` in the glasses' zone (ellipses round the eyes, bands
out to the temples) connected to a rim peak, grown by ``grow`` pixels
(anti-aliased edges, the frame's shadow), less the brows (FaceMesh's
polygons: a frame across a brow would otherwise take the brow with it).

Limits, measured on the shared photos (80 of them, glasses noted in the
manifest): half-rim frames (no lower rim) and very blurred photos are
missed; deep wrinkles all round the eyes of an older face can pass for a
frame (then the texture there comes from the model and the mirror).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .config import GlassesConfig

__all__ = ["GlassesDetection", "colour_contrast", "rim_rays", "detect_glasses", "EYE_CORNERS", "BROWS", "MIN_CROP"]

#: FaceMesh's (outer, inner) corners of the image-left and image-right eye.
EYE_CORNERS = ((33, 133), (263, 362))
#: FaceMesh's brow outlines (upper edge then lower edge, as closed polygons).
BROWS = ((70, 63, 105, 66, 107, 55, 65, 52, 53, 46), (300, 293, 334, 296, 336, 285, 295, 282, 283, 276))
#: Rays per eye, and samples along each.
RAYS = 48
RAY_SAMPLES = 24
#: The rim band's vertical radius as a share of its horizontal one.
FLATTENING = 0.85
#: Rays whose direction lies below this sine of the angle (towards the brows) do not vote.
UPPER_SINE = -0.3
#: Crops smaller than this (pixels) are not searched: a rim there is under a pixel wide.
MIN_CROP = 128


@dataclass
class GlassesDetection:
    """What :func:`detect_glasses` found.

    Attributes:
        mask: (B, 1, S, S) 1 on the frames' pixels (zero where no glasses were found).
        score: (B,) share of the voting rays that hold a rim (0 without FaceMesh points).
        present: (B,) bool, ``score >= min_share``.
    """

    mask: torch.Tensor
    score: torch.Tensor
    present: torch.Tensor


def colour_contrast(image: np.ndarray, window: int) -> np.ndarray:
    """(S, S) float32 CIE76 distance of each pixel of an (S, S, 3) uint8 RGB image from its window's median."""
    lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB)
    median = np.stack([cv2.medianBlur(np.ascontiguousarray(lab[..., c]), window) for c in range(3)], -1)
    difference = lab.astype(np.float32) - median.astype(np.float32)
    difference[..., 0] *= 100.0 / 255.0
    return np.linalg.norm(difference, axis=-1)


def _eye_frame(points: np.ndarray, corners: tuple[int, int]) -> tuple[np.ndarray, float, np.ndarray, np.ndarray]:
    """An eye's centre (2,), width, and the face's right (2,) and down (2,) directions in the image."""
    outer, inner = points[corners[0]], points[corners[1]]
    across = points[EYE_CORNERS[1][0]] - points[EYE_CORNERS[0][0]]
    right = across / max(float(np.linalg.norm(across)), 1e-6)
    return 0.5 * (outer + inner), float(np.linalg.norm(outer - inner)), right, np.array([-right[1], right[0]])


def rim_rays(contrast: np.ndarray, points: np.ndarray, corners: tuple[int, int], config: GlassesConfig):
    """The rays of one eye: (RAYS,) angles, peak contrasts, peak radii (eye widths), and whether each holds a
    rim (its peak and a neighbour's pass ``ray_threshold`` at radii within ``continuity``)."""
    centre, width, right, down = _eye_frame(points, corners)
    angles = np.linspace(0.0, 2.0 * np.pi, RAYS, endpoint=False)
    radii = np.linspace(*config.ray_radii, RAY_SAMPLES)
    directions = np.cos(angles)[:, None, None] * right + FLATTENING * np.sin(angles)[:, None, None] * down
    samples = centre + directions * (radii * width)[None, :, None]
    size = contrast.shape[0]
    xs, ys = (np.clip(samples[..., k], 0, size - 1).astype(np.float32) for k in (0, 1))
    values = cv2.remap(contrast, xs, ys, cv2.INTER_LINEAR)
    peak, radius = values.max(1), radii[values.argmax(1)]
    strong = peak > config.ray_threshold

    def agrees(shift: int) -> np.ndarray:
        return strong & np.roll(strong, shift) & (np.abs(radius - np.roll(radius, shift)) < config.continuity)

    return angles, peak, radius, agrees(1) | agrees(-1)


def _frame_mask(contrast: np.ndarray, points: np.ndarray, config: GlassesConfig) -> np.ndarray:
    """(S, S) uint8 mask of the frame's pixels (see the module docstring)."""
    size = contrast.shape[0]
    zone, seeds = np.zeros((size, size), np.uint8), np.zeros((size, size), np.uint8)
    for side, corners in zip((-1.0, 1.0), EYE_CORNERS):
        centre, width, right, down = _eye_frame(points, corners)
        tilt = float(np.degrees(np.arctan2(right[1], right[0])))
        axes = (int(config.zone_radius * width), int(config.zone_radius * FLATTENING * width))
        cv2.ellipse(zone, (int(centre[0]), int(centre[1])), axes, tilt, 0, 360, 1, -1)
        temple = centre + side * right * config.temple_reach * width
        band = np.array([centre - 0.35 * width * down, temple - 0.35 * width * down,
                         temple + 0.3 * width * down, centre + 0.3 * width * down])
        cv2.fillPoly(zone, [np.round(band).astype(np.int32)], 1)
        angles, _, radius, rim = rim_rays(contrast, points, corners, config)
        for angle, r in zip(angles[rim], radius[rim]):
            p = centre + (np.cos(angle) * right + FLATTENING * np.sin(angle) * down) * r * width
            cv2.circle(seeds, (int(p[0]), int(p[1])), max(1, round(2 * size / 512)), 1, -1)
    scale = size / 512.0
    candidates = ((contrast > config.pixel_threshold) & (zone > 0)).astype(np.uint8)
    _, labels = cv2.connectedComponents(candidates, connectivity=8)
    touched = np.unique(labels[(seeds > 0) & (candidates > 0)])
    mask = np.isin(labels, touched[touched > 0]).astype(np.uint8)
    grow = max(1, round(config.grow * scale)) if config.grow > 0 else 0
    if grow > 0:
        mask = cv2.dilate(mask, np.ones((2 * grow + 1,) * 2, np.uint8))
    for brow in BROWS:
        cv2.fillPoly(mask, [np.round(points[list(brow)]).astype(np.int32)], 0)
    return mask


def detect_glasses(image: torch.Tensor, dense_landmarks: torch.Tensor, dense_valid: torch.Tensor,
                   crop_size: int, config: GlassesConfig | None = None) -> GlassesDetection:
    """Find glasses frames in aligned crops.

    Args:
        image: (B, 3, S, S) the aligned crops in [0, 1] (the detail resolution: thin rims need the pixels; crops
            under :data:`MIN_CROP` pixels are not searched).
        dense_landmarks: (B, 478, 2 or 3) FaceMesh points in pixels of the ``crop_size`` crop.
        dense_valid: (B,) 1 where a face has FaceMesh points (faces without them get no glasses).
        crop_size: side of the crop the landmarks are given in.
        config: thresholds (:class:`fitting.config.GlassesConfig`).
    """
    cfg = config or GlassesConfig()
    B, S = image.shape[0], image.shape[-1]
    masks = np.zeros((B, 1, S, S), np.float32)
    scores = np.zeros(B, np.float32)
    window = max(3, int(round(cfg.contrast_window * S / 512)) | 1)
    pixels = (image.detach().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
    landmarks = dense_landmarks[..., :2].detach().cpu().numpy().astype(np.float64) * (S / crop_size)
    for b in range(B):
        if not cfg.enabled or S < MIN_CROP or float(dense_valid[b]) < 0.5:
            continue
        contrast = colour_contrast(pixels[b], window)
        votes = []
        for corners in EYE_CORNERS:
            angles, _, _, rim = rim_rays(contrast, landmarks[b], corners, cfg)
            votes.append(rim[np.sin(angles) > UPPER_SINE])
        scores[b] = float(np.concatenate(votes).mean())
        if scores[b] >= cfg.min_share:
            masks[b, 0] = _frame_mask(contrast, landmarks[b], cfg)
    score = torch.from_numpy(scores).to(image.device)
    return GlassesDetection(torch.from_numpy(masks).to(image), score, score >= cfg.min_share)
