"""Stages 2 and 3 on small synthetic faces with a known answer: the loss falls and the truth is approached.

The faces are rendered with the true shape, pose and light from an albedo the
stage's own model can represent exactly (the UVAPM at known coefficients; the
coarse map plus the detail decoded from a known latent), so the fit has a
unique right answer to move toward.
"""

from __future__ import annotations

import pytest
import torch

from fitting.albedo import AlbedoFitter
from fitting.config import AlbedoFitConfig, DetailFitConfig, OptimConfig
from fitting.detail import DetailFitter
from fitting.structures import FaceBatch, FitState
from models.config import DetailGeneratorConfig
from models.detail_generator import DetailVAE
from models.uv_albedo_model import UVAlbedoModel
from models.uv_layout import UVLayout
from testing.small_models import write_small_models
from testing.synthetic import make_synthetic_faces


@pytest.fixture(scope="module")
def uvapm(tmp_path_factory, ict_model):
    path, _ = write_small_models(tmp_path_factory.mktemp("models"), ict_model.uv_layout_id)
    return UVAlbedoModel.from_file(path)


def _face_region(albedo_fit: torch.Tensor, truth: torch.Tensor, uv_mask: torch.Tensor) -> float:
    """RMS difference over the UV layout's face texels, after the best gain per map and channel (albedo and
    light are only known up to a common scale)."""
    w = uv_mask.expand_as(truth)
    gain = (w * albedo_fit * truth).flatten(2).sum(2) / (w * albedo_fit**2).flatten(2).sum(2)
    return float((((gain[..., None, None] * albedo_fit - truth) ** 2) * w).sum() / w.sum()) ** 0.5


def test_stage2_recovers_known_uvapm_coefficients(ict_model, uvapm):
    torch.manual_seed(0)
    coeffs = 1.5 * torch.randn(1, uvapm.num_coeffs)
    with torch.no_grad():
        truth_map = uvapm(coeffs).clamp(0, 1)
    faces = make_synthetic_faces(ict_model, 1, seed=11, max_yaw_deg=20, albedo_map=truth_map)
    batch = FaceBatch.from_tensors(faces.image, faces.landmarks, faces.mask, detail_size=64)
    config = AlbedoFitConfig(optim=OptimConfig(steps=40, rampdown=0.25), lr_albedo=0.08, init_from_unwrap=False,
                             w_prior=1e-5)
    state = AlbedoFitter(ict_model, uvapm, config=config)(batch, FitState(params=faces.params))
    history = state.histories["stage2"]
    assert sum(history[-1]["photo"]) < 0.3 * sum(history[0]["photo"]), (history[0]["photo"], history[-1]["photo"])
    mean_map = uvapm(torch.zeros(1, uvapm.num_coeffs)).clamp(0, 1)
    uv_mask = UVLayout(ict_model, uvapm.resolution).mask[None]
    before = _face_region(mean_map, truth_map, uv_mask)
    after = _face_region(state.albedo_maps["stage2"], truth_map, uv_mask)
    assert after < 0.4 * before, (before, after)
    # the fitted coefficients point the same way as the true ones
    cosine = torch.nn.functional.cosine_similarity(state.params.albedo, coeffs, dim=1)
    assert (cosine > 0.8).all(), cosine


def test_stage2_leaves_out_the_pixels_the_unwrapping_rejected(ict_model, uvapm):
    """Half the face covered by a dark occluder that the unwrapping's reliability rejects: with
    ``weight_by_reliability`` the fit recovers the albedo from the other half, without it the albedo darkens."""
    from fitting.unwrap import UnwrapResult

    torch.manual_seed(0)
    coeffs = 1.5 * torch.randn(1, uvapm.num_coeffs)
    with torch.no_grad():
        truth_map = uvapm(coeffs).clamp(0, 1)
    faces = make_synthetic_faces(ict_model, 1, seed=11, max_yaw_deg=20, albedo_map=truth_map)
    image = faces.image.clone()
    image[..., :112, :] *= 0.2  # the top half of the crop in a dark occluder's shadow
    reliability = torch.ones(1, 1, 512, 512)
    reliability[..., :256, :] = 0.0
    empty = torch.zeros(1, 3, 64, 64)
    unwrapped = UnwrapResult(empty, empty[:, :1], empty, empty[:, :1], torch.zeros(1), pixel_reliability=reliability)
    batch = FaceBatch.from_tensors(image, faces.landmarks, faces.mask, detail_size=64)
    uv_mask = UVLayout(ict_model, uvapm.resolution).mask[None]
    errors = {}
    for weighted in (True, False):
        config = AlbedoFitConfig(optim=OptimConfig(steps=40, rampdown=0.25), lr_albedo=0.08, init_from_unwrap=False,
                                 w_prior=1e-5, weight_by_reliability=weighted)
        state = AlbedoFitter(ict_model, uvapm, config=config)(batch, FitState(params=faces.params,
                                                                              unwrapped=unwrapped))
        albedo = state.albedo_maps["stage2"]
        errors[weighted] = (_face_region(albedo, truth_map, uv_mask), float((albedo * uv_mask).sum() /
                                                                             (truth_map * uv_mask).sum()))
    assert errors[True][0] < 0.5 * errors[False][0], errors  # RMS over the face: 0.019 against 0.045 when written
    assert errors[False][1] < errors[True][1] - 0.1, errors  # brightness over the truth's: the occluder darkened it


def test_stage2_completes_what_the_model_does_not_vary_with_its_skin_tone(tmp_path, ict_model):
    """Where the UV model holds only its mean (a dark strip here, like the hair and background of a model built
    from photo unwraps), the coarse map continues the modelled texels over a band of ``unseen_fade`` and takes
    their median colour beyond it, not the mean's and not the border's; ``unseen_fade: 0`` is the plain
    push-pull continuation."""
    from scipy.ndimage import distance_transform_edt

    from models.filters import masked_median, push_pull_fill

    path, _ = write_small_models(tmp_path, ict_model.uv_layout_id)
    model = UVAlbedoModel.from_file(path)
    R = model.resolution
    frozen = torch.zeros(R, R, dtype=torch.bool)
    frozen[:, : R // 3] = True
    model.basis[:, :, frozen.flatten()] = 0
    model.mean[:, frozen] = 0.1
    faces = make_synthetic_faces(ict_model, 1, seed=3, max_yaw_deg=10)
    batch = FaceBatch.from_tensors(faces.image, faces.landmarks, faces.mask, detail_size=64)
    maps, decoded = {}, {}
    for fade in (AlbedoFitConfig().unseen_fade, 0.0):
        config = AlbedoFitConfig(optim=OptimConfig(steps=5), init_from_unwrap=False, unseen_fade=fade)
        state = AlbedoFitter(ict_model, model, config=config)(batch, FitState(params=faces.params))
        maps[fade], decoded[fade] = state.albedo_maps["stage2"], model(state.params.albedo).clamp(0, 1)
    fade = AlbedoFitConfig().unseen_fade
    support = model.support()
    decoded, unfaded = decoded[fade], decoded[0.0]
    tone = masked_median(decoded, (support >= 1).float())
    distance = torch.from_numpy(distance_transform_edt((support[0, 0] < 0.5).numpy())).float()
    far = distance > 5 * fade * R
    assert far.sum() > 0.1 * R * R
    assert (maps[fade][0][:, far] - tone[0, :, :, 0]).abs().max() < 0.01
    assert (tone > 0.2).all()  # the skin's tone, not the dark mean
    kept = support[0, 0] >= 1
    torch.testing.assert_close(maps[fade][0][:, kept], decoded[0][:, kept])
    torch.testing.assert_close(maps[0.0], push_pull_fill(unfaded, support))


def test_stage3_moves_the_latent_toward_the_detail_in_the_photo(ict_model, uvapm):
    torch.manual_seed(0)
    config = DetailGeneratorConfig(resolution=64, channels=1, latent_dim=4, latent_grid=4, base_channels=4,
                                   max_channels=16, detail_scale=0.3, low_pass_resolution=32)
    generator = DetailVAE(config).eval()
    with torch.no_grad():  # the output layer starts at zero (no detail); give it weights as training would
        generator.decoder.head.weight.normal_(0.0, 0.3)
    latent = 2.0 * torch.randn(1, generator.latent_dim)
    coarse = uvapm(torch.zeros(1, uvapm.num_coeffs)).clamp(0, 1)
    with torch.no_grad():
        truth_map = generator.combine(coarse, generator.decode(latent))
    assert (truth_map - generator.combine(coarse, generator.decode(torch.zeros_like(latent)))).abs().mean() > 0.01
    faces = make_synthetic_faces(ict_model, 1, seed=12, max_yaw_deg=10, albedo_map=truth_map, image_size=64)
    batch = FaceBatch.from_tensors(faces.image, torch.zeros(1, 68, 2), faces.mask, detail_image=faces.image)
    state = FitState(params=faces.params, albedo_maps={"stage2": coarse})
    fit_config = DetailFitConfig(optim=OptimConfig(steps=40, rampdown=0.2), lr_latent=0.1, render_size=64,
                                 init_from_unwrap=False, observed_detail=False, w_prior=1e-4)
    state = DetailFitter(ict_model, generator, config=fit_config)(batch, state)
    history = state.histories["stage3"]
    first, last = history[0], history[-1]
    assert sum(last["photo"]) + sum(last["high_freq"]) < 0.7 * (sum(first["photo"]) + sum(first["high_freq"]))
    uv_mask = UVLayout(ict_model, 64).mask[None]
    start = generator.combine(coarse, generator.decode(torch.zeros_like(latent)))
    before = _face_region(start, truth_map, uv_mask)
    after = _face_region(state.albedo_maps["stage3"], truth_map, uv_mask)
    assert after < 0.8 * before, (before, after)


def test_stage3_takes_the_seen_texture_where_the_unwrapping_is_confident(ict_model, uvapm):
    """``observed_band: full``: seen texels are the unwrapped texture colour-balanced to the models' albedo (one
    gain per channel), unseen ones the models' albedo plus the seen texels' residual continued smoothly (no
    seam, no flat fill); ``high`` keeps the coarse albedo on seen texels."""
    from fitting.detail import balanced_to
    from fitting.unwrap import UnwrapResult
    from models.filters import faded_fill, push_pull_fill
    from utils.config import ConfigError

    config = DetailGeneratorConfig(resolution=64, channels=1, latent_dim=4, latent_grid=4, base_channels=4,
                                   max_channels=16, detail_scale=0.3, low_pass_resolution=32)
    generator = DetailVAE(config).eval()
    coarse = uvapm(torch.zeros(1, uvapm.num_coeffs)).clamp(0, 1)
    seen = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    confidence = torch.zeros(1, 1, 64, 64)
    confidence[..., :32, :] = 1.0  # the top half seen, the bottom half not
    confidence[..., 30:34, :] = 0.5
    unwrapped = UnwrapResult(seen, confidence, seen, confidence, torch.ones(1))
    generated = generator.decode(torch.zeros(1, generator.latent_dim))
    models_only = generator.combine(coarse, generated)
    blends = {}
    for band in ("full", "high"):
        fitter = DetailFitter(ict_model, generator, config=DetailFitConfig(render_size=64, observed_band=band))
        blends[band] = fitter._observed_blend(coarse, generated, unwrapped)
    full = blends["full"]
    balanced = balanced_to(seen, models_only, confidence)
    torch.testing.assert_close(full[..., :30, :], balanced[..., :30, :])  # the photo where it is trusted
    for c in range(3):  # one gain per channel, not a repaint
        ratio = balanced[0, c, :30] / seen[0, c, :30].clamp_min(1e-3)
        unclamped = (balanced[0, c, :30] < 1) & (seen[0, c, :30] > 0.05)
        assert ratio[unclamped].std() < 1e-4 * ratio[unclamped].mean()
    weight = confidence.expand(-1, 3, -1, -1)
    mean = lambda m: (weight * m).flatten(2).sum(2) / weight.flatten(2).sum(2)  # noqa: E731
    assert (mean(balanced) - mean(models_only)).abs().max() < 0.03
    residual = full - models_only  # elsewhere: the models plus a smooth continuation of the seen residual
    fade = DetailFitConfig().unseen_fade
    torch.testing.assert_close(residual, faded_fill(balanced - models_only, confidence, 0.0, fade))
    assert residual[..., 34 + int(4 * fade * 64):, :].abs().max() < 0.02 * (balanced - models_only).abs().max()
    unfaded = DetailFitter(ict_model, generator, config=DetailFitConfig(render_size=64, unseen_fade=0.0))
    torch.testing.assert_close(unfaded._observed_blend(coarse, generated, unwrapped) - models_only,
                               push_pull_fill(balanced - models_only, confidence))
    support = torch.zeros(1, 1, 64, 64)
    support[..., :48, :] = 1.0  # where the coarse model varies, the residual is continued as it is
    kept = DetailFitter(ict_model, generator, config=DetailFitConfig(render_size=64), coarse_support=support)
    continued = kept._observed_blend(coarse, generated, unwrapped) - models_only
    torch.testing.assert_close(continued[..., :48, :], push_pull_fill(balanced - models_only, confidence)[..., :48, :])
    assert continued[..., 48 + int(4 * fade * 64):, :].abs().max() < 0.02 * (balanced - models_only).abs().max()
    unseen, seen_residual = residual[..., 40:, :], (balanced - models_only)[..., :30, :]
    assert (unseen[..., 1:, :] - unseen[..., :-1, :]).abs().mean() < 0.2 * (
        seen_residual[..., 1:, :] - seen_residual[..., :-1, :]).abs().mean()
    spread = lambda m: (m[..., 40:, :] - m[..., 40:, :].mean((-1, -2), keepdim=True)).abs().mean()  # noqa: E731
    assert spread(full) > 0.9 * spread(models_only) > 1e-3  # the models' structure stays: no flat fill
    high = blends["high"]  # the coarse colour stays: far from the random texture's own colours
    assert (high[..., :30, :] - seen[..., :30, :]).abs().mean() > 0.1
    with pytest.raises(ConfigError, match="observed_band"):
        DetailFitter(ict_model, generator, config=DetailFitConfig(observed_band="all"))
