"""The light/skin prior: its split, its closed-form fit and its file format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.light_prior import LightSkinPrior

LEVEL = np.full((3, 3), 1 / 3)


def _prior(samples: int = 0) -> LightSkinPrior:
    """Skin that varies mostly in level and along blue, eyes that vary in level, light in level and colour."""
    skin_axis = np.array([0.3, 0.45, 0.84])
    return LightSkinPrior(
        skin_mean=np.log(np.array([0.62, 0.45, 0.36], np.float32)),
        sclera_mean=np.log(np.array([0.6, 0.56, 0.54], np.float32)),
        skin_cov=(0.3**2 * np.outer(skin_axis, skin_axis) / (skin_axis @ skin_axis) + 0.02**2 * np.eye(3)
                  ).astype(np.float32),
        sclera_cov=(0.3**2 * LEVEL + 0.03**2 * (np.eye(3) - LEVEL)).astype(np.float32),
        light_cov=(0.25**2 * LEVEL + 0.1**2 * (np.eye(3) - LEVEL)).astype(np.float32),
        samples=samples)


def _sample(prior: LightSkinPrior, n: int, seed: int):
    rng = np.random.default_rng(seed)
    skin = rng.multivariate_normal(prior.skin_mean, prior.skin_cov, size=n)
    sclera = rng.multivariate_normal(prior.sclera_mean, prior.sclera_cov, size=n)
    light = rng.multivariate_normal(np.zeros(3), prior.light_cov, size=n)
    return skin, sclera, light


def test_split_keeps_the_product_and_the_mean_face_is_all_skin():
    prior = _prior()
    mean = torch.tensor(np.exp(prior.skin_mean))
    colour = torch.stack([mean, mean * torch.tensor([0.8, 1.1, 1.1])])
    skin, light = prior.split(colour)
    torch.testing.assert_close(skin * light, colour, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(light[0], torch.ones(3), rtol=1e-5, atol=1e-6)


def test_the_eyes_tell_a_dim_scene_from_dark_skin():
    """The same dark face: with eyes as bright as usual it is darker skin, with eyes darkened as much as the face
    it is a dimmer light; unseen eyes fall in between."""
    prior = _prior()
    darkening = np.exp(-0.8 * np.array([0.3, 0.45, 0.84]) / np.linalg.norm([0.3, 0.45, 0.84]))
    face = torch.tensor(np.exp(prior.skin_mean) * darkening)[None].float()
    bright_eyes = torch.tensor(np.exp(prior.sclera_mean))[None].float()
    dark_eyes = bright_eyes * torch.tensor(darkening).float()
    _, light_bright = prior.split(face, bright_eyes)
    _, light_dark = prior.split(face, dark_eyes)
    skin_unseen, light_unseen = prior.split(face, dark_eyes, torch.tensor([False]))
    log_darkening = float(np.log(darkening).mean())
    share = lambda light: float(light.log().mean()) / log_darkening  # noqa: E731  (the light's share)
    assert share(light_bright) < 0.25 < share(light_unseen) < 0.75 < share(light_dark), (
        share(light_bright), share(light_unseen), share(light_dark))
    torch.testing.assert_close(skin_unseen, prior.split(face)[0])  # unseen eyes: the face alone


def test_split_of_sampled_faces_beats_taking_all_of_the_colour_as_skin():
    prior = _prior()
    skin, sclera, light = _sample(prior, 2000, seed=3)
    colour = torch.tensor(np.exp(skin + light), dtype=torch.float32)
    eyes = torch.tensor(np.exp(sclera + light), dtype=torch.float32)
    truth = torch.tensor(skin, dtype=torch.float32)
    for eyes_seen in (None, eyes):
        estimate, _ = prior.split(colour, eyes_seen, floor=1e-6)
        error = (estimate.log() - truth).pow(2).mean().sqrt()
        baseline = (colour.log() - truth).pow(2).mean().sqrt()
        assert error < 0.8 * baseline, (eyes_seen is None, error, baseline)
    with_eyes, _ = prior.split(colour, eyes, floor=1e-6)
    face_only, _ = prior.split(colour, floor=1e-6)
    assert (with_eyes.log() - truth).pow(2).mean() < (face_only.log() - truth).pow(2).mean()


def test_fit_recovers_the_covariances_it_was_sampled_from():
    truth = _prior()
    skin, sclera, light = _sample(truth, 40000, seed=0)
    fitted = LightSkinPrior.fit(skin + light, sclera + light, trim=10.0, light_level=True)
    assert fitted.samples == 40000
    np.testing.assert_allclose(fitted.skin_mean, truth.skin_mean, atol=0.01)
    np.testing.assert_allclose(fitted.sclera_mean, truth.sclera_mean, atol=0.01)
    for name in ("skin_cov", "sclera_cov", "light_cov"):
        np.testing.assert_allclose(getattr(fitted, name), getattr(truth, name), atol=3e-3, err_msg=name)


def test_fit_by_default_splits_colour_casts_only_and_keeps_a_dark_face_dark():
    truth = _prior()
    skin, sclera, light = _sample(truth, 20000, seed=2)
    fitted = LightSkinPrior.fit(skin + light, sclera + light, trim=10.0)
    level = np.ones(3) / np.sqrt(3)
    assert level @ fitted.light_cov @ level < 2e-4  # no level left in the light
    plane = np.eye(3) - LEVEL
    np.testing.assert_allclose(plane @ fitted.light_cov @ plane, plane @ truth.light_cov @ plane, atol=3e-3)
    # What the light lost went to the skin and the eyes: the photos' covariance is still explained.
    np.testing.assert_allclose(fitted.skin_cov + fitted.light_cov, np.cov((skin + light).T), atol=3e-3)
    mean = torch.tensor(np.exp(fitted.skin_mean))
    darker = (mean * 0.5)[None].float()
    skin_estimate, light_estimate = fitted.split(darker)
    torch.testing.assert_close(light_estimate.log().mean(), torch.tensor(0.0), atol=0.02, rtol=0)
    green = (mean * torch.tensor([0.8, 1.2, 0.8]))[None].float()
    _, green_light = fitted.split(green)
    assert green_light[0, 1] > green_light[0, 0] and green_light[0, 1] > green_light[0, 2]


def test_fit_leaves_outliers_out_and_rejects_bad_input():
    truth = _prior()
    skin, sclera, light = _sample(truth, 600, seed=1)
    colours, scleras = skin + light, sclera + light
    colours[:5] = [3.0, -6.0, 0.0]
    fitted = LightSkinPrior.fit(colours, scleras)
    assert fitted.samples <= 595
    np.testing.assert_allclose(fitted.skin_mean, truth.skin_mean, atol=0.06)
    with pytest.raises(ValueError, match="log_colours, log_scleras"):
        LightSkinPrior.fit(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="log_colours, log_scleras"):
        LightSkinPrior.fit(colours, scleras[:-1])


def test_save_load_round_trip_and_bad_files(tmp_path):
    prior = _prior(samples=42)
    path = tmp_path / "prior.npz"
    prior.save(path)
    loaded = LightSkinPrior.load(path)
    for a, b in zip(loaded.light_gains(), prior.light_gains()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert loaded.samples == 42
    other = tmp_path / "other.npz"
    np.savez(other, skin_mean=np.zeros(3))
    with pytest.raises(ValueError, match="other.npz: not a light/skin prior"):
        LightSkinPrior.load(other)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="junk.npz: not a readable light/skin prior"):
        LightSkinPrior.load(junk)


def test_light_colour_of_scaled_sh_light():
    from models.shading import scale_light_colour, sh_light_colour

    gamma = torch.zeros(2, 27)
    gamma[:, 1:9] = 0.1  # some direction, the same in every channel
    gain = torch.tensor([[1.0, 1.0, 1.0], [1.2, 1.0, 0.7]])
    colour = sh_light_colour(scale_light_colour(gamma, gain))
    torch.testing.assert_close(colour[0], torch.ones(3))
    torch.testing.assert_close(colour[1], gain[1] / gain[1].mean())
