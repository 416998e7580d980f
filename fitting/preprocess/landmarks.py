"""68 facial landmarks (iBUG-300W order) inside a detected face box.

* ``dlib`` (default): dlib's 68-point shape predictor, read from
  ``<checkpoints_dir>/dlib_model/shape_predictor_68_face_landmarks.dat`` when
  present, else from the copy shipped by ``face_recognition_models``.
* ``fan``: the 2D-FAN network of the ``face-alignment`` package. It is used
  only when its weights are already on this machine (torch hub's checkpoint
  folder, where ``face-alignment`` keeps them); this toolkit never downloads.

Landmarks follow the toolkit's pixel convention (:mod:`models`): origin at the
image's top-left corner, y down, pixel centres at +0.5. The index order is
iBUG's: jaw 0-16, brows 17-26, nose 27-35, eyes 36-47 (36 the outer corner
of the eye on the image's left), mouth 48-67.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np

from assets.checkpoints import official_path
from utils.errors import MissingAssetError

from ..config import LANDMARK_METHODS

__all__ = ["LandmarkDetector", "dlib_predictor_path", "fan_weights_path"]

logger = logging.getLogger(__name__)



def dlib_predictor_path(checkpoints_dir: str | os.PathLike) -> Path:
    """The official copy under ``checkpoints_dir`` when present, else face_recognition_models'."""
    official = official_path(checkpoints_dir, "dlib_landmarks")
    if official.is_file():
        return official
    import face_recognition_models

    return Path(face_recognition_models.pose_predictor_model_location())


def fan_weights_path() -> Path:
    """Where ``face-alignment`` keeps its 2D-FAN weights on this machine."""
    import torch
    from face_alignment.api import models_urls

    filename = models_urls["2DFAN-4"].rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


class LandmarkDetector:
    """Predict (68, 2) landmarks in a face box.

    Args:
        method: ``dlib`` or ``fan``.
        checkpoints_dir: folder of the official checkpoints (for dlib's predictor).
        device: torch device for FAN.

    Raises:
        MissingAssetError: ``fan`` without its weights on this machine.
    """

    def __init__(self, method: str = "dlib", checkpoints_dir: str | os.PathLike = "checkpoints", device: str = "cpu"):
        if method not in LANDMARK_METHODS:
            raise ValueError(f"landmarks must be one of {LANDMARK_METHODS}, got {method!r}")
        self.method = method
        if method == "dlib":
            import dlib

            self.model_path = dlib_predictor_path(checkpoints_dir)
            self._predictor = dlib.shape_predictor(str(self.model_path))
        else:
            self.model_path = fan_weights_path()
            if not self.model_path.is_file():
                raise MissingAssetError(
                    f"--landmarks fan needs the face-alignment 2D-FAN weights at {self.model_path}, which are not "
                    "on this machine (this toolkit never downloads them); copy the file there or use --landmarks dlib"
                )
            import face_alignment
            import face_recognition_models

            # The dlib detector is only named so that FAN uses dlib's box conventions; the boxes come from us.
            detector_kwargs = {"path_to_detector": face_recognition_models.cnn_face_detector_model_location()}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # face-alignment calls its dlib detector deprecated
                self._fan = face_alignment.FaceAlignment(
                    face_alignment.LandmarksType.TWO_D, device=device, face_detector="dlib", compile=False,
                    face_detector_kwargs=detector_kwargs,
                )

    def __call__(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """Landmarks of the face in ``box``.

        Args:
            image: (H, W, 3) uint8 RGB.
            box: (4,) ``x0, y0, x1, y1`` corner coordinates in ``image`` pixels.

        Returns:
            (68, 2) float64 pixel coordinates (centres at +0.5).
        """
        # Both predictors work on inclusive integer pixel boxes and return pixel indices.
        left, top, right, bottom = (int(round(v)) for v in box)
        image = np.ascontiguousarray(image)
        if self.method == "dlib":
            import dlib

            shape = self._predictor(image, dlib.rectangle(left, top, right - 1, bottom - 1))
            points = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                found = self._fan.get_landmarks_from_image(image, detected_faces=[[left, top, right - 1, bottom - 1]])
            points = np.asarray(found[0], dtype=np.float64)[:, :2]
        return points + 0.5
