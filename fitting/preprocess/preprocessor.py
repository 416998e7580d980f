"""The preprocessor: one photo -> aligned 224x224 crops with landmarks and masks.

For a photo, :class:`Preprocessor` detects the face
(:mod:`~fitting.preprocess.detection`; the largest, or each with
``all_faces``), finds FaceMesh's 478 points and the iBUG-68 set among them
(:mod:`~fitting.preprocess.facemesh`; dlib's 68-point predictor,
:mod:`~fitting.preprocess.landmarks`, where FaceMesh finds no face),
aligns the face to the standard crop (:mod:`~fitting.preprocess.alignment`)
and makes the skin and parse masks (:mod:`~fitting.preprocess.masks`),
returning one :class:`~fitting.structures.ProcessedFace` per face.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import torch

from assets.checkpoints import official_path
from utils.config import ConfigError
from utils.errors import MissingAssetError, ToolkitError
from utils.image_io import read_image
from utils.runtime import resolve_device

from ..config import DETECTOR_METHODS, LANDMARK_METHODS, MASK_METHODS, PreprocessConfig
from ..structures import ProcessedFace, ProcessedInfo
from .alignment import (
    CROP_SIZE,
    ICT_TEMPLATE,
    AlignmentTemplate,
    alignment_transform,
    apply_affine,
    five_points,
    invert_affine,
    load_reference_template,
    warp_to_crop,
)
from .detection import HOG_WINDOW, FaceDetector
from .facemesh import DEFAULT_IBUG68_TABLE, NUM_POINTS, FaceMesh, load_ibug68_table
from .landmarks import LandmarkDetector
from .masks import PARSING_SIZE, FaceParser, landmark_masks, parsing_masks

__all__ = ["PreprocessError", "Preprocessor", "preprocess_image"]

logger = logging.getLogger("uvapm.preprocess")

class PreprocessError(ToolkitError):
    """An image cannot be processed (no face, face too small, ...); the message is the reason."""


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")


class Preprocessor:
    """Detector, landmark predictor, template and mask maker, loaded once for many images.

    Raises:
        ConfigError: an invalid option.
        MissingAssetError: ``landmarks=fan`` without its weights, ``landmarks=facemesh``
            without the FaceMesh -> iBUG-68 table, or ``masks=parsing`` without the BiSeNet checkpoint.
        FileFormatError: an unreadable template or checkpoint.
    """

    def __init__(self, config: PreprocessConfig | None = None):
        self.config = config = config or PreprocessConfig()
        _check_choice("detector", config.detector, DETECTOR_METHODS)
        _check_choice("landmarks", config.landmarks, LANDMARK_METHODS)
        _check_choice("masks", config.masks, MASK_METHODS)
        if config.min_face_size < 1 or config.max_image_side < 64 or config.max_upsample < 0:
            raise ConfigError("min_face_size must be >= 1, max_image_side >= 64 and max_upsample >= 0")
        self.detector = FaceDetector(
            config.detector, config.max_image_side, config.max_upsample,
            config.fallback_threshold, config.fallback_min_relative_size,
        )
        device = resolve_device(config.device or "cpu")
        checkpoints_dir = config.checkpoints_dir or "checkpoints"
        self.facemesh = self.ibug68 = None
        if config.landmarks == "facemesh":
            self.ibug68 = load_ibug68_table(config.facemesh_table or DEFAULT_IBUG68_TABLE)
            self.facemesh = FaceMesh()
        # dlib is FaceMesh's fallback
        self.landmarker = LandmarkDetector("dlib" if self.facemesh else config.landmarks, checkpoints_dir, str(device))
        self.template: AlignmentTemplate = (
            load_reference_template(config.reference_template) if config.reference_template else ICT_TEMPLATE
        )
        checkpoint = official_path(checkpoints_dir, "parsing")
        self.parser = None
        if config.masks == "parsing" and not checkpoint.is_file():
            raise MissingAssetError(f"masks=parsing needs the BiSeNet checkpoint {checkpoint}, which is missing")
        if config.masks != "landmarks" and checkpoint.is_file():
            self.parser = FaceParser(checkpoint, device)
        self.mask_method = "bisenet" if self.parser is not None else "landmarks+skin-colour"
        logger.debug("detector %s, landmarks %s (%s), masks %s, template %s", config.detector, config.landmarks,
                     self.landmarker.model_path, self.mask_method, self.template.name)

    def __call__(self, image: np.ndarray, source: str = "") -> list[ProcessedFace]:
        """Process the largest face (or every face with ``all_faces``) of an (H, W, 3) uint8 RGB photo.

        Returns:
            One :class:`~fitting.structures.ProcessedFace` per face, the largest first.

        Raises:
            PreprocessError: no face, or no face of at least ``min_face_size``.
        """
        min_size = self.config.min_face_size
        height, width = image.shape[:2]
        smallest = min(min_size, HOG_WINDOW // 2**self.config.max_upsample)
        if min(height, width) < smallest:  # nothing to detect: fail fast (folders of thumbnails, 1x1 spacers)
            raise PreprocessError(f"image is {width}x{height} pixels, too small to contain a face (the smallest "
                                  f"detectable is {smallest} px)")
        detections = self.detector.detect(image, min_face_size=min_size, find_all=self.config.all_faces)
        if not detections:
            raise PreprocessError("no face found")
        large = [d for d in detections if d.size >= min_size]
        if not large:
            biggest = detections[0]
            raise PreprocessError(
                f"face too small ({biggest.size:.0f} px, the minimum is {min_size} px; see --min_face_size)"
            )
        if not self.config.all_faces:
            large = large[:1]
        return [self._process_face(image, detection, source) for detection in large]

    def _process_face(self, image: np.ndarray, detection, source: str) -> ProcessedFace:
        dense = self.facemesh(image, detection.box) if self.facemesh is not None else None
        if dense is not None:
            landmarks, landmark_source = self.ibug68(dense[:, :2]), f"facemesh ({self.facemesh.model_name})"
        else:
            landmarks = self.landmarker(image, detection.box)
            landmark_source = f"{self.landmarker.method} ({Path(self.landmarker.model_path).name})"
            if self.facemesh is not None:
                landmark_source += ", FaceMesh found no face"
        try:
            transform = alignment_transform(five_points(landmarks), self.template, CROP_SIZE)
        except ValueError as err:
            raise PreprocessError(str(err)) from None
        inverse = invert_affine(transform)
        crop = warp_to_crop(image, transform, CROP_SIZE)
        crop_landmarks = apply_affine(transform, landmarks)
        crop_dense = np.zeros((NUM_POINTS, 3))
        if dense is not None:
            zoom = float(np.sqrt(abs(np.linalg.det(transform[:, :2]))))
            crop_dense = np.concatenate([apply_affine(transform, dense[:, :2]), zoom * dense[:, 2:]], 1)
        valid = _inside_photo(inverse, image.shape[:2], CROP_SIZE)
        if self.parser is not None:
            labels = self.parser(warp_to_crop(image, transform * (PARSING_SIZE / CROP_SIZE), PARSING_SIZE))
            skin, parse = (m * valid for m in parsing_masks(labels, CROP_SIZE))
        else:
            skin, parse = landmark_masks(crop, crop_landmarks, valid)

        def tensor(array, *shape):
            return torch.as_tensor(np.asarray(array), dtype=torch.float32).reshape(*shape)

        return ProcessedFace(
            image=torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255.0).contiguous(),
            landmarks=tensor(crop_landmarks, 1, 68, 2),
            landmarks_original=tensor(landmarks, 1, 68, 2),
            dense_landmarks=tensor(crop_dense, 1, NUM_POINTS, 3),
            dense_valid=tensor([float(dense is not None)], 1),
            points5=tensor(five_points(crop_landmarks), 1, 5, 2),
            transform=tensor(transform, 1, 2, 3),
            inverse_transform=tensor(inverse, 1, 2, 3),
            skin_mask=tensor(skin, 1, 1, CROP_SIZE, CROP_SIZE),
            parse_mask=tensor(parse, 1, 1, CROP_SIZE, CROP_SIZE),
            detector_score=tensor([detection.score], 1),
            face_box=tensor(detection.box, 1, 4),
            original_size=torch.tensor(image.shape[:2], dtype=torch.int64),
            info=ProcessedInfo(
                source=source,
                detector=detection.method,
                landmarks=landmark_source,
                masks=self.mask_method,
                template=self.template.name,
            ),
        )


def _inside_photo(inverse: np.ndarray, photo_hw: tuple[int, int], size: int) -> np.ndarray:
    """(size, size) float32: 1 where the crop pixel's centre maps inside the photo."""
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1)
    photo = apply_affine(inverse, centres)
    height, width = photo_hw
    inside = (photo[..., 0] >= 0) & (photo[..., 0] <= width) & (photo[..., 1] >= 0) & (photo[..., 1] <= height)
    return inside.astype(np.float32)


def preprocess_image(
    path: str | os.PathLike, config: PreprocessConfig | None = None, preprocessor: Preprocessor | None = None
) -> list[ProcessedFace]:
    """Read and process one photo (see :class:`Preprocessor`); reuse ``preprocessor`` across calls.

    Raises:
        FileFormatError: the file cannot be read as an image.
        PreprocessError: no usable face.
    """
    preprocessor = preprocessor or Preprocessor(config)
    image = read_image(path, max_pixels=preprocessor.config.max_pixels)
    return preprocessor(image, source=str(path))
