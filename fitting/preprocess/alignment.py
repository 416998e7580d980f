"""Alignment of a photo to the standard 224x224 face crop (Deep3D / FFHQ-UV).

As in the reference (official_formats.md §4.5): five points are taken from
the 68 landmarks (eye centres, nose tip, mouth corners), a POS least-squares
fit against a 3D five-point template gives the face's scale ``s`` (pixels per
model unit) and the photo position ``t`` of the template's origin, and the
photo is scaled by ``s' = rescale_factor / s`` and cropped so that ``t`` lands
on the crop centre. The transform has no rotation (the 3D pose absorbs roll).

Differences from the reference, on purpose:

* one affine warp (``cv2.warpAffine``) replaces PIL's resize then crop, and
  the exact 2x3 transform photo -> crop is kept with its inverse, so outputs
  map back to the photo. The reference rounds the resized image size and the
  crop corner to integers (a shift of up to one pixel); this module does not.
* pixels follow :mod:`models` (top-left origin, y down, centres at +0.5); the
  reference's landmarks are y-up. The POS fit is linear, so fitting in y-down
  pixels gives the same scale and the same origin position.

Templates: with the reference's ``similarity_Lm3D_all.mat`` (decimetres) the
rescale factor is its 102. The default is the ICT-FaceKit mean shape (cm),
with rescale factor focal / camera distance = 1015 / 100 = 10.15 px per cm,
the same quantity as the reference's 102 ≈ 1015 / 10 in decimetres.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np

from utils.safe_load import load_mat

__all__ = [
    "CROP_SIZE",
    "AlignmentTemplate",
    "ICT_TEMPLATE",
    "load_reference_template",
    "five_points",
    "pos_scale_translation",
    "alignment_transform",
    "invert_affine",
    "apply_affine",
    "warp_to_crop",
]

#: Side of the standard aligned crop.
CROP_SIZE = 224


@dataclass(frozen=True)
class AlignmentTemplate:
    """A 3D five-point template.

    Attributes:
        points: (5, 3) eye centre (image left), eye centre (image right),
            nose tip, mouth corner (image left), mouth corner (image right);
            x to the image right, y up, z toward the camera.
        rescale_factor: crop pixels per template unit for a 224 crop.
        name: short description for logs and the processed files' ``info``.
    """

    points: np.ndarray
    rescale_factor: float
    name: str


# The five points of the ICT-FaceKit mean shape in centimetres, after FaceModel recentres the vertices on the
# centroid of the face region (so the origin is that centroid). Derived once with:
#   lm = FaceModel.from_file(ict.npz).mean_shape[landmark_indices]
#   [lm[[36, 39]].mean(0), lm[[42, 45]].mean(0), lm[30], lm[48], lm[54]]
ICT_TEMPLATE = AlignmentTemplate(
    points=np.array(
        [
            [-3.1514, 2.9680, 1.7699],
            [3.1515, 2.9682, 1.7698],
            [0.0000, 0.0319, 5.9396],
            [-2.5349, -3.8936, 3.0580],
            [2.5349, -3.8936, 3.0580],
        ]
    ),
    rescale_factor=1015.0 / 100.0,
    name="ict-facekit mean shape (cm), rescale 10.15",
)

#: The reference's rescale factor for its decimetre template.
REFERENCE_RESCALE_FACTOR = 102.0


def load_reference_template(path: str | os.PathLike) -> AlignmentTemplate:
    """The reference template from ``topo_assets/similarity_Lm3D_all.mat`` (key ``lm``, (68, 3))."""
    lm = load_mat(path, {"lm": (68, 3)})["lm"].astype(np.float64)
    return AlignmentTemplate(five_points(lm), REFERENCE_RESCALE_FACTOR, "similarity_Lm3D_all.mat, rescale 102")


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(..., 68, D) landmarks -> (..., 5, D): eye centres (36/39, 42/45), nose tip 30, mouth corners 48, 54."""
    lm = np.asarray(landmarks)
    return np.stack(
        [
            lm[..., [36, 39], :].mean(-2),
            lm[..., [42, 45], :].mean(-2),
            lm[..., 30, :],
            lm[..., 48, :],
            lm[..., 54, :],
        ],
        axis=-2,
    )


def pos_scale_translation(points2d: np.ndarray, points3d: np.ndarray) -> tuple[float, np.ndarray]:
    """Scaled orthographic fit (POS) of 2D points to 3D points, least squares.

    Solves ``x = a . X + a0`` and ``y = b . X + b0`` for the 8 unknowns.

    Args:
        points2d: (N, 2) image points.
        points3d: (N, 3) template points.

    Returns:
        ``s = (|a| + |b|) / 2`` (pixels per template unit) and the (2,) image
        position ``(a0, b0)`` of the template origin.
    """
    points2d = np.asarray(points2d, np.float64)
    points3d = np.asarray(points3d, np.float64)
    n = len(points3d)
    system = np.zeros((2 * n, 8))
    system[0::2, :3] = points3d
    system[0::2, 3] = 1.0
    system[1::2, 4:7] = points3d
    system[1::2, 7] = 1.0
    k = np.linalg.lstsq(system, points2d.reshape(-1), rcond=None)[0]
    scale = 0.5 * (np.linalg.norm(k[:3]) + np.linalg.norm(k[4:7]))
    return float(scale), k[[3, 7]]


def alignment_transform(
    points5: np.ndarray, template: AlignmentTemplate = ICT_TEMPLATE, crop_size: int = CROP_SIZE
) -> np.ndarray:
    """The (2, 3) transform photo pixels -> crop pixels.

    ``crop = s' (p - t) + crop_size / 2`` with ``s' = rescale_factor
    (crop_size / 224) / s``: the template origin goes to the crop centre.

    Raises:
        ValueError: degenerate points (zero or non-finite scale).
    """
    scale, origin = pos_scale_translation(points5, template.points)
    if not np.isfinite(scale) or scale <= 1e-8 or not np.all(np.isfinite(origin)):
        raise ValueError("degenerate landmarks: the five points give no usable scale")
    zoom = template.rescale_factor * (crop_size / CROP_SIZE) / scale
    centre = crop_size / 2.0
    return np.array([[zoom, 0.0, centre - zoom * origin[0]], [0.0, zoom, centre - zoom * origin[1]]])


def invert_affine(transform: np.ndarray) -> np.ndarray:
    """Inverse of a (2, 3) affine transform."""
    linear = np.linalg.inv(transform[:, :2])
    return np.concatenate([linear, -linear @ transform[:, 2:]], axis=1)


def apply_affine(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(..., 2) points through a (2, 3) transform."""
    return np.asarray(points) @ transform[:, :2].T + transform[:, 2]


def warp_to_crop(image: np.ndarray, transform: np.ndarray, size: int) -> np.ndarray:
    """Resample ``image`` into a ``size`` x ``size`` crop, black outside the photo.

    Shrinking is done in two steps, area averaging to about the target scale
    and then a bicubic warp, so large photos do not alias; enlarging is one
    bicubic warp.

    Args:
        image: (H, W, C) uint8.
        transform: (2, 3) photo -> crop in corner pixel coordinates.

    Returns:
        (size, size, C) uint8.
    """
    transform = np.asarray(transform, np.float64)
    source = image
    zoom = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
    if zoom < 1.0:
        height, width = image.shape[:2]
        corners = apply_affine(invert_affine(transform), np.array([[0, 0], [size, 0], [0, size], [size, size]]))
        x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int) - 2, 0)
        x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 2, [width, height])
        if x1 <= x0 or y1 <= y0:
            return np.zeros((size, size) + image.shape[2:], image.dtype)
        new_size = (max(1, round((x1 - x0) * zoom)), max(1, round((y1 - y0) * zoom)))
        source = cv2.resize(image[y0:y1, x0:x1], new_size, interpolation=cv2.INTER_AREA)
        factors = np.array([new_size[0] / (x1 - x0), new_size[1] / (y1 - y0)])
        # photo p = region q / factors + (x0, y0)
        linear = transform[:, :2] / factors
        transform = np.concatenate([linear, (transform[:, :2] @ [x0, y0] + transform[:, 2])[:, None]], axis=1)
    return cv2.warpAffine(
        np.ascontiguousarray(source), opencv_affine(transform), (size, size), flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_CONSTANT, borderValue=0,
    )


def opencv_affine(transform: np.ndarray) -> np.ndarray:
    """A (2, 3) transform between our pixel coordinates (centres at +0.5) as the matrix
    ``cv2.warpAffine`` expects (centres at integer coordinates)."""
    transform = np.asarray(transform, np.float64)
    shift = transform[:, :2] @ [0.5, 0.5] + transform[:, 2] - 0.5
    return np.concatenate([transform[:, :2], shift[:, None]], axis=1)
