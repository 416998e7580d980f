"""Preprocessing a folder of photos into ``processed_data/`` (resumable, one failure at a time).

For every image of the folder (JPEG/PNG/BMP/WebP/TIFF/GIF, EXIF orientation
applied) :func:`preprocess_folder` writes ``<output_dir>/<name>.pt`` (a
:class:`~fitting.structures.ProcessedFace`; ``<name>_face<k>`` with
``all_faces``, k = 0 for the largest face) and a picture
``<output_dir>/vis/<name>.png``: crop | landmarks | skin mask | parse mask.

A file that cannot be used (unreadable, not an image, no face, face too
small, an output that cannot be written, ...) is reported on one line,
listed in ``<output_dir>/failures.tsv`` (``file<TAB>reason``) and skipped;
the batch goes on. Images whose output exists are skipped unless
``overwrite``, so an interrupted run resumes. Output names are the image's
name without its extension (``stem_ext`` when two inputs share a stem),
shortened with a hash of the full name when too long for the file system.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from utils.atomic import write_text
from utils.cli import count
from utils.errors import ToolkitError, failure_reason, failures_tsv
from utils.image_io import IMAGE_EXTENSIONS, list_images, write_image

from ..config import PreprocessConfig
from ..structures import ProcessedFace
from .preprocessor import Preprocessor, preprocess_image

__all__ = ["FolderResult", "preprocess_folder", "output_names", "visualise"]

logger = logging.getLogger("uvapm.preprocess")

#: Longest output base name in bytes: room for ``_face<k>`` and an extension within a 255-byte file name.
MAX_NAME_BYTES = 200


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


def visualise(face: ProcessedFace) -> np.ndarray:
    """(224, 4*224, 3) uint8: crop | landmarks | skin mask overlay (green) | parse mask overlay (blue)."""
    crop = (face.image[0].permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    marked = crop.copy()
    shift = 4
    for k, (x, y) in enumerate(face.landmarks[0].numpy()):
        colour = (255, 255, 0) if 36 <= k < 48 else (255, 64, 64)
        centre = (int(round((x - 0.5) * (1 << shift))), int(round((y - 0.5) * (1 << shift))))
        cv2.circle(marked, centre, 2 << shift, colour, -1, cv2.LINE_AA, shift)
    for x, y in face.points5[0].numpy():
        centre = (int(round((x - 0.5) * (1 << shift))), int(round((y - 0.5) * (1 << shift))))
        cv2.circle(marked, centre, 4 << shift, (0, 255, 0), 1, cv2.LINE_AA, shift)

    def overlay(mask: torch.Tensor, colour: tuple[int, int, int]) -> np.ndarray:
        values = mask[0, 0].numpy()
        alpha = 0.45 * values[..., None]
        tinted = (crop * (1.0 - alpha) + np.array(colour) * alpha + 0.5).astype(np.uint8)
        contours, _ = cv2.findContours((values > 0.5).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        return cv2.drawContours(tinted, contours, -1, (255, 255, 0), 1)

    return np.concatenate(
        [crop, marked, overlay(face.skin_mask, (0, 255, 0)), overlay(face.parse_mask, (40, 80, 255))], 1
    )


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
        logger.info("%s already processed, skipped (use --overwrite to redo them)", count(result.skipped, "image"))
    preprocessor = Preprocessor(config) if todo else None
    with logging_redirect_tqdm():
        for path in tqdm(todo, desc="preprocess", unit="image", disable=not progress, dynamic_ncols=True):
            start = time.perf_counter()
            try:
                faces = preprocess_image(path, preprocessor=preprocessor)
                _write_outputs(output_dir, names[path], faces, config)
                result.processed += 1
                result.faces += len(faces)
            except Exception as err:  # noqa: BLE001 - one image's failure, whatever it is, must not stop the batch
                reason = failure_reason(err, path)
                logger.debug("%s: %s", path.name, reason, exc_info=True)
                logger.error("%s: %s", path.name, reason)
                result.failures.append((path.name, reason))
            result.seconds.append(time.perf_counter() - start)
    write_text(output_dir / "failures.tsv", failures_tsv(result.failures))
    return result


def _write_outputs(output_dir: Path, name: str, faces: list[ProcessedFace], config: PreprocessConfig) -> None:
    stems = [name] if not config.all_faces else [f"{name}_face{k}" for k in range(len(faces))]
    for stem, face in zip(stems, faces):
        face.save(output_dir / f"{stem}.pt")
        if config.visualise:
            write_image(output_dir / "vis" / f"{stem}.png", visualise(face))
    if config.all_faces:
        # Faces left over from an earlier run that found more of them.
        for stale in _existing_outputs(output_dir, name, True):
            if stale.stem not in stems:
                stale.unlink()
                (output_dir / "vis" / f"{stale.stem}.png").unlink(missing_ok=True)
