"""The whites of the eyes as a light probe.

The sclera's reflectance is close to the same pale, nearly grey colour in
everyone, whatever the skin, so its colour in the photo is mostly the
scene's light: the cue that tells a green scene from green skin, and a dim
scene from dark skin (:class:`models.light_prior.LightSkinPrior` combines it
with the face's colour). The sclera is the part of FaceMesh's eye contour
outside the iris circle, shrunk away from the lids; its colour is the
per-channel median of the brighter half of those pixels (lashes, lid
shadows and the iris's rim are the darker half).

The iris's colour (what the display eyeballs are painted with,
:mod:`models.part_texture`) is measured in the same way: the pixels of the
iris circle inside the shrunk eye contour, less the pupil, their
per-channel median after the brightest fifth (the light's reflection on the
cornea) is left out. :func:`eye_colours` turns the two into reflectances.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from models.colour import linear_to_srgb, srgb_to_linear
from models.part_texture import DEFAULT_IRIS, DEFAULT_SCLERA, EyeColours
from models.shading import sh_shading

__all__ = ["sclera_colour", "sclera_masks", "iris_colour", "eye_albedo", "eye_colours", "EYE_CONTOURS", "IRISES",
           "MIN_SCLERA_SHARE", "MIN_IRIS_SHARE"]

#: FaceMesh's eye contours (closed polygons, 16 points each).
EYE_CONTOURS = (
    (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246),
    (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466),
)
#: FaceMesh's iris points: the centre, then four points on the rim.
IRISES = ((468, 469, 470, 471, 472), (473, 474, 475, 476, 477))
#: Sclera pixels needed, as a share of the squared eye width summed over both eyes (a closed or hidden eye
#: gives fewer).
MIN_SCLERA_SHARE = 0.025
#: Iris pixels needed, as a share of the area of the two iris circles.
MIN_IRIS_SHARE = 0.25
#: The pupil's radius as a share of the iris's, left out of the iris's colour.
PUPIL_SHARE = 0.35
#: The eye contour is shrunk by this share of the eye's width before the iris is cut out.
LID_MARGIN = 0.04
#: The iris circle is enlarged by this factor (its dark rim and the lid shadow above it).
IRIS_MARGIN = 1.05


def _open_eye(points: np.ndarray, contour: tuple[int, ...], size: int) -> np.ndarray:
    """(size, size) uint8: one eye's contour filled and shrunk away from the lids by :data:`LID_MARGIN`."""
    polygon = points[list(contour), :2]
    width = float(np.linalg.norm(polygon[0] - polygon[8]))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    margin = int(round(LID_MARGIN * width))
    if margin > 0:
        mask = cv2.erode(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    return mask


def _iris_circle(iris_points: np.ndarray) -> tuple[np.ndarray, float]:
    centre = iris_points[0, :2]
    return centre, float(np.linalg.norm(iris_points[1:, :2] - centre, axis=1).mean())


def _eye_mask(points: np.ndarray, contour: tuple[int, ...], iris_points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: one eye's sclera."""
    mask = _open_eye(points, contour, size)
    (x, y), radius = _iris_circle(iris_points)
    cv2.circle(mask, (int(round(x * 4)), int(round(y * 4))), int(round(radius * IRIS_MARGIN * 4)), 0, -1, shift=2)
    return mask.astype(bool)


def _iris_mask(points: np.ndarray, contour: tuple[int, ...], iris_points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: one eye's visible iris without its pupil."""
    eye = _open_eye(points, contour, size)
    (x, y), radius = _iris_circle(iris_points)
    iris = np.zeros((size, size), np.uint8)
    cv2.circle(iris, (int(round(x * 4)), int(round(y * 4))), int(round(radius * 4 / IRIS_MARGIN)), 1, -1, shift=2)
    cv2.circle(iris, (int(round(x * 4)), int(round(y * 4))), int(round(radius * PUPIL_SHARE * 4)), 0, -1, shift=2)
    return (eye & iris).astype(bool)


def _eyes(points: np.ndarray):
    """Each eye's contour and its iris's five points (FaceMesh's iris order follows the image, not the
    subject: each contour takes the iris whose centre is nearer)."""
    for contour, iris in zip(EYE_CONTOURS, IRISES):
        iris_points = points[list(iris)]
        other = points[list(IRISES[1] if iris == IRISES[0] else IRISES[0])]
        eye_centre = points[list(contour), :2].mean(0)
        if np.linalg.norm(other[0, :2] - eye_centre) < np.linalg.norm(iris_points[0, :2] - eye_centre):
            iris_points = other
        yield contour, iris_points


def sclera_masks(dense_landmarks: torch.Tensor, dense_valid: torch.Tensor, landmark_size: int,
                 image_size: int) -> np.ndarray:
    """Sclera pixels of each face, (B, image_size, image_size) bool (all False without FaceMesh points).

    Args:
        dense_landmarks: (B, 478, 3) FaceMesh points in pixels of a ``landmark_size`` crop.
        dense_valid: (B,) 1 where the points are valid.
        landmark_size, image_size: sides of the crop the points are in and of the image to mask.
    """
    scale = image_size / landmark_size
    points = dense_landmarks.detach().cpu().numpy() * scale
    masks = np.zeros((len(points), image_size, image_size), bool)
    for b in range(len(points)):
        if not dense_valid[b]:
            continue
        for contour, iris_points in _eyes(points[b]):
            masks[b] |= _eye_mask(points[b], contour, iris_points, image_size)
    return masks


def sclera_colour(image: torch.Tensor, dense_landmarks: torch.Tensor, dense_valid: torch.Tensor,
                  landmark_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The whites of the eyes' colour in each photo.

    Args:
        image: (B, 3, H, H) the aligned crops (any resolution of the same crop), RGB in [0, 1].
        dense_landmarks: (B, 478, 3) FaceMesh points in pixels of a ``landmark_size`` crop.
        dense_valid: (B,) 1 where the points are valid.
        landmark_size: side of the crop the points are in.

    Returns:
        colour (B, 3), the median of the brighter half of the sclera pixels
        (zeros where not observed), and observed (B,) bool: enough sclera
        pixels (:data:`MIN_SCLERA_SHARE`; closed, hidden or undetected eyes are not).
    """
    def measure(points: np.ndarray, pixels: torch.Tensor) -> torch.Tensor | None:
        mask = np.zeros(pixels.shape[:2], bool)
        for contour, iris_points in _eyes(points):
            mask |= _eye_mask(points, contour, iris_points, len(mask))
        widths = [np.linalg.norm(points[c[0], :2] - points[c[8], :2]) for c in EYE_CONTOURS]
        sclera = pixels[torch.from_numpy(mask)]
        if len(sclera) < MIN_SCLERA_SHARE * sum(w**2 for w in widths):
            return None
        brightness = sclera.mean(1)
        return sclera[brightness >= brightness.median()].median(0).values

    return _per_face(image, dense_landmarks, dense_valid, landmark_size, measure)


def _per_face(image: torch.Tensor, dense_landmarks: torch.Tensor, dense_valid: torch.Tensor, landmark_size: int,
              measure) -> tuple[torch.Tensor, torch.Tensor]:
    """``measure(points (478, 3) in the image's pixels, pixels (H, H, 3)) -> (3,) colour or None`` of each face
    with valid points: colours (B, 3) (zeros where not measured) and observed (B,) bool."""
    size = image.shape[-1]
    pixels = image.detach().permute(0, 2, 3, 1).cpu()
    colour = torch.zeros(len(image), 3)
    observed = torch.zeros(len(image), dtype=torch.bool)
    points = dense_landmarks.detach().cpu().numpy() * (size / landmark_size)
    for b in range(len(image)):
        value = measure(points[b], pixels[b]) if dense_valid[b] else None
        if value is not None:
            colour[b], observed[b] = value, True
    return colour.to(image.device), observed.to(image.device)


def iris_colour(image: torch.Tensor, dense_landmarks: torch.Tensor, dense_valid: torch.Tensor,
                landmark_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The irises' colour in each photo (see the module docstring).

    Args and returns: as :func:`sclera_colour`; observed where the visible iris pixels, pupils left out, are
    at least :data:`MIN_IRIS_SHARE` of the two iris circles' area.
    """
    def measure(points: np.ndarray, pixels: torch.Tensor) -> torch.Tensor | None:
        mask = np.zeros(pixels.shape[:2], bool)
        area = 0.0
        for contour, iris_points in _eyes(points):
            mask |= _iris_mask(points, contour, iris_points, len(mask))
            area += np.pi * _iris_circle(iris_points)[1] ** 2
        iris = pixels[torch.from_numpy(mask)]
        if len(iris) < max(MIN_IRIS_SHARE * area, 8):
            return None
        brightness = iris.mean(1)
        return iris[brightness <= brightness.quantile(0.8)].median(0).values

    return _per_face(image, dense_landmarks, dense_valid, landmark_size, measure)


def eye_albedo(colour: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """(B, 3) the reflectance of an eye's colour (B, 3) in the photo, divided by the irradiance of the fitted
    SH light (B, 27) on a surface facing the camera (the eyes look roughly at it)."""
    facing = torch.tensor([[[0.0, 0.0, 1.0]]], dtype=gamma.dtype, device=gamma.device).expand(len(gamma), 1, 3)
    irradiance = sh_shading(facing, gamma)[:, 0]
    return (colour / irradiance.clamp_min(1e-3)).clamp(0, 1)


def eye_colours(metrics: dict, gamma: torch.Tensor) -> EyeColours:
    """The eyes' reflectance of B fits from stage 1's ``sclera_*`` and ``iris_*`` metrics, (B,) each.

    The whites of the eyes have nearly the same reflectance in everyone (the premise of the light probe), so
    the sclera is :data:`~models.part_texture.DEFAULT_SCLERA` and serves as the reference white of the iris:
    the iris is its photo colour over the sclera's photo colour, both under the same light (in linear light:
    the photo's and the map's values are sRGB-encoded), times that reflectance. This ratio removes the
    scene's light and colour cast whatever the fit made of them. An iris seen without a measurable sclera
    is de-lit by the final light ``gamma`` (B, 27) (:func:`eye_albedo`); an iris not seen (closed or hidden
    eyes, no FaceMesh) is :data:`~models.part_texture.DEFAULT_IRIS`.
    """
    B = len(gamma)
    kw = {"dtype": gamma.dtype, "device": gamma.device}
    sclera = torch.tensor([DEFAULT_SCLERA], **kw).expand(B, 3)
    iris = torch.tensor([DEFAULT_IRIS], **kw).expand(B, 3)

    def measured(part: str) -> tuple[torch.Tensor, torch.Tensor]:
        if f"{part}_observed" not in metrics:
            return torch.zeros(B, 3, **kw), torch.zeros(B, 1, dtype=torch.bool, device=gamma.device)
        colour = torch.stack([torch.as_tensor(metrics[f"{part}_{c}"], **kw).reshape(B) for c in "rgb"], 1)
        return colour, torch.as_tensor(metrics[f"{part}_observed"], **kw).reshape(B, 1) > 0

    sclera_photo, sclera_seen = measured("sclera")
    iris_photo, iris_seen = measured("iris")
    ratio = srgb_to_linear(iris_photo) / srgb_to_linear(sclera_photo).clamp_min(1e-4)  # in linear light
    relative = linear_to_srgb(ratio * srgb_to_linear(sclera))
    iris = torch.where(iris_seen, eye_albedo(iris_photo, gamma), iris)
    iris = torch.where(iris_seen & sclera_seen, relative, iris)
    return EyeColours(sclera=sclera, iris=iris)
