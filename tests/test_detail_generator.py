"""Detail generator: detail definition, combinations, VAE maths, both architectures and their checkpoints."""

from __future__ import annotations

import colorsys
import os

import numpy as np
import pytest
import torch

from models.colour import hsv_to_rgb, rgb_to_hsv
from models.config import DetailGeneratorConfig
from models.detail_generator import (
    FORMAT_VERSION,
    DetailGenerator,
    DetailVAE,
    PaperDetailVAE,
    combine_detail,
    combine_detail_hsv_reference,
    detail_generator_checkpoint,
    extract_detail,
    kl_divergence,
    load_detail_checkpoint,
    load_detail_generator,
    reparameterize,
    save_detail_generator,
)
from models.filters import area_high_pass, area_low_pass
from utils.config import ConfigError
from utils.errors import FileFormatError

TINY = DetailGeneratorConfig(resolution=32, channels=1, latent_dim=8, latent_grid=1, base_channels=4, max_channels=16,
                             low_pass_resolution=16)


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one thread avoids oversubscribing shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _randomise_head(model: DetailVAE) -> DetailVAE:
    """The output conv starts at zero (no detail); give it weights as training would."""
    with torch.no_grad():
        model.decoder.head.weight.normal_(0.0, 0.1)
    return model


# ----------------------------------------------------------------------------- detail definition


def test_low_pass_keeps_constants_and_removes_the_finest_checkerboard():
    constant = torch.full((1, 3, 32, 32), 0.4)
    torch.testing.assert_close(area_low_pass(constant, 16), constant)
    assert area_high_pass(constant, 16).abs().max() < 1e-6

    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((rows + cols) % 2).float().view(1, 1, 32, 32)
    # every 2x2 area cell averages to 0.5, so the low-pass is flat and the detail is +-0.5
    torch.testing.assert_close(area_low_pass(checker, 16), torch.full_like(checker, 0.5))
    torch.testing.assert_close(area_high_pass(checker, 16), checker - 0.5)
    with pytest.raises(ValueError, match="below the map size"):
        area_low_pass(checker, 32)


def test_luminance_detail_uses_bt601_weights():
    rows, cols = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    checker = ((rows + cols) % 2).float()
    maps = torch.zeros(1, 3, 32, 32)
    maps[0, 1] = checker  # detail only in green
    luminance = extract_detail(maps, 16, channels=1)
    assert luminance.shape == (1, 1, 32, 32)
    torch.testing.assert_close(luminance[0, 0], 0.587 * (checker - 0.5))
    rgb = extract_detail(maps, 16, channels=3)
    torch.testing.assert_close(rgb[0, 1], checker - 0.5)
    assert rgb[0, 0].abs().max() < 1e-6


def test_combine_detail_adds_luminance_equally_and_clamps():
    coarse = torch.tensor([0.5, 0.3, 0.98]).view(1, 3, 1, 1).expand(1, 3, 4, 4)
    detail = torch.full((1, 1, 8, 8), 0.05)
    albedo = combine_detail(coarse, detail)
    assert albedo.shape == (1, 3, 8, 8)
    torch.testing.assert_close(albedo[0, :, 3, 3], torch.tensor([0.55, 0.35, 1.0]))
    rgb_detail = torch.zeros(1, 3, 8, 8)
    rgb_detail[:, 0] = -0.6
    torch.testing.assert_close(combine_detail(coarse, rgb_detail)[0, :, 0, 0], torch.tensor([0.0, 0.3, 0.98]))


# ----------------------------------------------------------------------------- HSV (paper's combination)


def test_hsv_conversion_matches_colorsys():
    rgb = torch.rand(2, 3, 5, 5, generator=torch.Generator().manual_seed(3))
    rgb[0, :, 0, 0] = 0.5  # grey
    rgb[0, :, 0, 1] = 0.0  # black
    rgb[0, :, 0, 2] = torch.tensor([0.7, 0.7, 0.2])  # tie for the maximum
    hsv = rgb_to_hsv(rgb)
    expected = np.array([colorsys.rgb_to_hsv(*map(float, p)) for p in rgb.permute(0, 2, 3, 1).reshape(-1, 3)])
    got = hsv.permute(0, 2, 3, 1).reshape(-1, 3).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-6)
    torch.testing.assert_close(hsv_to_rgb(hsv), rgb, atol=1e-6, rtol=0)


def test_hsv_reference_combination_on_hand_computed_pixels():
    # coarse (0.6, 0.4, 0.2): hue 30 deg, saturation 2/3; the reference's V is 0.01 * 0.3 and it scales by 255
    # at the end, so the max channel is 2.55 * 0.3 = 0.765 and the others keep the coarse ratios:
    # (0.765, 0.765 * 2/3, 0.765 / 3).
    coarse = torch.tensor([[0.6, 0.5, 0.0, 1.0], [0.4, 0.5, 0.0, 0.5], [0.2, 0.5, 0.0, 0.0]]).view(1, 3, 1, 4)
    decoder_out = torch.tensor([0.3, 0.2, 1.0, 1.0]).view(1, 1, 1, 4)
    albedo = combine_detail_hsv_reference(coarse, decoder_out)
    expected = torch.tensor([
        [0.765, 0.51, 0.255],   # the worked example
        [0.51, 0.51, 0.51],     # grey: 2.55 * 0.2 on every channel
        [2.55, 2.55, 2.55],     # black coarse: saturation 0, brightness from the decoder alone
        [2.55, 1.275, 0.0],     # values above 1 are kept, as in the reference
    ]).T.reshape(1, 3, 1, 4)
    torch.testing.assert_close(albedo, expected, atol=1e-5, rtol=0)


def test_hsv_reference_combination_equals_documented_closed_form_and_has_finite_gradients():
    generator = torch.Generator().manual_seed(5)
    coarse = torch.rand(1, 3, 8, 8, generator=generator) * 0.9 + 0.05
    coarse[0, :, 0, 0] = 0.4  # grey pixel: hue undefined
    decoder_out = torch.rand(1, 1, 16, 16, generator=generator).requires_grad_()
    albedo = combine_detail_hsv_reference(coarse, decoder_out)
    up = torch.nn.functional.interpolate(coarse, size=(16, 16), mode="bilinear", align_corners=False)
    closed_form = up / up.max(dim=1, keepdim=True).values * 2.55 * decoder_out
    torch.testing.assert_close(albedo, closed_form, atol=1e-5, rtol=1e-5)

    coarse_param = coarse.clone().requires_grad_()
    combine_detail_hsv_reference(coarse_param, decoder_out).sum().backward()
    assert torch.isfinite(decoder_out.grad).all() and decoder_out.grad.abs().sum() > 0
    assert torch.isfinite(coarse_param.grad).all()


# ----------------------------------------------------------------------------- VAE maths


def test_kl_divergence_and_reparameterisation():
    generator = torch.Generator().manual_seed(1)
    mu, logvar = torch.randn(3, 6, generator=generator), torch.randn(3, 6, generator=generator)
    expected = torch.distributions.kl_divergence(
        torch.distributions.Normal(mu, (0.5 * logvar).exp()), torch.distributions.Normal(0.0, 1.0)
    ).sum(-1)
    torch.testing.assert_close(kl_divergence(mu, logvar), expected)
    assert torch.all(kl_divergence(torch.zeros(2, 4), torch.zeros(2, 4)) == 0)

    eps = torch.randn(3, 6, generator=generator)
    torch.testing.assert_close(reparameterize(mu, logvar, eps), mu + eps * torch.exp(0.5 * logvar))
    torch.manual_seed(0)
    samples = reparameterize(torch.full((20000, 1), 2.0), torch.full((20000, 1), np.log(0.25)))
    assert abs(samples.mean().item() - 2.0) < 0.02 and abs(samples.std().item() - 0.5) < 0.02


# ----------------------------------------------------------------------------- our model


@pytest.mark.parametrize("channels", [1, 3])
def test_detail_vae_shapes_bounds_and_determinism(channels):
    config = DetailGeneratorConfig(**{**TINY.__dict__, "channels": channels})
    model = _randomise_head(DetailVAE(config))
    detail = 0.05 * torch.randn(2, channels, 32, 32)
    model.eval()
    first, second = model(detail), model(detail)
    assert first.detail.shape == (2, channels, 32, 32) and first.mu.shape == (2, 8)
    torch.testing.assert_close(first.detail, second.detail, rtol=0, atol=0)
    torch.testing.assert_close(first.detail, model.decode(first.mu), rtol=0, atol=0)
    assert first.detail.abs().max() < 2 * config.detail_scale
    model.train()
    eps = torch.randn(2, 8)
    torch.testing.assert_close(model(detail, eps=eps).detail, model.decode(reparameterize(first.mu, first.logvar, eps)))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert model.sample(3, generator=torch.Generator().manual_seed(0)).shape == (3, channels, 32, 32)


def test_untrained_decoder_outputs_no_detail():
    model = DetailVAE(TINY).eval()
    assert torch.all(model.decode(torch.randn(2, 8)) == 0)


def test_decoder_cannot_shift_the_coarse_colour():
    model = DetailVAE(TINY).eval()
    with torch.no_grad():
        model.decoder.head.bias.fill_(0.3)  # a raw output that is a pure brightness offset ...
    assert model.decode(torch.randn(2, 8)).abs().max() < 1e-6  # ... is removed by the high-pass


def test_decoder_latent_can_be_fitted_by_gradient():
    torch.manual_seed(0)
    model = _randomise_head(DetailVAE(TINY)).eval().requires_grad_(False)
    target = model.decode(torch.randn(1, 8)).detach()
    latent = torch.zeros(1, 8, requires_grad=True)
    optimizer = torch.optim.Adam([latent], lr=0.1)
    start = torch.nn.functional.mse_loss(model.decode(latent), target).item()
    for _ in range(60):
        loss = torch.nn.functional.mse_loss(model.decode(latent), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.2 * start


def test_spatial_latent_shapes_and_locality():
    """With a latent grid, each cell holds the detail of its own region: the shapes follow the grid, and a change
    of one cell's latent changes the decoded detail mostly near that cell (GroupNorm spreads a little)."""
    torch.manual_seed(0)
    config = DetailGeneratorConfig(**{**TINY.__dict__, "latent_dim": 2, "latent_grid": 8})
    model = _randomise_head(DetailVAE(config)).eval()
    assert config.latent_size() == model.latent_dim == 2 * 8 * 8
    out = model(0.05 * torch.randn(2, 1, 32, 32))
    assert out.mu.shape == out.logvar.shape == (2, 128) and out.detail.shape == (2, 1, 32, 32)
    z = torch.randn(1, 128)
    moved = z.clone().view(1, 2, 8, 8)
    moved[0, :, 1, 1] += 3.0  # the cell of texels 4..7 x 4..7
    change = (model.decode(moved.view(1, -1)) - model.decode(z))[0, 0].square()
    near = change[:14, :14].sum() / change.sum()
    assert change.sum() > 0 and near > 0.9, float(near)


@pytest.mark.parametrize("change, message", [
    ({"latent_grid": 3}, "latent_grid"),
    ({"latent_grid": 32}, "latent_grid"),
    ({"resolution": 48}, "power of two"),
    ({"channels": 2}, "1 \\(luminance\\) or 3"),
    ({"low_pass_resolution": 32}, "low_pass_resolution"),
    ({"detail_scale": 0.0}, "detail_scale"),
])
def test_invalid_config_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        DetailVAE(DetailGeneratorConfig(**{**TINY.__dict__, **change}))


def test_our_checkpoint_round_trip(tmp_path):
    config = DetailGeneratorConfig(**{**TINY.__dict__, "channels": 3})
    model = _randomise_head(DetailVAE(config)).eval()
    save_detail_generator(tmp_path / "detail.pt", model)
    raw = torch.load(tmp_path / "detail.pt", weights_only=True)
    assert raw["format_version"] == FORMAT_VERSION and raw["config"]["channels"] == 3
    loaded = load_detail_generator(tmp_path / "detail.pt")
    assert isinstance(loaded, DetailVAE) and isinstance(loaded, DetailGenerator) and not loaded.training
    assert loaded.config == config
    z = torch.randn(2, 8)
    torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)


# ----------------------------------------------------------------------------- the paper's model


@pytest.fixture(scope="module")
def paper_file(tmp_path_factory):
    """A small paper-layout VAE (32x32 output) saved as a plain state_dict, like the official file."""
    torch.manual_seed(7)
    model = PaperDetailVAE(out_size=32).eval()
    path = tmp_path_factory.mktemp("paper") / "variational_autoencoder.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_paper_layout_keys_and_shapes(paper_file):
    model, _ = paper_file
    state = model.state_dict()
    assert {key.split(".")[0] for key in state} == {"encoder", "fc_mu", "fc_logvar", "decoder"}
    assert {key.split(".")[1] for key in state if key.startswith("encoder.")} == {"0", "1", "4", "5", "6", "7"}
    shapes = {
        "encoder.0.weight": (64, 1, 7, 7),
        "encoder.1.running_var": (64,),
        "encoder.4.0.conv1.weight": (64, 64, 1, 1),
        "encoder.7.2.bn3.weight": (2048,),
        "fc_mu.weight": (500, 2048),
        "fc_logvar.bias": (500,),
        "decoder.0.weight": (512, 500),
        "decoder.2.weight": (1024, 512),
        "decoder.4.weight": (32 * 32, 1024),
        "decoder.4.bias": (32 * 32,),
    }
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    assert "encoder.0.bias" not in state
    assert sorted(k for k in state if k.startswith("decoder.")) == [
        "decoder.0.bias", "decoder.0.weight", "decoder.2.bias", "decoder.2.weight", "decoder.4.bias",
        "decoder.4.weight"]


def test_paper_checkpoint_is_detected_and_reproduces_outputs(paper_file):
    model, path = paper_file
    loaded = load_detail_generator(path)
    assert isinstance(loaded, PaperDetailVAE) and isinstance(loaded, DetailGenerator)
    assert loaded.out_size == 32 and loaded.latent_dim == 500 and not loaded.training
    z = torch.randn(2, 500)
    torch.testing.assert_close(loaded.decode(z), model.decode(z), rtol=0, atol=0)
    image = torch.rand(2, 1, 64, 64)
    torch.testing.assert_close(loaded(image).detail, model(image).detail, rtol=0, atol=0)
    coarse = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(loaded.combine(coarse, loaded.decode(z)),
                               combine_detail_hsv_reference(coarse, model.decode(z)))


def test_paper_checkpoint_with_missing_key_names_it(paper_file, tmp_path):
    model, _ = paper_file
    state = dict(model.state_dict())
    del state["encoder.7.2.bn3.weight"]
    state["head.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(FileFormatError, match=r"bad.pth: wrong architecture for the paper's detail VAE: "
                                              r"missing keys \[encoder.7.2.bn3.weight\]; "
                                              r"unexpected keys \[head.weight\]"):
        load_detail_generator(tmp_path / "bad.pth")


# ----------------------------------------------------------------------------- bad files


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_bad_checkpoints_give_one_line_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = DetailVAE(TINY)
    save_detail_generator(tmp_path / "good.pt", model)
    data = (tmp_path / "good.pt").read_bytes()

    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="cut.pt: corrupt or truncated checkpoint"):
        load_detail_generator(tmp_path / "cut.pt")

    torch.save({"format_version": 1, "config": {}, "state_dict": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(FileFormatError, match="evil.pt: refused"):
        load_detail_generator(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()

    checkpoint = detail_generator_checkpoint(model)
    torch.save({**checkpoint, "format_version": FORMAT_VERSION + 1}, tmp_path / "future.pt")
    with pytest.raises(FileFormatError, match=f"future.pt: format_version {FORMAT_VERSION + 1} is newer"):
        load_detail_generator(tmp_path / "future.pt")

    state = dict(checkpoint["state_dict"])
    state.pop("decoder.head.bias")
    torch.save({**checkpoint, "state_dict": state}, tmp_path / "arch.pt")
    with pytest.raises(FileFormatError, match=r"arch.pt: wrong architecture for DetailVAE: "
                                              r"missing keys \[decoder.head.bias\]"):
        load_detail_generator(tmp_path / "arch.pt")

    torch.save({**checkpoint, "config": {**checkpoint["config"], "latent_dim": 9}}, tmp_path / "shape.pt")
    with pytest.raises(FileFormatError, match="shape.pt: wrong architecture for DetailVAE: shape mismatch"):
        load_detail_generator(tmp_path / "shape.pt")

    torch.save({**checkpoint, "config": {**checkpoint["config"], "colour": 1}}, tmp_path / "cfg.pt")
    with pytest.raises(FileFormatError, match=r"cfg.pt: config has unknown keys \[colour\]"):
        load_detail_generator(tmp_path / "cfg.pt")

    torch.save({"weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(FileFormatError, match="other.pt: a plain state_dict, but not the paper's detail VAE layout"):
        load_detail_generator(tmp_path / "other.pt")

    torch.save(torch.zeros(3), tmp_path / "tensor.pt")
    with pytest.raises(FileFormatError, match="tensor.pt: not a detail generator checkpoint"):
        load_detail_checkpoint(tmp_path / "tensor.pt")
