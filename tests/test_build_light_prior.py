"""The ``light`` step of the default-model recipe on real shared photos."""

from __future__ import annotations

import json
from argparse import Namespace

import numpy as np

from fitting.config import PreprocessConfig
from fitting.preprocess.preprocessor import PreprocessError, Preprocessor
from models.light_prior import LightSkinPrior
from utils.image_io import list_images, read_image


def test_light_step_learns_a_prior_from_face_and_eye_colours(tmp_path, faces_dir):
    from scripts.default_models.light import identity_photo_names, step_light

    photos = faces_dir / "single"
    held_out = identity_photo_names(photos)
    assert held_out, "identities.tsv lists photos"
    preprocessor = Preprocessor(PreprocessConfig(masks="landmarks", checkpoints_dir=str(tmp_path / "none")))
    fit = tmp_path / "work" / "fit"
    (fit / "processed_data").mkdir(parents=True)
    names = []
    for path in list_images(photos)[:40]:
        if len(names) == 22:
            break
        try:
            (face,) = preprocessor(read_image(path), source=path.name)[:1]
        except PreprocessError:
            continue
        face.save(fit / "processed_data" / f"{path.stem}.pt")
        skin = face.skin_mask[0, 0] > 0.5
        colour = face.image[0][:, skin].mean(1)  # what stage 1 records, near enough for the plumbing
        (fit / path.stem).mkdir()
        (fit / path.stem / "metrics.json").write_text(json.dumps(
            {"landmark_residual": 0.01, **{f"face_colour_{c}": float(v) for c, v in zip("rgb", colour)}}))
        names.append(path.stem)
    split = {"train": names[:18], "val": names[18:], "test": []}
    args = Namespace(work=tmp_path / "work", photos=str(photos), output_dir=tmp_path / "out")
    args.output_dir.mkdir()
    prior = step_light(args, split)
    loaded = LightSkinPrior.load(tmp_path / "out" / "light_prior_ict.npz")
    np.testing.assert_allclose(loaded.light_cov, prior.light_cov)
    level = np.ones(3) / np.sqrt(3)
    assert level @ prior.light_cov @ level < 2e-4  # colour only
    summary = json.loads((tmp_path / "work" / "light_prior_summary.json").read_text())
    assert 12 <= summary["train_photos"] <= 18 and summary["held_out_identity_photos"] == len(held_out)
    card = (tmp_path / "out" / "MODEL_CARD_light_prior_ict.md").read_text()
    assert "{" not in card and f"{summary['train_photos']} training photos" in card
