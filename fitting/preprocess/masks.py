"""Skin and parse masks of the aligned face crop.

Both masks are (H, W) float32 in [0, 1] on the crop (the preprocessor stores
them as (1, 1, 224, 224)). The **skin mask** weights the photometric loss:
it should cover visible facial skin only. The **parse mask** follows the
reference's definition (official_formats.md §4.4): the face including brows,
nose and lips, without the eyes, the inner mouth, glasses, hair, ears, neck
and background.

Two ways to make them:

* **BiSeNet parsing** (:class:`FaceParser`, when
  ``checkpoints/parsing_model/79999_iter.pth`` is present). The network
  labels a 512x512 version of the aligned crop (the reference labels the
  whole photo squashed to 512x512; CelebAMask-HQ, its training set, is made
  of aligned face crops, so the crop is the closer input). Then, as in the
  reference, ``parse = face{1,2,3,4,5,10,11,12,13} x (1 - mouth{11}) x
  (1 - eyes{4,5})``. The reference's skin mask comes from a skin-colour GMM
  whose constants are not available, so here ``skin = classes {1 skin,
  10 nose}``: the labels already exclude brows, eyes, glasses, lips, mouth,
  ears, neck, hair and hat. Label masks are area-averaged from 512 to the
  crop size, giving soft edges like the reference's bicubic resize.
* **Landmarks and skin colour** (:func:`landmark_masks`, the default without
  the checkpoint). A face region is built from the 68 landmarks (the hull of
  the jaw line and of the brows raised over the forehead); eyes, brows, lips
  and nostrils are cut out as polygons grown from their landmarks. Colour
  models fitted on this image then remove what is inside the region but is
  not skin (hair and fringes, beards, glasses frames, face masks, background
  at the face's edge, specular highlights): skin is a robust Gaussian in
  CIELAB fitted on up to four sample regions placed by the landmarks
  (forehead, nose bridge, upper cheeks; regions of a non-skin hue or that
  disagree with the others are left out), and the colours of a ring around
  the face, clustered, compete with it (skin-like clusters such as the neck
  are ignored). A small closing fills freckles and pores. The parse mask is
  the face region without the eyes and the inner mouth, with the same colour
  test (closed more widely) except on the brows, lips and nose, which it
  keeps. Limits: hair or background of skin colour (some blond hair, warm
  backgrounds in low light) can stay in, and skin-coloured occluders (hands)
  cannot be told from skin; parsing handles those better.
"""

from __future__ import annotations

import itertools
import logging
import os

import cv2
import numpy as np
import torch

from models.networks.bisenet import load_bisenet

__all__ = [
    "PARSE_FACE_CLASSES",
    "SKIN_CLASSES",
    "FaceParser",
    "parsing_masks",
    "landmark_regions",
    "skin_colour_probability",
    "landmark_masks",
]

logger = logging.getLogger(__name__)

#: BiSeNet classes of the reference's "face": skin, brows, eyes, nose, mouth, lips.
PARSE_FACE_CLASSES = (1, 2, 3, 4, 5, 10, 11, 12, 13)
#: BiSeNet classes of our skin mask: skin and nose.
SKIN_CLASSES = (1, 10)
EYE_CLASSES = (4, 5)
MOUTH_CLASS = 11
#: Side of the BiSeNet input.
PARSING_SIZE = 512
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FaceParser:
    """BiSeNet labels of an aligned face crop.

    Args:
        checkpoint: path of face-parsing.PyTorch's ``79999_iter.pth``.
        device: torch device.
    """

    def __init__(self, checkpoint: str | os.PathLike, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = load_bisenet(checkpoint).to(self.device)
        self._mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        """(S, S, 3) uint8 RGB crop (S = 512 preferred) -> (S, S) int64 labels."""
        x = torch.from_numpy(np.ascontiguousarray(image)).to(self.device).permute(2, 0, 1)[None].float() / 255.0
        logits = self.net((x - self._mean) / self._std)
        return logits.argmax(1)[0].cpu().numpy()


def parsing_masks(labels: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Skin and parse masks (size, size) float32 from BiSeNet labels (S, S), area-resized."""
    face = np.isin(labels, PARSE_FACE_CLASSES)
    parse = face & (labels != MOUTH_CLASS) & ~np.isin(labels, EYE_CLASSES)
    skin = np.isin(labels, SKIN_CLASSES)

    def resize(mask: np.ndarray) -> np.ndarray:
        return cv2.resize(mask.astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)

    return resize(skin), resize(parse)


# --------------------------------------------------------------------------------------------------------------------
# Landmark and colour path. Lengths below are fractions of the inter-ocular distance (IOD) or of a feature's width,
# so they hold at any crop scale and shrink with the face on profile views.

_SUBPIXEL_BITS = 4  # fillPoly's fractional bits: polygon vertices at 1/16 pixel.


def _fill(points: np.ndarray, size: int) -> np.ndarray:
    mask = np.zeros((size, size), np.uint8)
    pts = np.round(np.asarray(points, np.float64) * (1 << _SUBPIXEL_BITS)).astype(np.int32)
    # Corner coordinates -> OpenCV's pixel-centre coordinates.
    pts -= 1 << (_SUBPIXEL_BITS - 1)
    cv2.fillPoly(mask, [pts], 255, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
    return mask.astype(np.float32) / 255.0


def _grow(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilate a soft mask by ``radius`` pixels (elliptic kernel)."""
    r = max(1, int(round(radius)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.dilate(mask, kernel)


def _close(mask: np.ndarray, radius: float) -> np.ndarray:
    """Grey-level morphological closing (dilate then erode) with an elliptic kernel of ``radius`` pixels."""
    r = max(1, int(round(radius)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    return cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)


def _up_vector(lm: np.ndarray) -> np.ndarray:
    """Unit vector from the mouth toward the brows, perpendicular to the eye line (y-down pixels)."""
    eye_line = lm[42:48].mean(0) - lm[36:42].mean(0)
    up = np.array([eye_line[1], -eye_line[0]])
    return up / max(np.linalg.norm(up), 1e-6)


def _band(points: np.ndarray, up: np.ndarray, above: float, below: float) -> np.ndarray:
    """Polygon around a polyline: shifted ``above`` along ``up`` and ``below`` against it."""
    return np.concatenate([points + above * up, (points - below * up)[::-1]])


def landmark_regions(landmarks: np.ndarray, size: int) -> dict[str, np.ndarray]:
    """Soft (size, size) region masks from (68, 2) crop landmarks.

    Returns:
        ``face`` (jaw hull + forehead), ``eyes``, ``brows``, ``lips`` (outer
        lip contour), ``inner_mouth``, ``nostrils``, ``nose`` (bridge to
        nostrils), ``colour_samples`` (4, size, size): forehead, nose
        bridge, left and right upper cheek, and ``surroundings`` (a ring
        around the face region).
    """
    lm = np.asarray(landmarks, np.float64)
    up = _up_vector(lm)
    iod = float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))
    brow_mid = lm[17:27].mean(0)
    brow_to_chin = float(np.dot(brow_mid - lm[8], up))
    # Forehead: the brows raised by half the brow-to-chin height, less at the temples (a rounded top).
    taper = np.array([0.55, 0.8, 0.93, 1.0, 1.0, 1.0, 1.0, 0.93, 0.8, 0.55])
    forehead_top = lm[17:27] + np.outer(taper * 0.5 * max(brow_to_chin, 0.0), up)
    face = _fill(cv2.convexHull(np.concatenate([lm[0:17], forehead_top]).astype(np.float32))[:, 0], size)

    eyes = np.maximum(_fill(lm[36:42], size), _fill(lm[42:48], size))
    eye_width = 0.5 * (np.linalg.norm(lm[39] - lm[36]) + np.linalg.norm(lm[45] - lm[42]))
    eyes = _grow(eyes, 0.22 * eye_width)
    # dlib's brow points follow the brow's upper edge.
    brows = np.maximum(
        _fill(_band(lm[17:22], up, 0.12 * eye_width, 0.42 * eye_width), size),
        _fill(_band(lm[22:27], up, 0.12 * eye_width, 0.42 * eye_width), size),
    )
    mouth_width = float(np.linalg.norm(lm[54] - lm[48]))
    lips = _grow(_fill(lm[48:60], size), 0.08 * mouth_width)
    inner_mouth = _fill(lm[60:68], size)
    nose_bottom = lm[31:36]
    nostril_height = 0.45 * float(np.linalg.norm(lm[30] - lm[33]))
    nostrils = _grow(_fill(_band(nose_bottom, up, nostril_height, 0.05 * iod), size), 0.04 * iod)
    right = np.array([-up[1], up[0]])
    nose_outline = np.concatenate([[lm[27] - 0.12 * iod * right], lm[31:36], [lm[27] + 0.12 * iod * right]])
    nose = np.maximum(_fill(nose_outline, size), nostrils)

    def shrink(points: np.ndarray, factor: float) -> np.ndarray:
        centre = points.mean(0)
        return centre + factor * (points - centre)

    # Skin colour sample regions, each rarely covered by hair, beard or glasses (skin_colour_probability keeps the
    # ones whose colours agree, so a fringe, a face mask or a glasses bridge over one of them does no harm).
    forehead_patch = np.concatenate([lm[19:25] + 0.15 * iod * up, (lm[19:25] + 0.45 * iod * up)[::-1]])
    bridge = np.stack([lm[27] - 0.08 * iod * right, lm[27] + 0.08 * iod * right,
                       lm[29] + 0.08 * iod * right, lm[29] - 0.08 * iod * right])
    left_cheek = shrink(lm[[41, 40, 31, 2, 1]], 0.7)  # below the lower lid, above the nostril line
    right_cheek = shrink(lm[[46, 47, 35, 14, 15]], 0.7)
    samples = np.stack([_fill(points, size) for points in (forehead_patch, bridge, left_cheek, right_cheek)])
    # A ring around the face region: hair, background, clothes, the beard below the chin (and neck and ears,
    # which skin_colour_probability recognises as skin-like and drops).
    surroundings = _grow(face, 0.3 * iod) * (1.0 - _grow(face, 0.06 * iod))
    return {
        "face": face, "surroundings": surroundings, "eyes": eyes, "brows": brows, "lips": lips,
        "inner_mouth": inner_mouth, "nostrils": nostrils, "nose": nose, "colour_samples": samples,
    }


#: Standard deviations (L, a, b) added to every fitted spread: JPEG noise and very uniform regions.
_COLOUR_FLOOR = np.array([4.0, 2.0, 2.0])
#: Lightness spread multiplier of the skin model: shading varies lightness over the face more than on the cheeks.
_LIGHTNESS_SPREAD = 1.5
#: Mahalanobis distances from the skin model where the probability starts to fall and reaches 0.
_DISTANCE_SOFT, _DISTANCE_HARD = 3.0, 4.5
#: Colour clusters of the surroundings (hair, background, clothes, beard) competing with the skin model.
_SURROUNDING_CLUSTERS = 5
#: A surrounding cluster whose mean is this close to the skin model is skin itself (neck, ears) and is dropped.
_SKIN_LIKE_CLUSTER = 1.5
#: Sample regions agree when their median colours differ by less than this (CIELAB, lightness counted half).
_REGION_AGREEMENT = 20.0
#: Preference among equally large groups of agreeing regions (forehead, nose bridge, cheeks).
_REGION_PRIORITY = (1.0, 2.0, 1.0, 1.0)
_MIN_SAMPLES = 30
_MAX_SAMPLES = 4000


def _to_lab(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H*W, 3) float64 CIELAB (L in [0, 100])."""
    return cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(np.float64)


def _subsample(samples: np.ndarray, count: int) -> np.ndarray:
    if len(samples) <= count:
        return samples
    return samples[np.linspace(0, len(samples) - 1, count).astype(int)]


def _robust_gaussian(samples: np.ndarray, iterations: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of (N, 3) samples, refitted on the samples within chi2(3) 97.5 % (d^2 < 9.35)."""
    mean = np.median(samples, 0)
    mad = np.median(np.abs(samples - mean), 0) * 1.4826
    cov = np.diag(mad**2 + _COLOUR_FLOOR**2)
    for _ in range(iterations):
        diff = samples - mean
        d2 = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
        inliers = samples[d2 < 9.35]
        if len(inliers) < _MIN_SAMPLES:
            break
        mean = inliers.mean(0)
        cov = np.cov(inliers, rowvar=False) + np.diag(_COLOUR_FLOOR**2)
    return mean, cov


def _skin_like(colour: np.ndarray) -> bool:
    """Whether a CIELAB colour has a skin's chroma and hue (any lightness): 6-45 chroma, hue 15-85 degrees."""
    chroma = float(np.hypot(colour[1], colour[2]))
    hue = float(np.degrees(np.arctan2(colour[2], colour[1])))
    return 6.0 <= chroma <= 45.0 and 15.0 <= hue <= 85.0


def _agreeing_regions(regions: list[np.ndarray]) -> list[int]:
    """Indices of the sample regions to fit the skin model on.

    Regions whose median colour is not skin-like (a white, blue or black face
    mask over the cheeks, a glasses bridge) are set aside, unless none is
    skin-like (grayscale or strongly tinted photos). Among the rest, the
    largest group whose medians agree pairwise is kept; ties go to the higher
    ``_REGION_PRIORITY``, then to more pixels.
    """
    usable = [i for i, r in enumerate(regions) if len(r) >= _MIN_SAMPLES // 2]
    medians = {i: np.median(regions[i], 0) for i in usable}
    usable = [i for i in usable if _skin_like(medians[i])] or usable
    weight = np.array([0.5, 1.0, 1.0])

    def agree(group: tuple[int, ...]) -> bool:
        return all(
            np.linalg.norm((medians[i] - medians[j]) * weight) < _REGION_AGREEMENT
            for i, j in itertools.combinations(group, 2)
        )

    def preference(group: tuple[int, ...]) -> tuple[int, float, int]:
        return len(group), sum(_REGION_PRIORITY[i] for i in group), sum(len(regions[i]) for i in group)

    groups = [g for size in range(1, len(usable) + 1) for g in itertools.combinations(usable, size) if agree(g)]
    return list(max(groups, key=preference)) if groups else []


def _log_gaussian(x: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log density (up to a shared constant) and Mahalanobis distance of (N, 3) points."""
    diff = x - mean
    d2 = np.einsum("ni,ij,nj->n", diff, np.linalg.inv(cov), diff)
    return -0.5 * (d2 + np.linalg.slogdet(cov)[1]), np.sqrt(d2)


def _surrounding_clusters(samples: np.ndarray, skin_mean: np.ndarray, skin_cov: np.ndarray):
    """Gaussian clusters (weight, mean, cov) of the non-skin colours around the face (k-means in CIELAB)."""
    samples = _subsample(samples, _MAX_SAMPLES)
    k = min(_SURROUNDING_CLUSTERS, len(samples) // _MIN_SAMPLES)
    if k < 1:
        return []
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, labels, _ = cv2.kmeans(samples.astype(np.float32), k, None, criteria, 2, cv2.KMEANS_PP_CENTERS)
    labels = labels[:, 0]
    clusters = []
    for j in range(k):
        members = samples[labels == j]
        if len(members) < _MIN_SAMPLES:
            continue
        mean = members.mean(0)
        if _log_gaussian(mean[None], skin_mean, skin_cov)[1][0] < _SKIN_LIKE_CLUSTER:
            continue
        clusters.append((len(members) / len(samples), mean, np.cov(members, rowvar=False) + np.diag(_COLOUR_FLOOR**2)))
    return clusters


def skin_colour_probability(
    image: np.ndarray, skin_samples: np.ndarray, surrounding_samples: np.ndarray | None = None
) -> np.ndarray:
    """Per-pixel skin probability in [0, 1] from colour models fitted on this image.

    Skin is a robust Gaussian in CIELAB of the pixels of the ``skin_samples``
    regions whose colours agree (see :func:`_agreeing_regions`), lightness
    given ``_LIGHTNESS_SPREAD`` times the spread. The colours of
    ``surrounding_samples`` (hair, background, clothes, beard around the
    face), clustered, compete with it: the probability is the skin posterior
    against those clusters (equal priors), times a cap that falls from 1 to 0
    between ``_DISTANCE_SOFT`` and ``_DISTANCE_HARD`` standard deviations from
    the skin model.

    Args:
        image: (H, W, 3) uint8 RGB.
        skin_samples: (R, H, W) sample regions (weights; pixels above 0.5 are samples).
        surrounding_samples: (H, W) weights of the same kind.

    Returns:
        (H, W) float32, lightly smoothed. All ones when there are too few skin samples.
    """
    lab = _to_lab(image)
    regions = [lab[region.reshape(-1) > 0.5] for region in skin_samples]
    chosen = np.concatenate([regions[i] for i in _agreeing_regions(regions)] + [np.zeros((0, 3))])
    if len(chosen) < _MIN_SAMPLES:
        logger.debug("only %d skin colour samples: colour test skipped", len(chosen))
        return np.ones(image.shape[:2], np.float32)
    mean, cov = _robust_gaussian(chosen)
    spread = np.diag([_LIGHTNESS_SPREAD, 1.0, 1.0])
    cov = spread @ cov @ spread
    log_skin, distance = _log_gaussian(lab, mean, cov)
    probability = np.clip((_DISTANCE_HARD - distance) / (_DISTANCE_HARD - _DISTANCE_SOFT), 0.0, 1.0)
    if surrounding_samples is not None:
        clusters = _surrounding_clusters(lab[surrounding_samples.reshape(-1) > 0.5], mean, cov)
        if clusters:
            log_other = np.stack([np.log(w) + _log_gaussian(lab, m, c)[0] for w, m, c in clusters])
            log_other = log_other.max(0) + np.log(np.exp(log_other - log_other.max(0)).sum(0))
            probability *= 1.0 / (1.0 + np.exp(np.clip(log_other - log_skin, -50.0, 50.0)))
    probability = probability.reshape(image.shape[:2]).astype(np.float32)
    return cv2.GaussianBlur(probability, (0, 0), 1.0)


def landmark_masks(
    image: np.ndarray, landmarks: np.ndarray, valid: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Skin and parse masks from landmarks and per-image colour models.

    Args:
        image: (S, S, 3) uint8 aligned crop.
        landmarks: (68, 2) crop pixel coordinates.
        valid: (S, S) float, 1 where the crop shows the photo (0 in the black
            border outside it); None for all valid.

    Returns:
        ``skin``, ``parse``: (S, S) float32 in [0, 1].
    """
    size = image.shape[0]
    regions = landmark_regions(landmarks, size)
    valid = np.ones((size, size), np.float32) if valid is None else valid.astype(np.float32)
    colour = skin_colour_probability(image, regions["colour_samples"] * valid[None], regions["surroundings"] * valid)
    iod = float(np.linalg.norm(np.mean(landmarks[42:48], 0) - np.mean(landmarks[36:42], 0)))
    # Closing fills freckles, pores and thin specks (skin) and, for the parse mask, small highlights too.
    features = np.maximum.reduce([regions["eyes"], regions["brows"], regions["lips"], regions["nostrils"]])
    skin = regions["face"] * (1.0 - features) * _close(colour, 0.05 * iod) * valid
    keep = np.maximum.reduce([regions["brows"], regions["lips"], regions["nose"]])
    parse = regions["face"] * (1.0 - regions["eyes"]) * (1.0 - regions["inner_mouth"])
    parse = parse * np.maximum(_close(colour, 0.12 * iod), keep)
    return skin.astype(np.float32), (parse * valid).astype(np.float32)
