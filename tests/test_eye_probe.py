"""The whites of the eyes as a light probe, on real photos."""

from __future__ import annotations

import pytest
import torch

from fitting.config import PreprocessConfig
from fitting.eye_probe import sclera_colour, sclera_masks
from fitting.preprocess.preprocessor import Preprocessor
from fitting.structures import FaceBatch
from utils.image_io import read_image

# Frontal with open eyes: light skin; dark skin at 1024 px.
OPEN_EYES = ["0003_d3dfr.jpg", "0162_stargan2.jpg"]


@pytest.fixture(scope="module")
def batches(faces_dir, tmp_path_factory):
    preprocessor = Preprocessor(PreprocessConfig(masks="landmarks",
                                                 checkpoints_dir=str(tmp_path_factory.mktemp("none"))))
    out = {}
    for name in OPEN_EYES:
        photo = read_image(faces_dir / "single" / name)
        (face,) = preprocessor(photo, source=name)
        out[name] = FaceBatch.from_faces([name], [face], [photo], 512)
    return out


def _measure(batch: FaceBatch, image: torch.Tensor | None = None):
    return sclera_colour(batch.detail_image if image is None else image, batch.dense_landmarks, batch.dense_valid,
                         batch.image.shape[-1])


def test_the_sclera_lies_inside_the_eyes_and_is_paler_than_the_skin(batches):
    for name, batch in batches.items():
        assert batch.dense_valid[0] == 1, name
        mask = torch.from_numpy(sclera_masks(batch.dense_landmarks, batch.dense_valid, 224, 512)[0])
        ys, xs = torch.nonzero(mask, as_tuple=True)
        points = batch.dense_landmarks[0, :, :2] * (512 / 224)
        eye_y = points[[33, 133, 263, 362], 1]
        assert len(ys) > 100, name
        assert eye_y.min() - 25 < ys.float().mean() < eye_y.max() + 25, name  # at the eyes' height
        colour, observed = _measure(batch)
        assert observed[0], name
        skin_pixels = torch.nn.functional.interpolate(batch.skin_mask, size=512)[0, 0] > 0.5
        skin = batch.detail_image[0][:, skin_pixels]
        assert colour[0].mean() > skin.mean(), name  # whites of the eyes are paler than the skin, whatever its tone
        assert (colour[0].max() - colour[0].min()) < 0.2, (name, colour)  # and nearly grey under white light


def test_a_colour_cast_on_the_photo_shows_in_the_sclera(batches):
    batch = batches[OPEN_EYES[0]]
    cast = torch.tensor([0.7, 1.0, 1.25])
    plain, _ = _measure(batch)
    tinted, observed = _measure(batch, (batch.detail_image * cast[:, None, None]).clamp(0, 1))
    assert observed[0]
    torch.testing.assert_close(tinted[0] / plain[0], cast, atol=0.06, rtol=0)


def test_no_facemesh_points_no_measurement(batches):
    batch = batches[OPEN_EYES[0]]
    colour, observed = sclera_colour(batch.detail_image, batch.dense_landmarks, torch.zeros(1), 224)
    assert not observed[0] and colour.abs().sum() == 0
