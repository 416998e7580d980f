"""UV albedo maps as training data for the detail generator.

A dataset is a folder (searched recursively) of UV maps, each optionally
paired with a confidence map of the same name plus a suffix (``face.png`` and
``face_conf.png``; any image extension). Confidence (grey level / 255)
weights the reconstruction loss per texel, e.g. low where the unwrapping
filled texels in from a template.

Augmentation respects UV semantics: a texel's position is a place on the
face, so the map may not be rotated, scaled or freely flipped.

* **Left-right flip** only through an explicit mapping (``flip_map``):
  ``"mirror"`` for a layout that is mirror-symmetric about its vertical centre
  line, or an ``.npz`` whose ``source`` array (R, R, 2) gives, for every
  texel, the (row, col) of its mirror counterpart. Nearest lookup: no
  resampling blur.
* **Translation** by whole texels, at most ``max_shift`` of the side: it
  mimics registration error between unwrapped faces without interpolating
  (interpolation would blur the very detail being learnt). Texels shifted in
  from outside repeat the edge and get confidence 0.
* **Brightness / contrast** jitter on the map before the detail is
  extracted, with clamping to [0, 1]. Contrast scales the detail amplitude
  (the high-pass is linear); brightness acts on the detail only through the
  clamp (saturated texels lose their detail, as under a different exposure).

No rotation, scaling, blur or noise (noise would be learnt as detail).

Randomness is drawn per sample from ``(seed, epoch, index)``, so a sample is
the same whatever the number of worker processes or training processes, and
a resumed run sees the same data as an uninterrupted one. The dataset also
draws the VAE's sampling noise for the sample, for the same reason.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from models.config import DetailAugmentConfig, DetailGeneratorConfig
from utils.errors import FileFormatError, ToolkitError
from utils.image_io import list_images, read_image
from utils.safe_load import load_npz

from .vae import extract_detail

__all__ = [
    "UVMapItem",
    "find_uv_maps",
    "check_uv_maps",
    "split_train_val",
    "load_flip_map",
    "augment_uv_map",
    "UVDetailDataset",
]

logger = logging.getLogger("uvapm.detail_dataset")


@dataclass(frozen=True)
class UVMapItem:
    """One training sample: a UV map and its optional confidence map."""

    map_path: str
    confidence_path: str | None = None


def find_uv_maps(folder: str | os.PathLike, confidence_suffix: str = "_conf") -> list[UVMapItem]:
    """UV maps under ``folder`` (recursive, sorted), each paired with its confidence map if present.

    A file ``<stem><confidence_suffix>.<ext>`` beside a map ``<stem>.<ext2>``
    is that map's confidence map, not a sample.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ToolkitError(f"{folder}: dataset folder not found")
    files = list_images(folder, recursive=True)
    by_stem = {(path.parent, path.stem): path for path in files}
    confidence = {}
    if confidence_suffix:
        for path in files:
            if path.stem.endswith(confidence_suffix):
                owner = (path.parent, path.stem[: -len(confidence_suffix)])
                if owner in by_stem:
                    confidence[owner] = path
    conf_paths = set(confidence.values())
    return [UVMapItem(str(path), str(confidence[key]) if (key := (path.parent, path.stem)) in confidence else None)
            for path in files if path not in conf_paths]


def _read_map(path: str) -> np.ndarray:
    image = read_image(path)
    height, width = image.shape[:2]
    if height != width:
        raise FileFormatError(path, f"UV maps are square, this image is {width}x{height}")
    return image


def check_uv_maps(items: Sequence[UVMapItem], progress: bool = False
                  ) -> tuple[list[UVMapItem], list[tuple[str, str]]]:
    """Decode every map and confidence map once.

    Returns:
        The usable items, and (file, reason) for every file that cannot be used.
    """
    usable, problems = [], []
    for item in tqdm(items, desc="checking UV maps", disable=not progress, leave=False):
        try:
            size = _read_map(item.map_path).shape[0]
            if item.confidence_path is not None:
                conf = read_image(item.confidence_path)
                if conf.shape[:2] != (size, size):
                    raise FileFormatError(
                        item.confidence_path, f"confidence map is {conf.shape[1]}x{conf.shape[0]}, "
                        f"its UV map {size}x{size}"
                    )
        except FileFormatError as err:
            problems.append((err.path, err.reason))
            continue
        usable.append(item)
    return usable, problems


def split_train_val(count: int, val_split: float, seed: int) -> tuple[list[int], list[int]]:
    """Deterministic split of ``range(count)``: at least one sample in each part."""
    if count < 2:
        raise ToolkitError(f"need at least 2 UV maps to split into training and validation, got {count}")
    order = np.random.default_rng(seed).permutation(count)
    num_val = min(max(1, round(val_split * count)), count - 1)
    return sorted(order[num_val:].tolist()), sorted(order[:num_val].tolist())


def load_flip_map(spec: str, resolution: int) -> np.ndarray | None:
    """(R, R, 2) int64 source texel of every texel's mirror counterpart, or None for no flip."""
    if not spec:
        return None
    if spec == "mirror":
        rows, cols = np.meshgrid(np.arange(resolution), np.arange(resolution)[::-1], indexing="ij")
        return np.stack((rows, cols), axis=-1)
    source = load_npz(spec, required=["source"])["source"]
    if source.shape != (resolution, resolution, 2) or not np.issubdtype(source.dtype, np.integer):
        raise FileFormatError(
            spec, f"'source' must be an integer array of shape ({resolution}, {resolution}, 2), "
            f"got {source.dtype} {source.shape}"
        )
    if source.min() < 0 or source.max() >= resolution:
        raise FileFormatError(spec, f"'source' holds texel indices outside [0, {resolution})")
    return source.astype(np.int64)


def _shift(array: np.ndarray, dy: int, dx: int, fill: float | None) -> np.ndarray:
    """Translate by whole texels; exposed texels repeat the edge (``fill`` None) or take ``fill``."""
    size = array.shape[0]
    rows = np.clip(np.arange(size) - dy, 0, size - 1)
    cols = np.clip(np.arange(size) - dx, 0, size - 1)
    out = array[rows][:, cols]
    if fill is not None:
        if dy > 0:
            out[:dy] = fill
        elif dy < 0:
            out[dy:] = fill
        if dx > 0:
            out[:, :dx] = fill
        elif dx < 0:
            out[:, dx:] = fill
    return out


def augment_uv_map(
    image: np.ndarray,
    confidence: np.ndarray,
    rng: np.random.Generator,
    config: DetailAugmentConfig,
    flip_source: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Augment a UV map and its confidence (see the module docstring).

    Args:
        image: (R, R, 3) float32 in [0, 1].
        confidence: (R, R) float32 in [0, 1].
        flip_source: (R, R, 2) from :func:`load_flip_map`, or None.

    Returns:
        The augmented (image, confidence), same shapes.
    """
    if flip_source is not None and rng.random() < 0.5:
        image = image[flip_source[..., 0], flip_source[..., 1]]
        confidence = confidence[flip_source[..., 0], flip_source[..., 1]]
    limit = int(round(config.max_shift * image.shape[0]))
    if limit > 0:
        dy, dx = (int(v) for v in rng.integers(-limit, limit + 1, size=2))
        image = _shift(image, dy, dx, None)
        confidence = _shift(confidence, dy, dx, 0.0)
    contrast = 1.0 + rng.uniform(-config.contrast, config.contrast)
    brightness = rng.uniform(-config.brightness, config.brightness)
    if contrast != 1.0 or brightness != 0.0:
        mean = image.mean(axis=(0, 1), keepdims=True)
        image = np.clip((image - mean) * contrast + mean + brightness, 0.0, 1.0)
    return image.astype(np.float32), confidence


def _resize(array: np.ndarray, size: int) -> np.ndarray:
    if array.shape[0] == size:
        return array
    interpolation = cv2.INTER_AREA if array.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(array, (size, size), interpolation=interpolation)


class UVDetailDataset(Dataset):
    """Detail maps of UV albedo maps, as the detail generator sees them.

    Each item is a dict: ``detail`` (C, R, R), ``weight`` (1, R, R)
    confidence, ``noise`` (latent_size,) standard normal sampling noise for
    the VAE, ``index`` (int). Maps of another size are resized to R (area
    when shrinking, bicubic when enlarging: an enlarged map has little
    detail to learn).

    Args:
        items: the samples.
        model_config: resolution, channels and low-pass resolution of the detail.
        augment: augmentation settings, or None (validation: no augmentation).
        seed: base of the per-sample randomness.
    """

    def __init__(
        self,
        items: Sequence[UVMapItem],
        model_config: DetailGeneratorConfig,
        augment: DetailAugmentConfig | None = None,
        seed: int = 0,
    ):
        self.items = list(items)
        self.model_config = model_config
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self.flip_source = load_flip_map(augment.flip_map, model_config.resolution) if augment else None

    def set_epoch(self, epoch: int) -> None:
        """Select the augmentation and noise of ``epoch`` (call before creating the loader's iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        item = self.items[index]
        size = self.model_config.resolution
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image = _resize(_read_map(item.map_path).astype(np.float32) / 255.0, size)
        if item.confidence_path is None:
            confidence = np.ones((size, size), np.float32)
        else:
            confidence = _resize(read_image(item.confidence_path).astype(np.float32).mean(axis=2) / 255.0, size)
        if self.augment is not None:
            image, confidence = augment_uv_map(image, confidence, rng, self.augment, self.flip_source)
        maps = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
        detail = extract_detail(maps, self.model_config.low_pass_resolution, self.model_config.channels)[0]
        noise = rng.standard_normal(self.model_config.latent_size(), dtype=np.float32)
        return {
            "detail": detail,
            "weight": torch.from_numpy(np.ascontiguousarray(confidence, dtype=np.float32)).unsqueeze(0),
            "noise": torch.from_numpy(noise),
            "index": index,
        }
