"""Face detection: dlib's HOG first, then its CNN (MMOD) detector, then MediaPipe's.

The reference detects with a TensorFlow MTCNN graph (official_formats.md
§4.1); this toolkit uses dlib, which ships with its Python package and the
``face_recognition_models`` weights, and MediaPipe's BlazeFace detectors,
which ship in its wheel, so nothing is downloaded.

Detection runs on a copy of the photo downscaled so its longer side is at
most ``max_image_side`` (boxes are mapped back to photo pixels). With
``method="auto"`` the passes are, stopping at the first that finds a face
(unless ``find_all``):

1. HOG frontal detector, upsampling the image 0, 1, ... ``max_upsample``
   times (small faces need upsampling: the HOG window is 80 px);
2. HOG on the image padded by a border, replicated then black (faces
   cropped so tightly that the face box reaches the image edge);
3. the CNN (MMOD) detector, slower but better on hard poses and lighting;
4. MediaPipe's short-range then full-range detector
   (:func:`~fitting.preprocess.facemesh.mediapipe_face_boxes`), which finds
   profiles, faces under a mask and faces in hard light that dlib misses;
5. only if passes 1-4 found nothing: HOG with a lowered score threshold,
   keeping the best candidate whose side is at least a third of the shorter
   image side (``fallback_threshold``, ``fallback_min_relative_size``). It
   recovers portraits whose lower face is covered (face masks); on 22 photos
   without faces (scikit-image's samples) it fired on none with these
   defaults, but lowering them brings false faces (a cat, a rocket). Such
   detections are reported as ``hog_low_threshold`` so callers can tell.

With ``find_all`` passes 1-4 all run and their detections are merged.
``method="hog"`` runs passes 1, 2 and 5; ``method="cnn"`` pass 3 and
``method="mediapipe"`` pass 4 only.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..config import DETECTOR_METHODS
from .facemesh import mediapipe_face_boxes

__all__ = ["FaceDetection", "FaceDetector", "box_iou"]

logger = logging.getLogger(__name__)

#: Side of dlib's HOG detection window: the smallest face found without upsampling.
HOG_WINDOW = 80
#: Images are upsampled for detection only while their longer side stays below this.
MAX_UPSAMPLED_SIDE = 2400
#: Border added on each side in pass 2, as a fraction of the longer image side.
PAD_FRACTION = 0.25
#: The CNN runs on a copy whose longer side is at most this (it costs ~3 s at 800 px on one CPU core).
CNN_MAX_SIDE = 800


#: With ``find_all``, detections of later passes overlapping an earlier one by more than this are dropped.
MERGE_IOU = 0.3


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


@dataclass
class FaceDetection:
    """One detected face.

    Attributes:
        box: (4,) float64 ``x0, y0, x1, y1`` in photo pixels (corner
            coordinates: the box covers ``[x0, x1) x [y0, y1)``).
        score: the detector's own confidence (HOG SVM margin or MMOD score).
        method: the pass that found it: ``hog``, ``hog_upsample<k>``,
            ``hog_padded``, ``cnn``, ``mediapipe`` or ``hog_low_threshold``.
    """

    box: np.ndarray
    score: float
    method: str

    @property
    def size(self) -> float:
        """Geometric mean of the box width and height, in photo pixels."""
        width, height = self.box[2] - self.box[0], self.box[3] - self.box[1]
        return float(math.sqrt(max(width, 0.0) * max(height, 0.0)))


def _rect_to_box(rect, scale: float, offset: float = 0.0) -> np.ndarray:
    # dlib rectangles are inclusive pixel indices.
    box = np.array([rect.left(), rect.top(), rect.right() + 1, rect.bottom() + 1], dtype=np.float64)
    return (box - offset) / scale


def _resize_longer_side(image: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale == 1.0:
        return image, 1.0
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), size[0] / width


class FaceDetector:
    """dlib face detector with fallbacks.

    Args:
        method: ``auto``, ``hog`` or ``cnn`` (see the module docstring).
        max_image_side: longer side of the copy detection runs on.
        max_upsample: most HOG upsampling steps (each doubles the image).
        fallback_threshold: HOG score threshold of pass 4 (dlib's default is 0).
        fallback_min_relative_size: in pass 4, the smallest box side as a
            fraction of the shorter image side.
    """

    def __init__(
        self,
        method: str = "auto",
        max_image_side: int = 1600,
        max_upsample: int = 2,
        fallback_threshold: float = -0.65,
        fallback_min_relative_size: float = 0.33,
    ):
        if method not in DETECTOR_METHODS:
            raise ValueError(f"detector must be one of {DETECTOR_METHODS}, got {method!r}")
        import dlib

        self.method = method
        self.max_image_side = int(max_image_side)
        self.max_upsample = int(max_upsample)
        self.fallback_threshold = float(fallback_threshold)
        self.fallback_min_relative_size = float(fallback_min_relative_size)
        self._hog = dlib.get_frontal_face_detector() if method in ("auto", "hog") else None
        self._cnn = None

    def _cnn_detector(self):
        if self._cnn is None:
            import dlib
            import face_recognition_models

            self._cnn = dlib.cnn_face_detection_model_v1(face_recognition_models.cnn_face_detector_model_location())
        return self._cnn

    def detect(self, image: np.ndarray, min_face_size: float = 0.0, find_all: bool = False) -> list[FaceDetection]:
        """Faces in ``image``, largest first.

        Args:
            image: (H, W, 3) uint8 RGB.
            min_face_size: when ``find_all``, upsample until faces of this
                size (photo pixels) are within the HOG detector's reach.
            find_all: look for every face: the detections of passes 1-4 are
                merged (a box overlapping an earlier pass's box by more than
                ``MERGE_IOU`` is the same face), instead of stopping at the
                first pass that finds one. Pass 5 runs only if they find none.

        Returns:
            Detections sorted by decreasing box size (possibly empty).
        """
        image = np.ascontiguousarray(image)
        small, scale = _resize_longer_side(image, self.max_image_side)
        passes = []
        if self._hog is not None:
            passes += [lambda: self._hog_pyramid(small, scale, min_face_size if find_all else 0.0),
                       lambda: self._hog_padded(small, scale)]
        if self.method in ("auto", "cnn"):
            passes.append(lambda: self._cnn_pass(image))
        if self.method in ("auto", "mediapipe"):
            passes.append(lambda: self._mediapipe_pass(image))
        found: list[FaceDetection] = []
        for run_pass in passes:
            if found and not find_all:
                break
            earlier = list(found)
            found += [d for d in run_pass() if not any(box_iou(d.box, e.box) > MERGE_IOU for e in earlier)]
        if not found and self._hog is not None:
            found = self._hog_low_threshold(small, scale)
        return sorted(found, key=lambda d: -d.size)

    def _hog_run(self, image: np.ndarray, upsample: int, threshold: float = 0.0):
        rects, scores, _ = self._hog.run(image, upsample, threshold)
        return list(zip(rects, scores))

    def _hog_pyramid(self, small: np.ndarray, scale: float, min_face_size: float) -> list[FaceDetection]:
        longer = max(small.shape[:2])
        # Upsampling steps needed for faces of min_face_size to fill the HOG window.
        wanted = 0
        if min_face_size > 0:
            wanted = max(0, math.ceil(math.log2(HOG_WINDOW / (min_face_size * scale))))
        found: list[FaceDetection] = []
        for upsample in range(self.max_upsample + 1):
            if upsample > 0 and longer * 2**upsample > MAX_UPSAMPLED_SIDE:
                break
            method = "hog" if upsample == 0 else f"hog_upsample{upsample}"
            detections = [FaceDetection(_rect_to_box(r, scale), float(s), method)
                          for r, s in self._hog_run(small, upsample)]
            if detections:
                found = detections
            if found and upsample >= wanted:
                break
        return found

    def _hog_padded(self, small: np.ndarray, scale: float) -> list[FaceDetection]:
        pad = max(1, round(PAD_FRACTION * max(small.shape[:2])))
        for border in (cv2.BORDER_REPLICATE, cv2.BORDER_CONSTANT):
            padded = cv2.copyMakeBorder(small, pad, pad, pad, pad, border, value=0)
            found = [
                FaceDetection(_rect_to_box(r, scale, offset=pad), float(s), "hog_padded")
                for r, s in self._hog_run(padded, 0)
            ]
            if found:
                return found
        return []

    def _cnn_pass(self, image: np.ndarray) -> list[FaceDetection]:
        small, scale = _resize_longer_side(image, min(self.max_image_side, CNN_MAX_SIDE))
        upsample = 1 if max(small.shape[:2]) * 2 <= CNN_MAX_SIDE else 0
        return [
            FaceDetection(_rect_to_box(d.rect, scale), float(d.confidence), "cnn")
            for d in self._cnn_detector()(small, upsample)
        ]

    def _mediapipe_pass(self, image: np.ndarray) -> list[FaceDetection]:
        return [FaceDetection(box, score, "mediapipe") for box, score in mediapipe_face_boxes(image)]

    def _hog_low_threshold(self, small: np.ndarray, scale: float) -> list[FaceDetection]:
        min_side = self.fallback_min_relative_size * min(small.shape[:2])
        candidates = []
        for upsample in (0, 1):
            if upsample > 0 and max(small.shape[:2]) * 2 > MAX_UPSAMPLED_SIDE:
                break
            # dlib maps detections of an upsampled run back to the input image's pixels.
            candidates += [
                (s, r) for r, s in self._hog_run(small, upsample, self.fallback_threshold)
                if math.sqrt(r.width() * r.height()) >= min_side
            ]
        if not candidates:
            return []
        score, rect = max(candidates, key=lambda c: c[0])
        logger.debug("low-threshold HOG candidate with score %.2f", score)
        return [FaceDetection(_rect_to_box(rect, scale), float(score), "hog_low_threshold")]
