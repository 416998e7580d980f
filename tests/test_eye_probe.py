"""The whites of the eyes as a light probe, on real photos."""

from __future__ import annotations

import pytest
import torch

from fitting.config import PreprocessConfig
from fitting.eye_probe import eye_colours, iris_colour, sclera_colour, sclera_masks
from fitting.preprocess.preprocessor import Preprocessor
from fitting.structures import FaceBatch
from models.colour import linear_to_srgb, srgb_to_linear
from models.part_texture import DEFAULT_IRIS, DEFAULT_SCLERA
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


def _eyes(batch: FaceBatch, image: torch.Tensor | None = None) -> dict:
    """The sclera and iris metrics of stage 1 for one photo, as floats."""
    image = batch.detail_image if image is None else image
    metrics = {}
    for part, measure in (("sclera", sclera_colour), ("iris", iris_colour)):
        colour, observed = measure(image, batch.dense_landmarks, batch.dense_valid, batch.image.shape[-1])
        metrics.update({f"{part}_{c}": float(colour[0, i]) for i, c in enumerate("rgb")})
        metrics[f"{part}_observed"] = float(observed[0])
    return metrics


def test_the_iris_is_darker_than_the_sclera_and_its_reflectance_ignores_the_scene_light(batches):
    gamma = torch.zeros(1, 27)
    for name, batch in batches.items():
        metrics = _eyes(batch)
        assert metrics["iris_observed"] == 1.0, name
        iris = torch.tensor([metrics[f"iris_{c}"] for c in "rgb"])
        sclera = torch.tensor([metrics[f"sclera_{c}"] for c in "rgb"])
        assert iris.mean() < 0.7 * sclera.mean(), name  # brown eyes in both photos
        assert iris[0] > iris[2], name  # brown: more red than blue
        plain = eye_colours(metrics, gamma)
        # a dim blue-green light (a cast in linear light) changes the photo's iris by the cast, not the iris's
        # reflectance
        cast = torch.tensor([0.4, 0.7, 0.9])
        tinted = _eyes(batch, linear_to_srgb(srgb_to_linear(batch.detail_image) * cast[:, None, None]))
        tinted_iris = torch.tensor([tinted[f"iris_{c}"] for c in "rgb"])
        torch.testing.assert_close(srgb_to_linear(tinted_iris) / srgb_to_linear(iris), cast, atol=0.08, rtol=0)
        torch.testing.assert_close(eye_colours(tinted, gamma).iris, plain.iris, atol=0.03, rtol=0)
        torch.testing.assert_close(plain.sclera[0], torch.tensor(DEFAULT_SCLERA))
    # eyes not seen: the default reflectances
    unseen = eye_colours({"iris_observed": 0.0, "sclera_observed": 0.0, **{f"{p}_{c}": 0.0 for p in ("iris", "sclera")
                                                                            for c in "rgb"}}, gamma)
    torch.testing.assert_close(unseen.iris[0], torch.tensor(DEFAULT_IRIS))
