"""Glasses frames found by their shape round the eyes, on real photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from fitting.config import GlassesConfig, PreprocessConfig
from fitting.glasses import BROWS, EYE_CORNERS, detect_glasses
from fitting.preprocess.preprocessor import Preprocessor
from fitting.structures import FaceBatch
from utils.image_io import read_image

# Thick dark frames (frontal), thin gold wire frames (three-quarter view); no glasses: light skin, dark skin.
GLASSES = ["0097_deepface.jpg", "0020_d3dfr.png"]
NO_GLASSES = ["0003_d3dfr.jpg", "0162_stargan2.jpg"]


@pytest.fixture(scope="module")
def batch(faces_dir, tmp_path_factory):
    preprocessor = Preprocessor(PreprocessConfig(masks="landmarks",
                                                 checkpoints_dir=str(tmp_path_factory.mktemp("none"))))
    names, faces, photos = [], [], []
    for name in GLASSES + NO_GLASSES:
        photo = read_image(faces_dir / "single" / name)
        (face,) = preprocessor(photo, source=name)
        names.append(name), faces.append(face), photos.append(photo)
    return FaceBatch.from_faces(names, faces, photos, 512)


def _detect(batch: FaceBatch, image: torch.Tensor | None = None, **overrides):
    image = batch.detail_image if image is None else image
    return detect_glasses(image, batch.dense_landmarks, batch.dense_valid, batch.image.shape[-1],
                          GlassesConfig(**overrides))


def test_frames_are_found_on_glasses_wearers_only(batch):
    found = _detect(batch)
    assert found.present.tolist() == [True, True, False, False]
    assert (found.score[:2] >= 0.6).all() and (found.score[2:] <= 0.2).all()
    share = found.mask.mean((1, 2, 3))
    assert (share[:2] > 0.01).all() and (share[:2] < 0.1).all()
    assert found.mask[2:].max() == 0
    assert not _detect(batch, enabled=False).present.any()
    no_points = detect_glasses(batch.detail_image[:1], batch.dense_landmarks[:1], torch.zeros(1), 224)
    assert not no_points.present.any() and no_points.mask.max() == 0


def test_the_mask_covers_the_dark_frame_and_spares_the_brows(batch):
    """0097's frames are black: the near-black pixels round the eyes (the frame; his skin is far lighter) are
    mostly masked (hair at the temples is near-black too), and not much else."""
    found = _detect(batch)
    image = batch.detail_image[0].mean(0)
    mask = found.mask[0, 0] > 0
    points = batch.dense_landmarks[0, :, :2].numpy() * 512 / batch.image.shape[-1]
    ring = np.zeros((512, 512), np.uint8)
    for outer, inner in EYE_CORNERS:
        centre, width = 0.5 * (points[outer] + points[inner]), np.linalg.norm(points[outer] - points[inner])
        cv2.circle(ring, tuple(int(v) for v in centre), int(1.4 * width), 1, -1)
        cv2.circle(ring, tuple(int(v) for v in centre), int(0.7 * width), 0, -1)
    ring = torch.from_numpy(ring).bool()
    frame = ring & (image < 0.12)
    assert frame.sum() > 500
    assert mask[frame].float().mean() > 0.8
    assert (mask & ring).sum() < 0.5 * ring.sum()
    brow = np.zeros((512, 512), np.uint8)
    cv2.fillPoly(brow, [np.round(points[[70, 63, 105, 66, 107, 55, 65, 52, 53, 46]]).astype(np.int32)], 1)
    assert mask[torch.from_numpy(brow).bool()].sum() == 0


def test_a_frame_as_light_as_the_skin_is_found_by_its_colour(batch):
    """Gold rims drawn round the eyes of a face without glasses, at the skin's own luminance: the outlier test of
    the unwrapping cannot see them, the colour contrast does, and the mask covers them."""
    index = 2  # 0003, no glasses
    image = batch.detail_image[index:index + 1].clone()
    points = batch.dense_landmarks[index, :, :2].numpy() * 512 / batch.image.shape[-1]
    rims = np.zeros((512, 512), np.uint8)
    for outer, inner in EYE_CORNERS:
        centre, width = 0.5 * (points[outer] + points[inner]), np.linalg.norm(points[outer] - points[inner])
        cv2.ellipse(rims, tuple(int(v) for v in centre), (int(0.95 * width), int(0.75 * width)), 0, 0, 360, 1, 3)
    drawn = torch.from_numpy(rims).bool()
    skin = image[0][:, drawn].mean(1)
    gold = torch.tensor([0.25, 0.05, -0.45]) * skin.mean()
    gold = (skin + gold - gold.mean()).clamp(0, 1)  # the same mean as the skin, another colour
    image[0][:, drawn] = gold[:, None]
    assert abs(float(image[0][:, drawn].mean() - skin.mean())) < 0.02
    plain = _detect(batch)
    assert not plain.present[index]
    found = detect_glasses(image, batch.dense_landmarks[index:index + 1], batch.dense_valid[index:index + 1],
                           batch.image.shape[-1])
    assert found.present.item()
    brows = np.zeros((512, 512), np.uint8)
    for brow in BROWS:
        cv2.fillPoly(brows, [np.round(points[list(brow)]).astype(np.int32)], 1)
    off_brows = drawn & ~torch.from_numpy(brows).bool()  # where a rim crosses a brow, the brow is kept
    assert found.mask[0, 0][off_brows].float().mean() > 0.85


def test_small_crops_are_not_searched(batch):
    """At 64 px a rim is under a pixel wide: nothing is found, and nothing masked, even on 0097's thick frames."""
    small = torch.nn.functional.interpolate(batch.detail_image, size=64, mode="area")
    found = _detect(batch, small)
    assert not found.present.any() and found.mask.max() == 0 and found.mask.shape[-1] == 64
    at_256 = _detect(batch, torch.nn.functional.interpolate(batch.detail_image, size=256, mode="area"))
    assert at_256.present.tolist() == [True, True, False, False]  # the same faces as at 512
