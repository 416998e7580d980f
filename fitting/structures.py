"""The data that flows between the stages of a reconstruction.

* :class:`ProcessedFace`: one face after preprocessing, as stored in
  ``processed_data/<name>.pt`` (:meth:`ProcessedFace.save` / :meth:`ProcessedFace.load`).
* :class:`FaceBatch`: the faces fitted together, stacked batch-first; what
  every stage reads. It never changes during a fit.
* :class:`FitState`: what the stages have produced so far. A stage is any
  callable ``stage(batch, state) -> state`` with a ``name``
  (:class:`Stage`); :class:`~fitting.pipeline.Pipeline` runs its list of
  stages in order, starting from an empty state.
* :class:`FaceResult`: one face's slice of the final state, which is all
  :mod:`fitting.outputs` reads.

Shapes follow :mod:`models` (pixels from the top-left corner, y down, pixel
centres at +0.5; images (B, 3, H, W) in [0, 1]). S = 224 is the aligned crop.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from utils.atomic import save_torch
from utils.errors import FileFormatError
from utils.safe_load import load_torch

from .groups import PhotoGroups
from .params import FaceParams
from .preprocess.alignment import CROP_SIZE, warp_to_crop
from .preprocess.facemesh import NUM_POINTS

__all__ = [
    "PROCESSED_FORMAT_VERSION",
    "ProcessedInfo",
    "ProcessedFace",
    "FaceBatch",
    "FitState",
    "FaceResult",
    "Stage",
    "photo_crops",
]

#: Version of the processed-face file. Version 1 files (without dense landmarks) still load; others are refused.
PROCESSED_FORMAT_VERSION = "2"


@dataclass
class ProcessedInfo:
    """Where a processed face came from (all strings).

    Attributes:
        source: the photo's path.
        detector: the detector that found the face (``hog``, ``cnn``, ...).
        landmarks: the landmark predictor and its model file.
        masks: how the masks were made (``bisenet`` or ``landmarks+skin-colour``).
        template: the alignment template.
        format_version: :data:`PROCESSED_FORMAT_VERSION`.
    """

    source: str = ""
    detector: str = ""
    landmarks: str = ""
    masks: str = ""
    template: str = ""
    format_version: str = PROCESSED_FORMAT_VERSION


@dataclass
class ProcessedFace:
    """One preprocessed face (tensors float32 on the CPU, with a leading batch dimension of 1).

    The file (``torch.load(path, weights_only=True)``) is a dict of these
    fields, ``info`` as a dict of strings. Differences from the reference's
    ``processed_data/*.pt`` (official_formats.md §4.7): landmarks are y-down,
    the masks are single-channel, the ArcFace matrix ``M`` is not stored (it
    is a function of the landmarks) and ``transform`` replaces ``trans_params``.

    Attributes:
        image: (1, 3, S, S) aligned crop, RGB in [0, 1].
        landmarks: (1, 68, 2) iBUG-68 landmarks in crop pixels (from FaceMesh's
            points, or dlib's predictor when FaceMesh found no face: see ``info.landmarks``).
        landmarks_original: (1, 68, 2) the same in photo pixels.
        dense_landmarks: (1, 478, 3) FaceMesh points in crop pixels (x, y; z a
            relative depth in crop pixels); zeros when ``dense_valid`` is 0.
        dense_valid: (1,) 1 when ``dense_landmarks`` holds FaceMesh's points.
        points5: (1, 5, 2) eye centres, nose tip, mouth corners in crop pixels.
        transform: (1, 2, 3) photo pixels -> crop pixels.
        inverse_transform: (1, 2, 3) crop pixels -> photo pixels.
        skin_mask, parse_mask: (1, 1, S, S) in [0, 1].
        detector_score: (1,) the detector's confidence.
        face_box: (1, 4) x0, y0, x1, y1 in photo pixels.
        original_size: (2,) int64 photo height, width.
        info: provenance.
    """

    image: torch.Tensor
    landmarks: torch.Tensor
    landmarks_original: torch.Tensor
    dense_landmarks: torch.Tensor
    dense_valid: torch.Tensor
    points5: torch.Tensor
    transform: torch.Tensor
    inverse_transform: torch.Tensor
    skin_mask: torch.Tensor
    parse_mask: torch.Tensor
    detector_score: torch.Tensor
    face_box: torch.Tensor
    original_size: torch.Tensor
    info: ProcessedInfo = field(default_factory=ProcessedInfo)

    #: field -> (shape, dtype) of the stored tensors.
    SCHEMA = {
        "image": ((1, 3, CROP_SIZE, CROP_SIZE), torch.float32),
        "landmarks": ((1, 68, 2), torch.float32),
        "landmarks_original": ((1, 68, 2), torch.float32),
        "dense_landmarks": ((1, NUM_POINTS, 3), torch.float32),
        "dense_valid": ((1,), torch.float32),
        "points5": ((1, 5, 2), torch.float32),
        "transform": ((1, 2, 3), torch.float32),
        "inverse_transform": ((1, 2, 3), torch.float32),
        "skin_mask": ((1, 1, CROP_SIZE, CROP_SIZE), torch.float32),
        "parse_mask": ((1, 1, CROP_SIZE, CROP_SIZE), torch.float32),
        "detector_score": ((1,), torch.float32),
        "face_box": ((1, 4), torch.float32),
        "original_size": ((2,), torch.int64),
    }

    def to_dict(self) -> dict:
        """The file's content: the tensors and ``info`` as a dict of strings."""
        return {**{name: getattr(self, name) for name in self.SCHEMA}, "info": asdict(self.info)}

    def save(self, path: str | os.PathLike) -> None:
        """Write the face atomically."""
        save_torch(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike) -> ProcessedFace:
        """Read a processed ``.pt`` file and check its keys, shapes, types and value ranges.

        Raises:
            FileFormatError: unreadable, not a processed file, or a wrong shape.
        """
        data = load_torch(path)
        if not isinstance(data, dict):
            raise FileFormatError(path, "not a processed face file (expected a dict)")
        info = data.get("info")
        if isinstance(info, dict) and info.get("format_version") == "1":  # before dense landmarks
            data = {**data, "dense_landmarks": torch.zeros(1, NUM_POINTS, 3), "dense_valid": torch.zeros(1),
                    "info": {**info, "format_version": PROCESSED_FORMAT_VERSION}}
        missing = [k for k in (*cls.SCHEMA, "info") if k not in data]
        if missing:
            raise FileFormatError(path, f"not a processed face file: missing keys {missing}")
        for key, (shape, dtype) in cls.SCHEMA.items():
            value = data[key]
            if not isinstance(value, torch.Tensor) or tuple(value.shape) != shape or value.dtype != dtype:
                got = f"{tuple(value.shape)} {value.dtype}" if isinstance(value, torch.Tensor) else type(value).__name__
                raise FileFormatError(path, f"{key!r} is {got}, expected {shape} {dtype}")
        info = data["info"]
        keys = [f.name for f in fields(ProcessedInfo)]
        if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in keys):
            raise FileFormatError(path, f"'info' must be a dict with string entries {keys}")
        if info["format_version"] != PROCESSED_FORMAT_VERSION:
            raise FileFormatError(path, f"format_version {info['format_version']!r}, expected "
                                        f"{PROCESSED_FORMAT_VERSION!r}")
        for key in ("image", "skin_mask", "parse_mask"):
            value = data[key]
            if not torch.isfinite(value).all() or value.min() < 0.0 or value.max() > 1.0:
                raise FileFormatError(path, f"{key!r} has values outside [0, 1]")
        return cls(**{k: data[k] for k in cls.SCHEMA}, info=ProcessedInfo(**{k: info[k] for k in keys}))


@dataclass
class FaceBatch:
    """The faces of one fit, batch-first; the input of every stage.

    Attributes:
        names: (B,) face names (output folder names).
        image: (B, 3, S, S) aligned crops.
        landmarks: (B, 68, 2) detected landmarks in crop pixels.
        skin_mask, parse_mask: (B, 1, S, S).
        dense_landmarks: (B, 478, 3) FaceMesh points in crop pixels (zeros where invalid).
        dense_valid: (B,) 1 where a face has FaceMesh points.
        detail_image: (B, 3, D, D) the photo re-warped into the same crop at
            the detail resolution D (the crop upsampled when the photo is missing).
        faces: the processed faces (None for batches built from tensors).
        photos: each face's photo as (H, W, 3) uint8, or None.
        groups: (B,) the person each photo shows, for a joint fit of several photos of one person
            (:mod:`fitting.groups`); None: every photo is its own person.
    """

    names: list[str]
    image: torch.Tensor
    landmarks: torch.Tensor
    skin_mask: torch.Tensor
    parse_mask: torch.Tensor
    detail_image: torch.Tensor
    dense_landmarks: torch.Tensor
    dense_valid: torch.Tensor
    faces: list[ProcessedFace] | None = None
    photos: list[np.ndarray | None] | None = None
    groups: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.names)

    @property
    def photo_groups(self) -> PhotoGroups:
        """Which photos show the same person (one person per photo without ``groups``)."""
        return PhotoGroups.of(self.groups, len(self), self.image.device)

    @property
    def device(self) -> torch.device:
        return self.image.device

    @classmethod
    def from_faces(cls, names: list[str], faces: list[ProcessedFace], photos: list[np.ndarray | None],
                   detail_size: int, device: torch.device | str = "cpu",
                   groups: list[int] | None = None) -> FaceBatch:
        """Stack processed faces; ``detail_image`` is each photo re-warped at ``detail_size``; ``groups``: the
        person of each face for a joint fit (None: one person per face)."""
        stack = lambda key: torch.cat([getattr(f, key) for f in faces]).to(device)  # noqa: E731
        image = stack("image")
        return cls(list(names), image, stack("landmarks"), stack("skin_mask"), stack("parse_mask"),
                   photo_crops(faces, photos, image, detail_size), stack("dense_landmarks"), stack("dense_valid"),
                   list(faces), list(photos), None if groups is None else torch.as_tensor(groups, device=device).long())

    def crops_at(self, size: int) -> torch.Tensor:
        """(B, 3, size, size) the photos re-warped into the crop at ``size`` (``detail_image`` resized for
        faces without a photo, and for batches built from tensors)."""
        if self.faces is None or self.photos is None:
            return _resize(self.detail_image, size, "bicubic").clamp(0, 1)
        return photo_crops(self.faces, self.photos, self.image, size)

    @classmethod
    def from_tensors(cls, image: torch.Tensor, landmarks: torch.Tensor, skin_mask: torch.Tensor,
                     parse_mask: torch.Tensor | None = None, detail_image: torch.Tensor | None = None,
                     detail_size: int = 512, names: list[str] | None = None,
                     dense_landmarks: torch.Tensor | None = None, groups: torch.Tensor | None = None) -> FaceBatch:
        """A batch of synthetic or already-stacked inputs (no processed files or photos).

        ``parse_mask`` defaults to ones, ``detail_image`` to ``image`` upsampled
        to ``detail_size``; without ``dense_landmarks`` (B, 478, 3) the faces have none; ``groups`` (B,): the
        person of each face (None: one per face).
        """
        B = image.shape[0]
        parse_mask = torch.ones_like(skin_mask) if parse_mask is None else parse_mask
        if detail_image is None:
            detail_image = _resize(image, detail_size, "bicubic").clamp(0, 1)
        valid = image.new_ones(B) if dense_landmarks is not None else image.new_zeros(B)
        if dense_landmarks is None:
            dense_landmarks = image.new_zeros(B, NUM_POINTS, 3)
        return cls(names or [f"face{b}" for b in range(B)], image, landmarks, skin_mask, parse_mask, detail_image,
                   dense_landmarks, valid, groups=groups)


@dataclass
class FitState:
    """What the stages have produced for a batch (every tensor batch-first).

    Attributes:
        params: the current parameters (None before stage 1).
        landmarks: (B, 68, 2) fitted landmarks in crop pixels, the jaw on the
            silhouette (the dlib convention: the visible outline).
        landmarks_fixed: (B, 68, 2) the face model's 68 landmark vertices in crop
            pixels (the AFLW2000-3D convention: fixed surface points, hidden ones included).
        landmark_residual: (B,) fitted vs detected landmarks, normalised by the
            outer-eye-corner distance (agreement with the detector, not accuracy).
        landmark_residual_initial: (B,) the same after the landmark fit alone.
        unwrapped: the unwrapped photo texture (:class:`~fitting.unwrap.UnwrapResult`).
        albedo_maps: stage name -> (B, 3, R, R) UV albedo, in the order the stages ran
            (``stage1``: the low-resolution proxy; ``stage2``: the coarse UVAPM
            albedo; ``stage3``: with detail).
        histories: stage name -> per-step loss terms (per face).
        renders: stage name -> (B, 3, S, S) re-render composited on the crop.
        render_mask: (B, 1, S, S) rendered face region.
        metrics: name -> (B,) numbers for ``metrics.json``.
        seconds: stage name -> seconds for the whole batch.
        albedo_1024: (B, 3, 1024, 1024) the final albedo composed at 1024 texels from the photo at that
            resolution (:mod:`fitting.high_resolution`; None unless that stage ran).
    """

    params: FaceParams | None = None
    landmarks: torch.Tensor | None = None
    landmarks_fixed: torch.Tensor | None = None
    landmark_residual: torch.Tensor | None = None
    landmark_residual_initial: torch.Tensor | None = None
    unwrapped: object | None = None
    albedo_maps: dict[str, torch.Tensor] = field(default_factory=dict)
    histories: dict[str, list] = field(default_factory=dict)
    renders: dict[str, torch.Tensor] = field(default_factory=dict)
    render_mask: torch.Tensor | None = None
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    albedo_1024: torch.Tensor | None = None

    def updated(self, **changes) -> FitState:
        """A copy with ``changes``; dict fields given here are merged into the current ones."""
        merged = {k: {**getattr(self, k), **v} if isinstance(getattr(self, k), dict) else v
                  for k, v in changes.items()}
        return replace(self, **merged)

    @property
    def final_stage(self) -> str:
        """The last stage that produced an albedo map ("" before stage 1)."""
        return next(reversed(self.albedo_maps), "")


class Stage(Protocol):
    """A step of the reconstruction: reads the batch and the state, returns the new state."""

    name: str

    def __call__(self, batch: FaceBatch, state: FitState) -> FitState: ...


@dataclass
class FaceResult:
    """One face's share of a fit: what :func:`fitting.outputs.write_face_outputs` writes.

    Attributes:
        name: the face's name.
        face: its processed face (None for synthetic batches).
        photo: its photo (H, W, 3) uint8, or None.
        params: its parameters (batch of 1).
        landmarks: (68, 2) fitted landmarks in crop pixels, the jaw on the silhouette.
        landmarks_fixed: (68, 2) the face model's 68 landmark vertices in crop pixels.
        albedo_maps: stage name -> (3, R, R), in the order the stages ran.
        uv_texture, uv_confidence: (3, R, R), (1, R, R) unwrapped texture (filled) and its confidence.
        renders: stage name -> (3, S, S) re-render composited on the crop.
        render_mask: (1, S, S).
        histories: stage name -> per-step loss terms of this face.
        metrics: name -> float.
        seconds: stage name -> seconds (the batch's time divided by its size).
        albedo_1024: (3, 1024, 1024) the final albedo at 1024 texels, or None.
    """

    name: str
    face: ProcessedFace | None
    photo: np.ndarray | None
    params: FaceParams
    landmarks: torch.Tensor
    landmarks_fixed: torch.Tensor
    albedo_maps: dict[str, torch.Tensor]
    uv_texture: torch.Tensor
    uv_confidence: torch.Tensor
    renders: dict[str, torch.Tensor]
    render_mask: torch.Tensor
    histories: dict[str, list]
    metrics: dict[str, float]
    seconds: dict[str, float]
    albedo_1024: torch.Tensor | None = None

    @property
    def final_stage(self) -> str:
        return next(reversed(self.albedo_maps), "")

    @classmethod
    def split(cls, batch: FaceBatch, state: FitState) -> list[FaceResult]:
        """One result per face of ``batch`` (tensors on the CPU)."""
        B = len(batch)
        out = []
        for b in range(B):
            out.append(cls(
                name=batch.names[b],
                face=batch.faces[b] if batch.faces else None,
                photo=batch.photos[b] if batch.photos else None,
                params=state.params.select(slice(b, b + 1)),
                landmarks=state.landmarks[b].cpu(),
                landmarks_fixed=state.landmarks_fixed[b].cpu(),
                albedo_maps={k: v[b].cpu() for k, v in state.albedo_maps.items()},
                uv_texture=state.unwrapped.filled[b].cpu(),
                uv_confidence=state.unwrapped.confidence[b].cpu(),
                renders={k: v[b].cpu() for k, v in state.renders.items()},
                render_mask=state.render_mask[b].cpu(),
                histories={k: [{n: v[b] for n, v in step.items()} for step in h] for k, h in state.histories.items()},
                metrics={k: float(v[b]) for k, v in state.metrics.items()},
                seconds={k: v / B for k, v in state.seconds.items()},
                albedo_1024=None if state.albedo_1024 is None else state.albedo_1024[b].cpu(),
            ))
        return out


def photo_crops(faces: list[ProcessedFace], photos: list[np.ndarray | None], image: torch.Tensor,
                size: int) -> torch.Tensor:
    """(B, 3, size, size) each photo re-warped into its face's crop at ``size`` px, on ``image``'s device;
    the aligned crop ``image`` (B, 3, S, S) upsampled where a photo is None."""
    crops = []
    for face, photo, crop in zip(faces, photos, image):
        if photo is None:
            crops.append(_resize(crop[None], size, "bicubic")[0].clamp(0, 1))
            continue
        transform = face.transform[0].double().numpy() * (size / image.shape[-1])
        warped = warp_to_crop(photo, transform, size)
        crops.append(torch.from_numpy(warped).permute(2, 0, 1).float().div(255.0).to(image.device))
    return torch.stack(crops)


def _resize(image: torch.Tensor, size: int, mode: str) -> torch.Tensor:
    if image.shape[-1] == size:
        return image
    return F.interpolate(image, size=size, mode=mode, align_corners=False)
