"""The whites of the eyes as a light probe.

The sclera's reflectance is close to the same pale, nearly grey colour in
everyone, whatever the skin, so its colour in the photo is mostly the
scene's light: the cue that tells a green scene from green skin, and a dim
scene from dark skin (:class:`models.light_prior.LightSkinPrior` combines it
with the face's colour). The sclera is the part of FaceMesh's eye contour
outside the iris circle, shrunk away from the lids; its colour is the
per-channel median of the brighter half of those pixels (lashes, lid
shadows and the iris's rim are the darker half).
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["sclera_colour", "sclera_masks", "EYE_CONTOURS", "IRISES", "MIN_SCLERA_SHARE"]

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
#: The eye contour is shrunk by this share of the eye's width before the iris is cut out.
LID_MARGIN = 0.04
#: The iris circle is enlarged by this factor (its dark rim and the lid shadow above it).
IRIS_MARGIN = 1.05


def _eye_mask(points: np.ndarray, contour: tuple[int, ...], iris_points: np.ndarray, size: int) -> np.ndarray:
    """(size, size) bool: one eye's sclera."""
    polygon = points[list(contour), :2]
    width = float(np.linalg.norm(polygon[0] - polygon[8]))
    mask = np.zeros((size, size), np.uint8)
    cv2.fillPoly(mask, [np.round(polygon * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    margin = int(round(LID_MARGIN * width))
    if margin > 0:
        mask = cv2.erode(mask, np.ones((2 * margin + 1, 2 * margin + 1), np.uint8))
    centre = iris_points[0, :2]
    radius = float(np.linalg.norm(iris_points[1:, :2] - centre, axis=1).mean()) * IRIS_MARGIN
    cv2.circle(mask, (int(round(centre[0] * 4)), int(round(centre[1] * 4))), int(round(radius * 4)), 0, -1,
               shift=2)
    return mask.astype(bool)


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
        for contour, iris in zip(EYE_CONTOURS, IRISES):
            iris_points = points[b, list(iris)]
            # FaceMesh's iris order follows the image, not the subject: take the iris whose centre is nearer.
            other = points[b, list(IRISES[1] if iris == IRISES[0] else IRISES[0])]
            eye_centre = points[b, list(contour), :2].mean(0)
            if np.linalg.norm(other[0, :2] - eye_centre) < np.linalg.norm(iris_points[0, :2] - eye_centre):
                iris_points = other
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
    size = image.shape[-1]
    masks = sclera_masks(dense_landmarks, dense_valid, landmark_size, size)
    pixels = image.detach().permute(0, 2, 3, 1).cpu()
    colour = torch.zeros(len(image), 3)
    observed = torch.zeros(len(image), dtype=torch.bool)
    points = dense_landmarks.detach().cpu().numpy() * (size / landmark_size)
    for b in range(len(image)):
        if not dense_valid[b]:
            continue
        widths = [np.linalg.norm(points[b, c[0], :2] - points[b, c[8], :2]) for c in EYE_CONTOURS]
        sclera = pixels[b][torch.from_numpy(masks[b])]
        if len(sclera) < MIN_SCLERA_SHARE * sum(w**2 for w in widths):
            continue
        brightness = sclera.mean(1)
        bright = sclera[brightness >= brightness.median()]
        colour[b] = bright.median(0).values
        observed[b] = True
    return colour.to(image.device), observed.to(image.device)
