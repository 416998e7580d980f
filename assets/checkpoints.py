"""The paper's official checkpoints: where each goes and what it enables.

This table is the single source for ``python -m assets check`` and for
``checkpoints/README.md``; runtime code asks :func:`official_path` for a file
and reports :attr:`OfficialCheckpoint.without` when it is absent.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["OfficialCheckpoint", "OFFICIAL_CHECKPOINTS", "official_path", "checkpoint_status"]


@dataclass(frozen=True)
class OfficialCheckpoint:
    key: str
    relpath: str
    enables: str
    without: str


OFFICIAL_CHECKPOINTS = (
    OfficialCheckpoint(
        "parsing", "parsing_model/79999_iter.pth",
        "BiSeNet face parsing (19 CelebAMask-HQ classes) for the skin and parse masks",
        "masks come from the landmarks refined by a per-image skin-colour model",
    ),
    OfficialCheckpoint(
        "deep3d", "deep3d_model/epoch_latest.pth",
        "Deep3D ResNet-50 coefficient regressor to initialise HiFi3D++/BFM fitting",
        "shape fitting starts from the mean face and a landmark fit",
    ),
    OfficialCheckpoint(
        "arcface", "arcface_model/ms1mv3_arcface_r50_fp16_backbone.pth",
        "ArcFace r50 identity loss in stages 2 and 3",
        "the identity loss is skipped",
    ),
    OfficialCheckpoint(
        "vgg", "vgg_model/vgg16.pt",
        "VGG16/LPIPS perceptual loss in stages 2 and 3 (TorchScript)",
        "the perceptual loss is skipped",
    ),
    OfficialCheckpoint(
        "detail_vae", "detail_model/variational_autoencoder.pth",
        "the paper's detail VAE (HiFi3D++ UV layout, HSV V-channel mode)",
        "the default detail generator for the installed face model is used",
    ),
    OfficialCheckpoint(
        "uvapm", "uv3dmm/model_256.pkl",
        "the paper's UVAPM (per-channel PCA, HiFi3D++ UV layout)",
        "the default UVAPM for the installed face model is used",
    ),
    OfficialCheckpoint(
        "dlib_landmarks", "dlib_model/shape_predictor_68_face_landmarks.dat",
        "dlib 68-landmark predictor (same model as the bundled default)",
        "the copy shipped by face-recognition-models is used",
    ),
    OfficialCheckpoint(
        "resnet18", "resnet_model/resnet18-5c106cde.pth",
        "ImageNet ResNet-18 the reference loads before the BiSeNet weights",
        "nothing: 79999_iter.pth already holds the whole BiSeNet",
    ),
    OfficialCheckpoint(
        "autoencoder", "detail_model/autoencoder_model.pth",
        "listed by the paper but never read by its code",
        "nothing",
    ),
    OfficialCheckpoint(
        "lm_tf", "lm_model/68lm_detector.pb",
        "the reference's TensorFlow 68-landmark graph (not used: dlib or FAN instead)",
        "nothing",
    ),
    OfficialCheckpoint(
        "mtcnn_tf", "mtcnn_model/mtcnn_model.pb",
        "the reference's TensorFlow MTCNN detector (not used: dlib instead)",
        "nothing",
    ),
)


def official_path(checkpoints_dir: str | os.PathLike, key: str) -> Path:
    """Path where the official checkpoint ``key`` is expected."""
    for ckpt in OFFICIAL_CHECKPOINTS:
        if ckpt.key == key:
            return Path(checkpoints_dir) / ckpt.relpath
    raise KeyError(f"unknown official checkpoint {key!r}")


def checkpoint_status(checkpoints_dir: str | os.PathLike) -> list[tuple[OfficialCheckpoint, bool]]:
    """Each official checkpoint with whether it is present under ``checkpoints_dir``."""
    return [(c, (Path(checkpoints_dir) / c.relpath).is_file()) for c in OFFICIAL_CHECKPOINTS]
