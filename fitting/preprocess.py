"""Stage "process data": photos -> aligned 224x224 crops with landmarks and masks.

Usage::

    python -m fitting.preprocess --input_dir photos --output_dir photos/processed_data

For every image of ``--input_dir`` (JPEG/PNG/BMP/WebP/TIFF/GIF): read it
(EXIF orientation applied), detect the face (:mod:`fitting.detection`; the
largest, or each with ``--all_faces``), predict 68 landmarks
(:mod:`fitting.landmarks`), align to the standard crop
(:mod:`fitting.alignment`), make the skin and parse masks
(:mod:`fitting.masks`) and write ``<output_dir>/<name>.pt`` (``<name>_face<k>``
with ``--all_faces``, k = 0 for the largest face) plus a picture
``<output_dir>/vis/<name>.png``: crop | landmarks | skin mask | parse mask.

A file that cannot be used (unreadable, not an image, no face, face too
small, an output that cannot be written, ...) is reported on one line,
listed in ``<output_dir>/failures.tsv`` (``file<TAB>reason``) and skipped;
the batch goes on. Images whose output exists are skipped unless
``--overwrite``, so an interrupted run resumes (SIGINT/SIGTERM stop it within
two seconds, leaving only complete files). The command holds a lock on
``--output_dir`` (:mod:`utils.locking`). Output names are the image's name
without its extension, shortened (with a hash of the full name) when too long
for the file system. Exit code: 0 when every image was processed or skipped,
1 when any failed, 2 for usage or configuration errors, an input folder
without images, an output folder in use or not writable.

The ``.pt`` file (``torch.load(path, weights_only=True)``; read it with
:func:`load_processed`) holds, in this toolkit's conventions (pixels from the
top-left corner, y down, centres at +0.5):

=====================  ================  ==================================================
key                    shape / type      meaning
=====================  ================  ==================================================
``image``              (1, 3, 224, 224)  aligned crop, float32 RGB in [0, 1]
``landmarks``          (1, 68, 2)        iBUG-68 landmarks, crop pixels
``landmarks_original`` (1, 68, 2)        the same in photo pixels
``points5``            (1, 5, 2)         eye centres, nose tip, mouth corners, crop pixels
``transform``          (1, 2, 3)         photo pixels -> crop pixels
``inverse_transform``  (1, 2, 3)         crop pixels -> photo pixels
``skin_mask``          (1, 1, 224, 224)  float32 in [0, 1]
``parse_mask``         (1, 1, 224, 224)  float32 in [0, 1]
``detector_score``     (1,)              the detector's confidence
``face_box``           (1, 4)            x0, y0, x1, y1 in photo pixels
``original_size``      (2,) int64        photo height, width
``info``               dict of str       source, detector, landmarks, masks, template, format_version
=====================  ================  ==================================================

Differences from the reference's ``processed_data/*.pt`` (official_formats.md
§4.7): landmarks are y-down, tensors are on the CPU, the masks are
single-channel, the ArcFace matrix ``M`` is not stored (it is a function of
the landmarks) and the transform replaces ``trans_params``.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import logging
import math
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from utils.assets.checkpoints import official_path
from utils.atomic import save_torch, write_text
from utils.cli import add_logging_args, resolve_device, run_main, setup_logging
from utils.config import ConfigError, add_config_args, config_from_args
from utils.errors import FileFormatError, MissingAssetError, ToolkitError, error_reason, failures_tsv
from utils.image_io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, list_images, read_image, write_image
from utils.locking import FolderLock
from utils.safe_load import load_torch

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
from .detection import DETECTOR_METHODS, HOG_WINDOW, FaceDetector
from .landmarks import LANDMARK_METHODS, LandmarkDetector
from .masks import PARSING_SIZE, FaceParser, landmark_masks, parsing_masks

__all__ = [
    "FORMAT_VERSION",
    "PreprocessConfig",
    "PreprocessError",
    "Preprocessor",
    "FolderResult",
    "preprocess_image",
    "preprocess_folder",
    "load_processed",
    "main",
]

logger = logging.getLogger("fitting.preprocess")

FORMAT_VERSION = "1"
#: Longest output base name in bytes: room for ``_face<k>`` and an extension within a 255-byte file name.
MAX_NAME_BYTES = 200
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "preprocess.yaml"
MASK_METHODS = ("auto", "parsing", "landmarks")

#: key -> (shape, dtype) of the tensors of a processed file.
PROCESSED_SCHEMA = {
    "image": ((1, 3, CROP_SIZE, CROP_SIZE), torch.float32),
    "landmarks": ((1, 68, 2), torch.float32),
    "landmarks_original": ((1, 68, 2), torch.float32),
    "points5": ((1, 5, 2), torch.float32),
    "transform": ((1, 2, 3), torch.float32),
    "inverse_transform": ((1, 2, 3), torch.float32),
    "skin_mask": ((1, 1, CROP_SIZE, CROP_SIZE), torch.float32),
    "parse_mask": ((1, 1, CROP_SIZE, CROP_SIZE), torch.float32),
    "detector_score": ((1,), torch.float32),
    "face_box": ((1, 4), torch.float32),
    "original_size": ((2,), torch.int64),
}
INFO_KEYS = ("source", "detector", "landmarks", "masks", "template", "format_version")


@dataclass
class PreprocessConfig:
    """Options of the preprocessing stage (mirrored by ``configs/preprocess.yaml``)."""

    #: ``auto`` (HOG, then the slower CNN if HOG finds nothing; with all_faces both, merged), ``hog`` or ``cnn``.
    detector: str = "auto"
    #: ``dlib`` or ``fan`` (face-alignment, only with its weights already on this machine).
    landmarks: str = "dlib"
    #: ``auto`` (BiSeNet when its checkpoint is present, else landmarks), ``parsing`` or ``landmarks``.
    masks: str = "auto"
    #: Process every face large enough, as ``<name>_face<k>``; otherwise only the largest.
    all_faces: bool = False
    #: Smallest face accepted: the detector box's side (geometric mean of width and height) in photo pixels.
    min_face_size: int = 40
    #: Detection runs on a copy whose longer side is at most this many pixels.
    max_image_side: int = 1600
    #: Most HOG upsampling steps for small faces.
    max_upsample: int = 2
    #: Last-resort HOG threshold (see fitting.detection) and its smallest box relative to the image.
    fallback_threshold: float = -0.65
    fallback_min_relative_size: float = 0.33
    #: Images with more pixels are refused before decoding.
    max_pixels: int = DEFAULT_MAX_PIXELS
    #: The reference's topo_assets/similarity_Lm3D_all.mat; empty for the built-in ICT-FaceKit template.
    reference_template: str = ""
    #: Folder of the official checkpoints (parsing_model/79999_iter.pth, dlib_model/...).
    checkpoints_dir: str = "checkpoints"
    #: torch device for BiSeNet and FAN: cpu, cuda, cuda:N or auto.
    device: str = "cpu"
    #: Reprocess images whose output exists.
    overwrite: bool = False
    #: Write vis/<name>.png.
    visualise: bool = True


class PreprocessError(ToolkitError):
    """An image cannot be processed (no face, face too small, ...); the message is the reason."""


@dataclass
class FolderResult:
    """Outcome of :func:`preprocess_folder`.

    Attributes:
        processed: images processed in this run.
        skipped: images skipped because their output existed.
        faces: faces written.
        failures: (file name, reason) per failed image.
        seconds: wall time per processed or failed image.
    """

    processed: int = 0
    skipped: int = 0
    faces: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(choices)}")


class Preprocessor:
    """Detector, landmark predictor, template and mask maker, loaded once for many images.

    Raises:
        ConfigError: an invalid option.
        MissingAssetError: ``landmarks=fan`` without its weights, or
            ``masks=parsing`` without the BiSeNet checkpoint.
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
        device = resolve_device(config.device)
        self.landmarker = LandmarkDetector(config.landmarks, config.checkpoints_dir, str(device))
        self.template: AlignmentTemplate = (
            load_reference_template(config.reference_template) if config.reference_template else ICT_TEMPLATE
        )
        checkpoint = official_path(config.checkpoints_dir, "parsing")
        self.parser = None
        if config.masks == "parsing" and not checkpoint.is_file():
            raise MissingAssetError(f"masks=parsing needs the BiSeNet checkpoint {checkpoint}, which is missing")
        if config.masks != "landmarks" and checkpoint.is_file():
            self.parser = FaceParser(checkpoint, device)
        self.mask_method = "bisenet" if self.parser is not None else "landmarks+skin-colour"
        logger.debug("detector %s, landmarks %s (%s), masks %s, template %s", config.detector, config.landmarks,
                     self.landmarker.model_path, self.mask_method, self.template.name)

    def __call__(self, image: np.ndarray, source: str = "") -> list[dict]:
        """Process the largest face (or every face with ``all_faces``) of an (H, W, 3) uint8 RGB photo.

        Returns:
            One record per face, as stored in the ``.pt`` files.

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

    def _process_face(self, image: np.ndarray, detection, source: str) -> dict:
        landmarks = self.landmarker(image, detection.box)
        try:
            transform = alignment_transform(five_points(landmarks), self.template, CROP_SIZE)
        except ValueError as err:
            raise PreprocessError(str(err)) from None
        inverse = invert_affine(transform)
        crop = warp_to_crop(image, transform, CROP_SIZE)
        crop_landmarks = apply_affine(transform, landmarks)
        valid = _inside_photo(inverse, image.shape[:2], CROP_SIZE)
        if self.parser is not None:
            labels = self.parser(warp_to_crop(image, transform * (PARSING_SIZE / CROP_SIZE), PARSING_SIZE))
            skin, parse = (m * valid for m in parsing_masks(labels, CROP_SIZE))
        else:
            skin, parse = landmark_masks(crop, crop_landmarks, valid)

        def tensor(array, *shape):
            return torch.as_tensor(np.asarray(array), dtype=torch.float32).reshape(*shape)

        return {
            "image": torch.from_numpy(crop).permute(2, 0, 1)[None].float().div(255.0).contiguous(),
            "landmarks": tensor(crop_landmarks, 1, 68, 2),
            "landmarks_original": tensor(landmarks, 1, 68, 2),
            "points5": tensor(five_points(crop_landmarks), 1, 5, 2),
            "transform": tensor(transform, 1, 2, 3),
            "inverse_transform": tensor(inverse, 1, 2, 3),
            "skin_mask": tensor(skin, 1, 1, CROP_SIZE, CROP_SIZE),
            "parse_mask": tensor(parse, 1, 1, CROP_SIZE, CROP_SIZE),
            "detector_score": tensor([detection.score], 1),
            "face_box": tensor(detection.box, 1, 4),
            "original_size": torch.tensor(image.shape[:2], dtype=torch.int64),
            "info": {
                "source": source,
                "detector": detection.method,
                "landmarks": f"{self.config.landmarks} ({Path(self.landmarker.model_path).name})",
                "masks": self.mask_method,
                "template": self.template.name,
                "format_version": FORMAT_VERSION,
            },
        }


def _inside_photo(inverse: np.ndarray, photo_hw: tuple[int, int], size: int) -> np.ndarray:
    """(size, size) float32: 1 where the crop pixel's centre maps inside the photo."""
    centres = np.stack(np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5), -1)
    photo = apply_affine(inverse, centres)
    height, width = photo_hw
    inside = (photo[..., 0] >= 0) & (photo[..., 0] <= width) & (photo[..., 1] >= 0) & (photo[..., 1] <= height)
    return inside.astype(np.float32)


def preprocess_image(
    path: str | os.PathLike, config: PreprocessConfig | None = None, preprocessor: Preprocessor | None = None
) -> list[dict]:
    """Read and process one photo (see :class:`Preprocessor`); reuse ``preprocessor`` across calls.

    Raises:
        FileFormatError: the file cannot be read as an image.
        PreprocessError: no usable face.
    """
    preprocessor = preprocessor or Preprocessor(config)
    image = read_image(path, max_pixels=preprocessor.config.max_pixels)
    return preprocessor(image, source=str(path))


def visualise(record: dict) -> np.ndarray:
    """(224, 4*224, 3) uint8: crop | landmarks | skin mask overlay (green) | parse mask overlay (blue)."""
    crop = (record["image"][0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    marked = crop.copy()
    shift = 4
    for k, (x, y) in enumerate(record["landmarks"][0].numpy()):
        colour = (255, 255, 0) if 36 <= k < 48 else (255, 64, 64)
        centre = (int(round((x - 0.5) * (1 << shift))), int(round((y - 0.5) * (1 << shift))))
        cv2.circle(marked, centre, 2 << shift, colour, -1, cv2.LINE_AA, shift)
    for x, y in record["points5"][0].numpy():
        centre = (int(round((x - 0.5) * (1 << shift))), int(round((y - 0.5) * (1 << shift))))
        cv2.circle(marked, centre, 4 << shift, (0, 255, 0), 1, cv2.LINE_AA, shift)

    def overlay(mask: torch.Tensor, colour: tuple[int, int, int]) -> np.ndarray:
        values = mask[0, 0].numpy()
        alpha = 0.45 * values[..., None]
        tinted = (crop * (1.0 - alpha) + np.array(colour) * alpha + 0.5).astype(np.uint8)
        contours, _ = cv2.findContours((values > 0.5).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        return cv2.drawContours(tinted, contours, -1, (255, 255, 0), 1)

    return np.concatenate(
        [crop, marked, overlay(record["skin_mask"], (0, 255, 0)), overlay(record["parse_mask"], (40, 80, 255))], 1
    )


def save_processed(path: str | os.PathLike, record: dict) -> None:
    """Write one face record atomically."""
    save_torch(path, record)


def load_processed(path: str | os.PathLike) -> dict:
    """Read a processed ``.pt`` file and check its keys, shapes and types.

    Raises:
        FileFormatError: unreadable, not a processed file, or a wrong shape.
    """
    data = load_torch(path)
    if not isinstance(data, dict):
        raise FileFormatError(path, "not a processed face file (expected a dict)")
    missing = [k for k in (*PROCESSED_SCHEMA, "info") if k not in data]
    if missing:
        raise FileFormatError(path, f"not a processed face file: missing keys {missing}")
    for key, (shape, dtype) in PROCESSED_SCHEMA.items():
        value = data[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape or value.dtype != dtype:
            got = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
            raise FileFormatError(path, f"{key!r} is {got}, expected {shape} {dtype}")
    info = data["info"]
    if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in INFO_KEYS):
        raise FileFormatError(path, f"'info' must be a dict with string entries {list(INFO_KEYS)}")
    if info["format_version"] != FORMAT_VERSION:
        raise FileFormatError(path, f"format_version {info['format_version']!r}, expected {FORMAT_VERSION!r}")
    for key in ("image", "skin_mask", "parse_mask"):
        value = data[key]
        if not torch.isfinite(value).all() or value.min() < 0.0 or value.max() > 1.0:
            raise FileFormatError(path, f"{key!r} has values outside [0, 1]")
    return data


def _fit_name(name: str) -> str:
    """``name``, or its first bytes plus a hash of all of it when longer than :data:`MAX_NAME_BYTES`."""
    encoded = os.fsencode(name)
    if len(encoded) <= MAX_NAME_BYTES:
        return name
    digest = hashlib.sha1(encoded).hexdigest()[:10]
    return f"{os.fsdecode(encoded[: MAX_NAME_BYTES - len(digest) - 1])}~{digest}"


def output_names(files: list[Path]) -> dict[Path, str]:
    """Output base name per input file: its stem, or ``stem_ext`` when two inputs share a stem (shortened if long)."""
    stems: dict[str, int] = {}
    for path in files:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    return {p: _fit_name(p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}")
            for p in files}


def _existing_outputs(output_dir: Path, name: str, all_faces: bool) -> list[Path]:
    if not all_faces:
        path = output_dir / f"{name}.pt"
        return [path] if path.is_file() else []
    pattern = re.compile(re.escape(name) + r"_face\d+\.pt")
    return [p for p in output_dir.glob(f"{glob.escape(name)}_face*.pt") if pattern.fullmatch(p.name)]


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def preprocess_folder(
    input_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: PreprocessConfig | None = None,
    progress: bool = True,
) -> FolderResult:
    """Process every image of ``input_dir`` into ``output_dir`` (see the module docstring).

    Returns:
        Counts, failures and timings; ``output_dir/failures.tsv`` lists the failures.

    Raises:
        ToolkitError: ``input_dir`` is not a folder, or the models cannot be loaded.
    """
    config = config or PreprocessConfig()
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if not input_dir.is_dir():
        raise ToolkitError(f"{input_dir}: input folder not found")
    try:
        files = list_images(input_dir)
    except OSError as err:
        raise ToolkitError(f"{input_dir}: cannot list the input folder ({err.strerror or err})") from None
    if not files:
        logger.warning("%s: no images (%s)", input_dir, " ".join(IMAGE_EXTENSIONS))
    names = output_names(files)
    output_dir.mkdir(parents=True, exist_ok=True)
    result = FolderResult()
    todo = []
    for path in files:
        if not config.overwrite and _existing_outputs(output_dir, names[path], config.all_faces):
            result.skipped += 1
        else:
            todo.append(path)
    if result.skipped:
        logger.info("%d images already processed, skipped (use --overwrite to redo them)", result.skipped)
    preprocessor = Preprocessor(config) if todo else None
    with logging_redirect_tqdm():
        for path in tqdm(todo, desc="preprocess", unit="image", disable=not progress, dynamic_ncols=True):
            start = time.perf_counter()
            try:
                records = preprocess_image(path, preprocessor=preprocessor)
                _write_outputs(output_dir, names[path], records, config)
                result.processed += 1
                result.faces += len(records)
            except Exception as err:  # noqa: BLE001 - one image's failure, whatever it is, must not stop the batch
                reason = _image_failure(path, err)
                logger.debug("%s: %s", path.name, reason, exc_info=True)
                logger.error("%s: %s", path.name, _one_line(reason))
                result.failures.append((path.name, reason))
            result.seconds.append(time.perf_counter() - start)
    write_text(output_dir / "failures.tsv", failures_tsv(result.failures))
    return result


def _image_failure(path: Path, err: Exception) -> str:
    """The reason an image failed, for the log and failures.tsv."""
    if isinstance(err, FileFormatError):
        return err.reason if Path(err.path) == path else error_reason(err)
    if isinstance(err, PreprocessError):
        return str(err)
    if isinstance(err, OSError):
        return f"cannot write output ({error_reason(err)})"
    if isinstance(err, (ToolkitError, MemoryError)):
        return error_reason(err)
    return f"unexpected error ({error_reason(err)}); rerun with --verbose for the traceback"


def _write_outputs(output_dir: Path, name: str, records: list[dict], config: PreprocessConfig) -> None:
    stems = [name] if not config.all_faces else [f"{name}_face{k}" for k in range(len(records))]
    for stem, record in zip(stems, records):
        save_processed(output_dir / f"{stem}.pt", record)
        if config.visualise:
            write_image(output_dir / "vis" / f"{stem}.png", visualise(record))
    if config.all_faces:
        # Faces left over from an earlier run that found more of them.
        for stale in _existing_outputs(output_dir, name, True):
            if stale.stem not in stems:
                stale.unlink()
                (output_dir / "vis" / f"{stale.stem}.png").unlink(missing_ok=True)


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fitting.preprocess",
        description="Detect, align and mask the faces of a folder of photos (the 'process data' stage).",
    )
    parser.add_argument("--input_dir", required=True, help="folder of photos")
    parser.add_argument("--output_dir", help="where the .pt files go (default: <input_dir>/processed_data)")
    parser.add_argument("--checkpoints_dir", help="official checkpoints folder (default: checkpoints)")
    parser.add_argument("--detector", choices=DETECTOR_METHODS, help="face detector (default: auto)")
    parser.add_argument("--landmarks", choices=LANDMARK_METHODS, help="landmark predictor (default: dlib)")
    parser.add_argument("--masks", choices=MASK_METHODS, help="mask method (default: auto)")
    parser.add_argument("--all_faces", action="store_true", default=None, help="every face, as <name>_face<k>")
    parser.add_argument("--min_face_size", type=int, help="smallest face box side in pixels (default: 40)")
    parser.add_argument("--max_image_side", type=int, help="detect on a copy at most this large (default: 1600)")
    parser.add_argument("--reference_template", metavar="MAT",
                        help="the reference's similarity_Lm3D_all.mat (default: built-in ICT-FaceKit template)")
    parser.add_argument("--device", help="torch device for BiSeNet/FAN (default: cpu)")
    parser.add_argument("--overwrite", action="store_true", default=None, help="redo images already processed")
    add_config_args(parser, str(DEFAULT_CONFIG))
    add_logging_args(parser)
    return parser.parse_args(argv)


_FLAGS = {
    "checkpoints_dir": "checkpoints_dir", "detector": "detector", "landmarks": "landmarks", "masks": "masks",
    "all_faces": "all_faces", "min_face_size": "min_face_size", "max_image_side": "max_image_side",
    "reference_template": "reference_template", "device": "device", "overwrite": "overwrite",
}


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        config = config_from_args(PreprocessConfig, args, _FLAGS)
        output_dir = args.output_dir or os.path.join(args.input_dir, "processed_data")
        if not os.path.isdir(args.input_dir):
            raise ToolkitError(f"{args.input_dir}: input folder not found")
        if not list_images(args.input_dir):
            raise ToolkitError(f"{args.input_dir}: no images in the input folder ({' '.join(IMAGE_EXTENSIONS)})")
        with FolderLock(output_dir, "fitting.preprocess"):
            result = preprocess_folder(args.input_dir, output_dir, config, progress=not args.quiet)
        mean = sum(result.seconds) / len(result.seconds) if result.seconds else math.nan
        logger.info(
            "%d processed (%d faces), %d skipped, %d failed; %.2f s per image; failures listed in %s",
            result.processed, result.faces, result.skipped, len(result.failures), mean,
            os.path.join(output_dir, "failures.tsv"),
        )
        return 1 if result.failures else 0

    return run_main(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
