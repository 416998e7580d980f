"""UV layout and texture unwrapping on synthetic faces with a known albedo."""

from __future__ import annotations

import pytest
import torch

from fitting.unwrap import unwrap_texture
from models.filters import push_pull_fill
from models.uv_layout import UVLayout
from testing.synthetic import make_synthetic_faces


@pytest.fixture(scope="module")
def layout(ict_model):
    return UVLayout(ict_model, 128)


def test_layout_covers_the_face_tile_and_mirrors_it(ict_model, layout):
    assert 0.9 < layout.mask.mean() < 1.0  # the ICT face fills most of its [0, 1]^2 tile
    positions = layout.to_uv(ict_model.mean_shape[None])[0]
    mirrored = layout.mirrored(positions[None])[0]
    covered = layout.mask[0].bool()
    has_mirror = covered & (layout.mirror != torch.arange(128 * 128).view(128, 128))
    assert has_mirror.float().sum() > 0.9 * covered.float().sum()
    # the mirror of a texel is (nearly) its 3D point reflected in x
    spacing = 30.0 / 128  # cm per texel, roughly
    assert (mirrored[0][has_mirror] + positions[0][has_mirror]).abs().max() < 2 * spacing
    assert (mirrored[1:][:, has_mirror] - positions[1:][:, has_mirror]).abs().max() < 2 * spacing


def test_unwrap_recovers_the_albedo_where_seen(ict_model, layout):
    truth = make_synthetic_faces(ict_model, 2, seed=5, max_yaw_deg=30)
    result = unwrap_texture(ict_model, truth.params, truth.image, truth.mask, layout)
    target = torch.nn.functional.interpolate(truth.albedo_map, size=128, mode="area")
    sure = (result.confidence > 0.9).expand(-1, 3, -1, -1)
    assert sure.float().mean() > 0.2
    error = (result.texture - target).abs()[sure]
    assert error.median() < 0.03, error.median()
    # a turned head leaves one side unseen; the mirror fills much of it with the right values
    assert (result.filled_confidence > result.confidence + 0.3).float().mean() > 0.05
    mirrored_only = ((result.confidence < 0.05) & (result.filled_confidence > 0.5)).expand(-1, 3, -1, -1)
    assert (result.filled - target).abs()[mirrored_only].median() < 0.08
    assert torch.isfinite(result.filled).all() and (result.coverage > 0.2).all()


def test_unwrap_excludes_what_the_skin_mask_excludes(ict_model, layout):
    truth = make_synthetic_faces(ict_model, 1, seed=6, max_yaw_deg=0)
    no_skin = truth.mask.clone()
    no_skin[..., :112, :] = 0  # hide the upper half of the image
    result = unwrap_texture(ict_model, truth.params, truth.image, no_skin, layout)
    full = unwrap_texture(ict_model, truth.params, truth.image, truth.mask, layout)
    assert result.coverage < 0.7 * full.coverage
    upper_uv = result.confidence[..., : 128 // 3, :]  # the forehead lies in the top of the ICT layout
    assert upper_uv.max() < 0.05


def test_push_pull_keeps_known_values_and_fills_holes_smoothly():
    values = torch.zeros(1, 1, 32, 32)
    values[..., :, :16] = 1.0
    weights = torch.ones(1, 1, 32, 32)
    weights[..., 8:24, 12:20] = 0  # a hole across the edge
    filled = push_pull_fill(values * weights, weights)
    torch.testing.assert_close(filled[weights.bool()], values[weights.bool()])
    hole = filled[..., 8:24, 12:20]
    assert hole.min() > 0.0 and hole.max() < 1.0
    assert (hole[..., :, 0] > hole[..., :, -1]).all()  # left of the hole stays brighter than right


def test_unwrapper_keeps_the_features_of_the_parse_mask(ict_model):
    """By default the texture takes what the parse mask allows (brows, nose, lips); ``mask: skin`` only skin; the
    skin texels are known either way."""
    from fitting.config import UnwrapConfig
    from fitting.structures import FaceBatch, FitState
    from fitting.unwrap import Unwrapper
    from utils.config import ConfigError

    truth = make_synthetic_faces(ict_model, 1, seed=6, max_yaw_deg=0)
    skin = truth.mask.clone()
    skin[..., 140:, :] = 0  # as if the lips and chin were not skin
    batch = FaceBatch.from_tensors(truth.image, truth.landmarks, skin, parse_mask=truth.mask, detail_size=224)
    state = FitState(params=truth.params)
    coverage, results = {}, {}
    for mask in ("parse", "skin"):
        results[mask] = Unwrapper(ict_model, UnwrapConfig(resolution=128, mask=mask))(batch, state).unwrapped
        coverage[mask] = float(results[mask].coverage)
    assert coverage["skin"] < 0.85 * coverage["parse"]
    # either way, the skin texels (what the albedo's skin tone is measured on) are those of the skin mask (up to
    # the outlier test's median, taken over the one mask's pixels or the other's)
    torch.testing.assert_close(results["parse"].skin_confidence, results["skin"].confidence, rtol=0, atol=1e-3)
    with pytest.raises(ConfigError, match="unwrap.mask"):
        Unwrapper(ict_model, UnwrapConfig(mask="hair"))


def test_outlier_pixels_lose_their_trust_and_features_wider_than_the_window_keep_it():
    from fitting.config import UnwrapConfig
    from fitting.unwrap import outlier_reliability

    texture = torch.full((1, 3, 256, 256), 0.5)
    texture[..., 100:103, 20:230] = 0.08  # a glasses frame: 3 pixels wide, nearly black
    texture[..., 160:180, 40:120] = 0.2  # a brow: 20 pixels tall, dark
    texture[..., 60:63, 150:153] = 1.0  # a highlight
    texture[..., :, 240:] = 0.0  # black background
    confidence = torch.ones(1, 1, 256, 256)
    confidence[..., :, 240:] = 0  # not the face: must not drag the median down
    trust = outlier_reliability(texture, confidence, UnwrapConfig())  # window 21 at 512 -> 11 at 256
    assert trust[0, 0, 100:103, 30:220].max() == 0
    assert trust[0, 0, 98:105, 30:220].max() == 0  # and its anti-aliased edges (window / 5 around it)
    assert trust[0, 0, 60:63, 150:153].max() == 0
    assert trust[0, 0, 164:176, 50:110].min() == 1  # the brow's inside
    assert trust[0, 0, 20:50, 20:230].min() == 1  # plain skin, also next to the unseen part
    assert trust[0, 0, 200:, 220:239].min() == 1
    off = outlier_reliability(texture, confidence, UnwrapConfig(outlier_window=0))
    assert off.min() == 1


def test_unwrapper_rejects_bad_outlier_ratios(ict_model):
    from fitting.config import UnwrapConfig
    from fitting.unwrap import Unwrapper
    from utils.config import ConfigError

    with pytest.raises(ConfigError, match="unwrap.outlier_dark: expected two increasing positive ratios"):
        Unwrapper(ict_model, UnwrapConfig(resolution=64, outlier_dark=[0.6, 0.45]))


def test_occluder_pixels_leave_the_texture(ict_model):
    """Pixels marked as occluders (glasses frames) give no confidence, wherever the masks would allow them."""
    from fitting.config import UnwrapConfig

    truth = make_synthetic_faces(ict_model, 1, seed=6, max_yaw_deg=0)
    layout = UVLayout(ict_model, 64)
    occluders = torch.zeros(1, 1, 224, 224)
    occluders[..., :, :112] = 1.0  # the image's left half
    config = UnwrapConfig(resolution=64)
    plain = unwrap_texture(ict_model, truth.params, truth.image, truth.mask, layout, config)
    masked = unwrap_texture(ict_model, truth.params, truth.image, truth.mask, layout, config, occluders=occluders)
    assert 0.35 < float(masked.coverage / plain.coverage) < 0.65
    everywhere = torch.ones_like(occluders)
    both = unwrap_texture(ict_model, truth.params, truth.image, None, layout, config, occluders=everywhere)
    assert float(both.coverage) == 0.0
