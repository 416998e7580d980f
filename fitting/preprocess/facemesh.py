"""MediaPipe FaceMesh: 478 dense landmarks (468 face points, refined eyes and lips, 2 x 5 iris points).

The ``mediapipe==0.10.14`` wheel ships the models it runs offline
(``face_detection_short_range.tflite`` and
``face_landmark_with_attention.tflite``). :class:`FaceMesh` runs it on a
square crop around a face box from :mod:`~fitting.preprocess.detection`, so
small faces in large photos and every face of a group photo are seen at a
good scale; the points are mapped back to photo pixels. Its ``z`` is a
relative depth in the same pixel units (smaller is nearer the camera).

The points follow the FaceMesh topology: a fixed place on the face each,
also where it is hidden (on a turned head the far cheek's points are
predicted behind the silhouette), which is why the shape fit weighs them by
their visibility (:mod:`fitting.landmark_fit`). The iBUG-68 set is taken
from them by the table of :mod:`fitting.preprocess.landmark_tables`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from utils.errors import FileFormatError, MissingAssetError
from utils.safe_load import load_npz

from .alignment import opencv_affine

__all__ = ["NUM_POINTS", "DEFAULT_IBUG68_TABLE", "FaceMesh", "mediapipe_face_boxes", "Ibug68Table",
           "load_ibug68_table"]

logger = logging.getLogger(__name__)

#: Points FaceMesh returns with refined eyes and lips (the last 10 are the irises).
NUM_POINTS = 478
#: The FaceMesh -> iBUG-68 table this project builds (``scripts/register_facemesh.py``).
DEFAULT_IBUG68_TABLE = Path(__file__).resolve().parents[2] / "checkpoints" / "default" / "facemesh_ibug68.npz"
#: Side of the crop FaceMesh runs on (its own detector then finds the face in it).
CROP_SIZE = 384
#: The crop's side as a multiple of the face box's larger side: room for the forehead, ears and a turned head.
CROP_SCALE = 2.0


#: Seconds to keep fd 2 closed after a graph's first run: its worker threads log their start-up just after.
_SETTLE_SECONDS = 0.3


@contextlib.contextmanager
def _quiet_native_logs(settle: float = 0.0):
    """MediaPipe's C++ side writes INFO/WARNING lines straight to fd 2 (from its worker threads too, just after
    a graph's first run: ``settle`` waits for them), and its protobuf use warns of a deprecation on every
    call; keep both off the console."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null, warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
            os.dup2(null.fileno(), 2)
            yield
            time.sleep(settle)
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    with _quiet_native_logs():
        import mediapipe

    return mediapipe


class FaceMesh:
    """FaceMesh on one face at a time.

    Args:
        min_confidence: FaceMesh's detection and presence thresholds on the crop.
    """

    def __init__(self, min_confidence: float = 0.3):
        mp = _mediapipe()
        with _quiet_native_logs():
            self._mesh = mp.solutions.face_mesh.FaceMesh(
                static_image_mode=True, refine_landmarks=True, max_num_faces=1,
                min_detection_confidence=min_confidence, min_tracking_confidence=min_confidence)
        self.model_name = "face_landmark_with_attention.tflite"
        self._settle = _SETTLE_SECONDS  # until the first face has gone through both models

    def __call__(self, image: np.ndarray, box: np.ndarray) -> np.ndarray | None:
        """The 478 points of the face in ``box``, or None when FaceMesh finds no face there.

        Args:
            image: (H, W, 3) uint8 RGB.
            box: (4,) ``x0, y0, x1, y1`` in photo pixels.

        Returns:
            (478, 3) float64: x, y in photo pixels (centres at +0.5), z relative depth in photo pixels.
        """
        x0, y0, x1, y1 = (float(v) for v in box)
        side = CROP_SCALE * max(x1 - x0, y1 - y0)
        zoom = CROP_SIZE / side
        # crop pixel = zoom * (photo pixel - centre) + CROP_SIZE / 2, in corner coordinates
        shift = CROP_SIZE / 2 - zoom * np.array([(x0 + x1) / 2, (y0 + y1) / 2])
        matrix = np.array([[zoom, 0.0, shift[0]], [0.0, zoom, shift[1]]])
        interpolation = cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR
        crop = cv2.warpAffine(np.ascontiguousarray(image), opencv_affine(matrix), (CROP_SIZE, CROP_SIZE),
                              flags=interpolation, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        with _quiet_native_logs(self._settle):
            result = self._mesh.process(crop)
        if not result.multi_face_landmarks:
            return None
        self._settle = 0.0
        points = np.array([[p.x, p.y, p.z] for p in result.multi_face_landmarks[0].landmark], np.float64)
        if len(points) != NUM_POINTS:
            return None
        points *= CROP_SIZE  # normalised crop coordinates (z in units of the crop width)
        points[:, :2] = (points[:, :2] - shift) / zoom
        points[:, 2] /= zoom
        return points

    def close(self) -> None:
        self._mesh.close()


#: MediaPipe's face detectors by (model, threshold), made on first use and kept: each is a graph.
_DETECTORS: dict[tuple[int, float], object] = {}


def mediapipe_face_boxes(image: np.ndarray, min_confidence: float = 0.5) -> list[tuple[np.ndarray, float]]:
    """Faces found by MediaPipe's detectors (short range, then full range when it finds none).

    Returns:
        (box (4,) x0, y0, x1, y1 in photo pixels, score) per face. MediaPipe's
        boxes are mapped to the extent of dlib's, which the landmark predictors
        expect: on the 343 shared photos where both found the face, dlib's box is
        MediaPipe's (x, y, w, h) moved up by 0.11 h and 0.95 w x 1.01 h large (medians).
    """
    mp = _mediapipe()
    height, width = image.shape[:2]
    for model in (0, 1):
        key = (model, min_confidence)
        first = key not in _DETECTORS
        with _quiet_native_logs(_SETTLE_SECONDS if first else 0.0):
            if first:
                _DETECTORS[key] = mp.solutions.face_detection.FaceDetection(
                    model_selection=model, min_detection_confidence=min_confidence)
            result = _DETECTORS[key].process(np.ascontiguousarray(image))
        found = []
        for detection in result.detections or []:
            rel = detection.location_data.relative_bounding_box
            x0, y0 = rel.xmin * width, rel.ymin * height
            w, h = rel.width * width, rel.height * height
            found.append((np.array([x0, y0 - 0.11 * h, x0 + 0.95 * w, y0 + 0.90 * h]), float(detection.score[0])))
        if found:
            return found
    return []


@dataclass
class Ibug68Table:
    """The iBUG-68 points as FaceMesh points: point k is ``(1 - t_k) p[first_k] + t_k p[second_k]``.

    Attributes:
        first, second: (68,) FaceMesh point indices.
        t: (68,) interpolation weights in [0, 1].
    """

    first: np.ndarray
    second: np.ndarray
    t: np.ndarray

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """(..., 478, C) FaceMesh points -> (..., 68, C)."""
        t = self.t[:, None]
        return (1 - t) * points[..., self.first, :] + t * points[..., self.second, :]


def load_ibug68_table(path: str | os.PathLike) -> Ibug68Table:
    """Read ``facemesh_ibug68.npz`` (keys ``first``, ``second``, ``t``; built by ``scripts/register_facemesh.py``).

    Raises:
        MissingAssetError: the file is missing.
        FileFormatError: it is not such a table.
    """
    if not os.path.isfile(path):
        raise MissingAssetError(f"{path}: the FaceMesh -> iBUG-68 table is missing (build it with python "
                                "scripts/register_facemesh.py --steps ibug68, or use --landmarks dlib)")
    data = load_npz(path)
    try:
        first, second, t = (np.asarray(data[k]) for k in ("first", "second", "t"))
    except KeyError as err:
        raise FileFormatError(path, f"not a FaceMesh -> iBUG-68 table: missing key {err}") from None
    if first.shape != (68,) or second.shape != (68,) or t.shape != (68,):
        raise FileFormatError(path, "first, second and t must each hold 68 values")
    if min(first.min(), second.min()) < 0 or max(first.max(), second.max()) >= NUM_POINTS or not (
            (t >= 0) & (t <= 1)).all():
        raise FileFormatError(path, f"indices must lie in [0, {NUM_POINTS}) and t in [0, 1]")
    return Ibug68Table(first.astype(np.int64), second.astype(np.int64), t.astype(np.float64))
