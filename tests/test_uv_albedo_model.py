"""UV albedo model (UVAPM): streamed confidence-weighted PCA, decoding, file formats, the build command.

The build tests use maps drawn from a known low-rank per-channel model, so
every recovered quantity is compared with the truth that generated it.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from models.uv_albedo_model import (
    FORMAT_VERSION,
    UVAlbedoModel,
    UVAlbedoModelData,
    UVLayoutError,
    decode_albedo,
    load_uv_albedo_model,
    save_uv_albedo_model,
)
from models.uv_albedo_model.build import UVMapFolder, build_uv_albedo_model, outlier_weights, streaming_channel_pca
from models.uv_albedo_model.command import main
from utils.atomic import save_npz
from utils.errors import FileFormatError, ToolkitError
from utils.image_io import write_image


@dataclass
class Truth:
    """A generating model and maps drawn from it: maps (N, 3, R, R), confidence (N, 1, R, R)."""

    mean: np.ndarray  # (3, D)
    basis: np.ndarray  # (3, K, D) orthonormal rows
    std: np.ndarray  # (3, K)
    noise: float
    maps: np.ndarray
    confidence: np.ndarray | None = None

    @property
    def texel_std(self) -> np.ndarray:
        """(3, D) standard deviation of each texel under the model."""
        return np.sqrt(np.einsum("ck,ckd->cd", self.std**2, self.basis**2) + self.noise**2)


def _truth(num_maps=200, resolution=16, K=5, noise=1e-3, seed=0, scale=1.0) -> Truth:
    """Maps of a random model; ``scale`` multiplies the components' std (1: unit-norm components of std 0.1 to
    0.025, so a texel varies by 0.1 / resolution at most)."""
    rng = np.random.default_rng(seed)
    D = resolution * resolution
    rows, cols = (np.mgrid[0:resolution, 0:resolution] + 0.5) / resolution
    mean = np.stack([0.62 + 0.1 * cols, 0.45 + 0.1 * rows, 0.35 + 0.05 * rows * cols]).reshape(3, D)
    basis = np.stack([np.linalg.qr(rng.standard_normal((D, K)))[0].T for _ in range(3)])
    std = scale * np.geomspace(0.1, 0.025, K)[None] * np.array([[1.0], [0.9], [0.8]])
    coeffs = rng.standard_normal((num_maps, 3, K))
    maps = mean + np.einsum("nck,ck,ckd->ncd", coeffs, std, basis) + noise * rng.standard_normal((num_maps, 3, D))
    return Truth(mean, basis, std, noise, maps.reshape(num_maps, 3, resolution, resolution).astype(np.float32))


def _hide_region(truth: Truth, seed=1) -> Truth:
    """Half of the maps lose rows 3..7 (a third of the map): confidence 0 there and garbage values."""
    rng = np.random.default_rng(seed)
    maps, conf = truth.maps.copy(), np.ones((len(truth.maps), 1) + truth.maps.shape[2:], np.float32)
    half = len(maps) // 2
    maps[:half, :, 3:8] = rng.uniform(0, 1, maps[:half, :, 3:8].shape)
    conf[:half, :, 3:8] = 0
    return Truth(truth.mean, truth.basis, truth.std, truth.noise, maps, conf)


def _batches(truth: Truth, size=32, weighted=True):
    conf = truth.confidence if weighted else None
    return [(torch.from_numpy(truth.maps[i: i + size]), None if conf is None else torch.from_numpy(conf[i: i + size]))
            for i in range(0, len(truth.maps), size)]


def _largest_sine(true_basis: np.ndarray, basis: np.ndarray) -> float:
    """Sine of the largest principal angle between two row spaces, worst channel."""
    worst = 0.0
    for a, b in zip(true_basis, basis):
        cosines = np.linalg.svd(a @ b.T, compute_uv=False)
        worst = max(worst, float(np.sqrt(max(0.0, 1 - cosines.min() ** 2))))
    return worst


def _random_model(resolution=8, K=3, seed=0, layout="layout-a") -> UVAlbedoModel:
    rng = np.random.default_rng(seed)
    D = resolution * resolution
    basis = np.stack([np.linalg.qr(rng.standard_normal((D, K)))[0].T for _ in range(3)]).astype(np.float32)
    data = UVAlbedoModelData(
        mean=rng.uniform(0.3, 0.7, (3, resolution, resolution)).astype(np.float32),
        basis=basis,
        std=rng.uniform(0.02, 0.1, (3, K)).astype(np.float32),
        explained_variance_ratio=np.full((3, K), 0.1, np.float32),
        uv_layout_id=layout,
        num_maps=50,
    )
    return UVAlbedoModel(data)


# ---------------------------------------------------------------- build


def test_streamed_pca_recovers_the_generating_model():
    truth = _truth()
    N, K = len(truth.maps), truth.basis.shape[1]
    pca = streaming_channel_pca(_batches(truth, weighted=False), K)
    mean_tolerance = 5 * truth.texel_std / np.sqrt(N)
    assert (np.abs(pca.mean.numpy() - truth.mean) < mean_tolerance).all()
    assert _largest_sine(truth.basis, pca.basis.numpy()) < 0.1
    basis = pca.basis.numpy()
    np.testing.assert_allclose(basis @ basis.transpose(0, 2, 1), np.broadcast_to(np.eye(K), (3, K, K)), atol=1e-5)
    # Each std is the generating one within sampling error (relative sd of a sample std: 1/sqrt(2N)).
    np.testing.assert_allclose(pca.std.numpy(), truth.std, rtol=4 / np.sqrt(2 * N))
    evr = pca.explained_variance_ratio.numpy()
    assert (np.diff(evr, axis=1) <= 0).all()
    # Only the isotropic noise is left unexplained.
    unexplained = truth.noise**2 * truth.mean.shape[1] / (truth.std**2).sum(1)
    np.testing.assert_allclose(1 - evr.sum(1), unexplained, rtol=0.3)


def test_streamed_pca_equals_a_dense_svd_and_ignores_batching():
    truth = _truth(noise=0.005, seed=3)
    K = 5
    pca = streaming_channel_pca(_batches(truth, size=64, weighted=False), K, power_iters=5)
    other = streaming_channel_pca(_batches(truth, size=7, weighted=False), K, power_iters=5)
    for c in range(3):
        data = truth.maps[:, c].reshape(len(truth.maps), -1).astype(np.float64)
        mean = data.mean(0)
        _, singular, vt = np.linalg.svd(data - mean, full_matrices=False)
        np.testing.assert_allclose(pca.mean[c].numpy(), mean, atol=1e-6)
        assert _largest_sine(vt[None, :K], pca.basis[c: c + 1].numpy()) < 1e-3
        np.testing.assert_allclose(pca.std[c].numpy(), singular[:K] / np.sqrt(len(data) - 1), rtol=1e-4)
        np.testing.assert_allclose(pca.explained_variance_ratio[c].numpy(), singular[:K] ** 2 / (singular**2).sum(),
                                   rtol=1e-4)
        signs = np.sign((vt[:K] * pca.basis[c].numpy()).sum(1))
        np.testing.assert_allclose(pca.basis[c].numpy(), signs[:, None] * vt[:K], atol=1e-3)
    np.testing.assert_allclose(other.basis.numpy(), pca.basis.numpy(), atol=1e-4)
    np.testing.assert_allclose(other.std.numpy(), pca.std.numpy(), rtol=1e-5)


def test_confidence_keeps_hidden_garbage_out_of_the_model():
    truth = _truth()
    hidden = _hide_region(truth)
    K, N = truth.basis.shape[1], len(truth.maps)
    weighted = streaming_channel_pca(_batches(hidden), K)
    mean_fill = streaming_channel_pca(_batches(hidden), K, imputation="mean")
    unweighted = streaming_channel_pca(_batches(hidden, weighted=False), K)

    mean_tolerance = 5 * truth.texel_std / np.sqrt(N / 2)  # half the maps see the hidden texels
    assert (np.abs(weighted.mean.numpy() - truth.mean) < mean_tolerance).all()
    assert np.abs(unweighted.mean.numpy() - truth.mean).max() > 0.1

    sines = {name: _largest_sine(truth.basis, pca.basis.numpy())
             for name, pca in (("weighted", weighted), ("mean_fill", mean_fill), ("unweighted", unweighted))}
    assert sines["weighted"] < 0.3, sines
    assert sines["unweighted"] > 0.9, sines
    assert sines["weighted"] < sines["mean_fill"], sines
    np.testing.assert_allclose(weighted.std.numpy(), truth.std, rtol=0.25)


def test_texels_no_map_sees_take_the_global_mean():
    truth = _truth(num_maps=40)
    conf = np.ones((40, 1, 16, 16), np.float32)
    conf[:, :, :, :4] = 0
    truth.confidence = conf
    pca = streaming_channel_pca(_batches(truth), 3, imputation="mean")
    mean = pca.mean.numpy().reshape(3, 16, 16)
    seen = truth.maps[:, :, :, 4:].astype(np.float64)
    np.testing.assert_allclose(mean[:, :, :4], np.broadcast_to(seen.mean((0, 2, 3))[:, None, None], (3, 16, 4)),
                               atol=1e-6)
    np.testing.assert_allclose(mean[:, :, 4:], seen.mean(0), atol=1e-6)


def _with_frames(truth: Truth, share=0.15, seed=2) -> tuple[Truth, np.ndarray]:
    """A share of the maps get a dark 'glasses frame' (a 2-texel line of random row, start and length) at full
    confidence; returns the maps and the (N, R, R) mask of the frames' texels."""
    rng = np.random.default_rng(seed)
    maps = truth.maps.copy()
    N, _, R, _ = maps.shape
    frames = np.zeros((N, R, R), bool)
    for i in rng.choice(N, int(share * N), replace=False):
        row, start = rng.integers(4, R - 6), rng.integers(0, R // 2)
        frames[i, row: row + 2, start: start + rng.integers(R // 3, R // 2)] = True
    maps[np.broadcast_to(frames[:, None], maps.shape)] = 0.05
    return Truth(truth.mean, truth.basis, truth.std, truth.noise, maps), frames


def test_robust_rounds_keep_occluders_out_of_the_model(tmp_path):
    # components that vary a texel by up to 0.05 (skin tone and structure), frames 0.5 darker than the skin
    everything = _truth(num_maps=220, resolution=32, K=5, noise=0.005, scale=16)
    truth = dataclasses.replace(everything, maps=everything.maps[:200])
    clean = everything.maps[200:]  # held-out maps of the same faces' model, without frames
    framed, frames = _with_frames(truth)
    K = 8  # room for the frames: a plain PCA spends its extra components on them
    plain = streaming_channel_pca(_batches(framed, weighted=False), K)
    weights, share = outlier_weights(_batches(framed, weighted=False), plain, components=5)
    rejected = weights.numpy()[:, 0] < 0.5
    assert share == pytest.approx(rejected.mean())
    assert rejected[frames].mean() > 0.95  # the frames are found...
    assert rejected[~frames].mean() < 0.03  # ...and little else, though this model is half made of frames

    for i, image in enumerate(np.clip(framed.maps, 0, 1)):
        write_image(tmp_path / f"face{i:03d}.png", image.transpose(1, 2, 0), text={"uv_layout_id": "layout-a"})
        write_image(tmp_path / f"face{i:03d}_conf.png", np.ones((32, 32)))
    seen_rounds = []
    models = {rounds: build_uv_albedo_model(tmp_path, components=K, resolution=32, robust_rounds=rounds,
                                            robust_components=5, em_passes=3, progress=False,
                                            on_round=lambda *a, r=rounds: seen_rounds.append((r, *a)))[0]
              for rounds in (0, 2)}
    # every round's model is shown, the plain PCA's first; from the first robust round on the frames are left out
    assert [(r, i) for r, i, _, _ in seen_rounds] == [(0, 0), (2, 0), (2, 1), (2, 2)]
    # the plain PCA, half made of frames, misjudges some clean texels too; the next round's rejects the frames
    rejected = [r[3] for r in seen_rounds[1:]]
    assert rejected[0] == 0 and frames.mean() < rejected[1] < 5 * frames.mean(), rejected
    assert frames.mean() < rejected[2] < min(2 * frames.mean(), rejected[1]), rejected
    np.testing.assert_array_equal(seen_rounds[3][2].mean, models[2].mean)
    framed_often = frames.sum(0) >= 3
    reference = (np.round(np.clip(truth.maps, 0, 1) * 255) / 255).mean(0)  # the written maps' mean without frames
    errors = {}
    for rounds, data in models.items():
        mean_error = np.abs(data.mean - reference)[:, framed_often].mean()
        model = UVAlbedoModel(data)
        with torch.no_grad():
            recon = model(model.encode(torch.from_numpy(clean), ridge=1e-3))
        errors[rounds] = (mean_error, float((recon - torch.from_numpy(clean)).square().mean().sqrt()))
    # Where three or more frames pile up, a plain PCA's mean is darker by 0.008; the robust one's is the clean maps'.
    assert errors[0][0] > 0.005 and errors[2][0] < 0.15 * errors[0][0], errors
    # The robust model's components are the faces' own: held-out clean maps are represented better.
    assert errors[2][1] < 0.8 * errors[0][1], errors
    assert _largest_sine(truth.basis, models[2].basis[:, :5]) < 0.3


def test_too_few_maps_is_a_clear_error():
    truth = _truth(num_maps=5)
    with pytest.raises(ToolkitError, match="5 components need more than 5 maps"):
        streaming_channel_pca(_batches(truth, weighted=False), 5)


# ---------------------------------------------------------------- module


def test_decode_follows_the_formula_and_encode_inverts_it():
    model = _random_model()
    coeffs = torch.randn(4, model.num_coeffs)
    maps = model(coeffs)
    K, D = model.num_components, model.resolution**2
    direct = model.mean.reshape(1, 3, D) + torch.einsum(
        "bck,ck,ckd->bcd", coeffs.reshape(4, 3, K), model.std, model.basis)
    torch.testing.assert_close(maps, direct.reshape(4, 3, 8, 8))
    torch.testing.assert_close(model.encode(maps), coeffs, atol=1e-4, rtol=1e-4)

    confidence = torch.ones(4, 1, 8, 8)
    confidence[:, :, :3] = 0
    spoiled = maps.clone()
    spoiled[:, :, :3] = torch.rand(4, 3, 3, 8)
    torch.testing.assert_close(model.encode(spoiled, confidence), coeffs, atol=1e-3, rtol=1e-3)
    assert (model.encode(maps, ridge=1e-3).abs() < coeffs.abs()).all()


def test_forward_is_differentiable_and_resizes_bilinearly():
    model = _random_model(resolution=6, K=2).double()
    coeffs = torch.randn(2, model.num_coeffs, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda c: model(c, out_resolution=4), (coeffs,))
    full = model(coeffs)
    expected = F.interpolate(full, size=(9, 9), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(coeffs, out_resolution=9), expected)
    model(coeffs).sum().backward()
    assert coeffs.grad is not None and coeffs.grad.abs().min() > 0


def test_decode_checks_the_coefficient_layout():
    model = _random_model()
    with pytest.raises(ValueError, match=r"expected \(B, 9\)"):
        model(torch.zeros(9))
    with pytest.raises(ValueError, match=r"expected \(B, 9\)"):
        decode_albedo(torch.zeros(1, 6), model.mean, model.basis, model.std)


def test_sample_draws_from_the_prior_reproducibly():
    model = _random_model()
    first = model.sample(3, torch.Generator().manual_seed(5))
    again = model.sample(3, torch.Generator().manual_seed(5))
    assert first.shape == (3, 3, 8, 8)
    torch.testing.assert_close(first, again)
    expected = model(torch.randn(3, model.num_coeffs, generator=torch.Generator().manual_seed(5)))
    torch.testing.assert_close(first, expected)


def test_layout_check(ict_model):
    model = _random_model(layout=ict_model.uv_layout_id)
    model.check_layout(ict_model)
    model.check_layout(ict_model.uv_layout_id)
    expected = f"UV layout 'other', but face model 'ict' \\(UV layout '{ict_model.uv_layout_id}'\\) differs"
    with pytest.raises(UVLayoutError, match=expected):
        _random_model(layout="other").check_layout(ict_model)
    with pytest.raises(UVLayoutError, match="layout is unknown"):
        _random_model(layout="").check_layout(ict_model)


# ---------------------------------------------------------------- files


def _paper_model(R=16, K=4, seed=0):
    rng = np.random.default_rng(seed)
    channels = {}
    for i, c in enumerate("rgb"):
        mean = rng.uniform(60, 200, (R * R, 1))
        channels[c] = {"mean": mean if i else mean[:, 0], "base": rng.normal(0, 1, (R * R, K)) * [3, 2, 1.5, 1]}
    return channels


def test_paper_pkl_decodes_like_the_reference(tmp_path):
    R, K = 16, 4
    raw = _paper_model(R, K)
    path = tmp_path / "model_16.pkl"
    path.write_bytes(pickle.dumps(raw, protocol=2))
    coeffs = torch.randn(2, 3 * K, dtype=torch.float64) * 30

    def reference(c):  # the paper's synthesis: (mean + base @ coef) per channel, row-major, / 255
        per_channel = [raw[ch]["mean"].reshape(-1, 1) + raw[ch]["base"] @ c[:, i * K: (i + 1) * K].numpy().T
                       for i, ch in enumerate("rgb")]
        return torch.from_numpy(np.stack(per_channel).transpose(2, 0, 1).reshape(-1, 3, R, R) / 255.0).float()

    model = UVAlbedoModel.from_file(path, uv_layout_id="hifi-layout")
    assert (model.resolution, model.num_components, model.coefficient_units) == (R, K, "raw")
    assert model.uv_layout_id == "hifi-layout"
    torch.testing.assert_close(model(coeffs.float()), reference(coeffs), atol=2e-5, rtol=1e-5)
    resized = F.interpolate(reference(coeffs), size=(12, 12), mode="bilinear", align_corners=False)
    torch.testing.assert_close(model(coeffs.float(), out_resolution=12), resized, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(model.encode(reference(coeffs)), coeffs.float(), atol=1e-3, rtol=1e-4)
    with pytest.raises(ToolkitError, match="no standard deviations"):
        model.sample(1)

    # With the raw coefficients' standard deviation given, coefficients are in std units.
    scaled = UVAlbedoModel.from_file(path, uv_layout_id="hifi-layout", std=30.0)
    assert scaled.coefficient_units == "std"
    torch.testing.assert_close(scaled(coeffs.float() / 30), reference(coeffs), atol=2e-5, rtol=1e-5)


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_paper_pkl_refusals(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = _paper_model()
    evil["r"]["extra"] = _RunsCode()
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(evil, protocol=2))
    with pytest.raises(FileFormatError, match="evil.pkl: refused: global"):
        load_uv_albedo_model(tmp_path / "evil.pkl")
    assert not (tmp_path / "PWNED").exists()

    no_green = {k: v for k, v in _paper_model().items() if k != "g"}
    (tmp_path / "no_green.pkl").write_bytes(pickle.dumps(no_green, protocol=2))
    with pytest.raises(FileFormatError, match="no_green.pkl: expected a dict with keys 'r', 'g', 'b'"):
        load_uv_albedo_model(tmp_path / "no_green.pkl")

    not_square = {c: {"mean": np.zeros(12), "base": np.zeros((12, 2))} for c in "rgb"}
    (tmp_path / "odd.pkl").write_bytes(pickle.dumps(not_square, protocol=2))
    with pytest.raises(FileFormatError, match="odd.pkl: 12 texels per channel is not a square UV map"):
        load_uv_albedo_model(tmp_path / "odd.pkl")


def _arrays(model: UVAlbedoModel) -> dict:
    return {
        "format_version": np.array(FORMAT_VERSION), "mean": model.mean.numpy(), "basis": model.basis.numpy(),
        "std": model.std.numpy(), "explained_variance_ratio": model.explained_variance_ratio.numpy(),
        "resolution": np.array(model.resolution), "uv_layout_id": np.array(model.uv_layout_id),
        "num_maps": np.array(model.num_maps),
    }


def test_npz_round_trip_and_refusals(tmp_path):
    model = _random_model()
    data = load_uv_albedo_model(_saved(tmp_path / "ok.npz", _arrays(model)))
    save_uv_albedo_model(tmp_path / "again.npz", data)
    again = UVAlbedoModel.from_file(tmp_path / "again.npz")
    coeffs = torch.randn(2, model.num_coeffs)
    torch.testing.assert_close(again(coeffs), model(coeffs))
    assert (again.uv_layout_id, again.num_maps) == ("layout-a", 50)

    with pytest.raises(UVLayoutError, match="built for UV layout 'layout-a', not 'layout-b'"):
        load_uv_albedo_model(tmp_path / "ok.npz", uv_layout_id="layout-b")
    newer = {**_arrays(model), "format_version": np.array(FORMAT_VERSION + 1)}
    with pytest.raises(FileFormatError, match="newer.npz: format version 2 is newer"):
        load_uv_albedo_model(_saved(tmp_path / "newer.npz", newer))
    wrong_basis = {**_arrays(model), "basis": np.zeros((3, 3, 60), np.float32)}
    with pytest.raises(FileFormatError, match=r"wrong.npz: basis has shape \(3, 3, 60\), expected \(3, K, 64\)"):
        load_uv_albedo_model(_saved(tmp_path / "wrong.npz", wrong_basis))
    wrong_std = {**_arrays(model), "std": np.ones((3, 4), np.float32)}
    with pytest.raises(FileFormatError, match=r"std.npz: std has shape \(3, 4\), expected \(3, 3\)"):
        load_uv_albedo_model(_saved(tmp_path / "std.npz", wrong_std))
    missing = {k: v for k, v in _arrays(model).items() if k != "std"}
    with pytest.raises(FileFormatError, match=r"missing.npz: missing keys \['std'\]"):
        load_uv_albedo_model(_saved(tmp_path / "missing.npz", missing))


def _saved(path, arrays):
    save_npz(path, arrays)
    return path


# ---------------------------------------------------------------- command line


def test_build_command_end_to_end(tmp_path, capsys):
    truth = _truth(num_maps=40, resolution=32, K=3, noise=0.005)
    maps_dir = tmp_path / "maps"
    for i, image in enumerate(np.clip(truth.maps, 0, 1)):
        folder = maps_dir / ("left" if i % 2 else "right")
        write_image(folder / f"face{i:02d}.png", image.transpose(1, 2, 0), text={"uv_layout_id": "layout-a"})
        if i % 4 == 0:
            write_image(folder / f"face{i:02d}_conf.png", np.ones((32, 32)))
    good = (maps_dir / "right" / "face00.png").read_bytes()
    (maps_dir / "corrupt.png").write_bytes(good[: len(good) // 2])
    write_image(maps_dir / "wide.png", np.zeros((16, 32, 3)))
    write_image(maps_dir / "left" / "face01_conf.png", np.ones((16, 16)))

    output = tmp_path / "out" / "uvapm.npz"
    rc = main(["build", "--input_dir", str(maps_dir), "--output", str(output), "--components", "3",
               "--resolution", "16", "--batch_size", "8"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "2 maps without a uv_layout_id" in err  # wide.png and the half corrupt.png
    skipped = [line for line in err.splitlines() if line.startswith("WARNING uvapm.uv_albedo_model: skipped ")]
    assert len(skipped) == 3, err
    assert f"{maps_dir / 'corrupt.png'}: corrupt or truncated image" in skipped[0]
    conf = maps_dir / "left" / "face01_conf.png"
    assert f"{conf}: confidence map is 16x16, its UV map is 32x32" in skipped[1]
    assert f"{maps_dir / 'wide.png'}: UV map is 32x16, expected a square image" in skipped[2]
    assert "3 of 42 files skipped" in err
    assert sorted(p.name for p in output.parent.iterdir()) == ["uvapm.npz"]

    model = UVAlbedoModel.from_file(output)
    model.check_layout(load_uv_albedo_model(output).uv_layout_id)
    assert (model.resolution, model.num_components, model.num_maps) == (16, 3, 39)
    assert model.uv_layout_id == "layout-a"  # the layout the maps carry
    # The model's mean is the area-downsampled mean of the 8-bit maps.
    quantised = np.round(np.clip(np.delete(truth.maps, 1, axis=0), 0, 1) * 255) / 255
    expected = quantised.reshape(39, 3, 16, 2, 16, 2).mean((0, 3, 5))
    np.testing.assert_allclose(model.mean.numpy(), expected, atol=1e-5)

    rc = main(["build", "--input_dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "x.npz"), "--quiet"])
    assert rc == 2 and "nowhere: not a folder" in capsys.readouterr().err
    rc = main(["build", "--input_dir", str(maps_dir), "--output", str(tmp_path / "x.pkl"), "--quiet"])
    assert rc == 2 and "written as .npz" in capsys.readouterr().err
    rc = main(["build", "--input_dir", str(maps_dir), "--output", str(tmp_path / "x.npz"), "--set", "components=0"])
    assert rc == 2 and "components must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_maps_are_resized_weighted_by_their_confidence(tmp_path):
    """A model texel that straddles the edge of what the photo showed takes the seen part's colour: downsizing
    must not blend in the garbage beyond the edge (the tinted staircase along a UV island's border)."""
    skin, garbage = np.array([0.8, 0.6, 0.5]), np.array([0.1, 0.3, 0.9])
    image = np.broadcast_to(skin, (64, 64, 3)).copy()
    conf = np.ones((64, 64))
    image[:, 22:], conf[:, 22:] = garbage, 0  # the edge cuts through the model texels of columns 20..23
    write_image(tmp_path / "face.png", image, text={"uv_layout_id": "layout-a"})
    write_image(tmp_path / "face_conf.png", conf)
    maps, confidence = next(iter(UVMapFolder(tmp_path, 16)))
    np.testing.assert_allclose(maps[0, :, :, :6].permute(1, 2, 0).numpy(), np.broadcast_to(skin, (16, 6, 3)),
                               atol=1 / 255)
    np.testing.assert_allclose(confidence[0, 0, :, 5].numpy(), 0.5, atol=1 / 255)  # half seen
    np.testing.assert_allclose(confidence[0, 0, :, 6:].numpy(), 0)
    np.testing.assert_allclose(maps[0, :, :, 6:].permute(1, 2, 0).numpy(), np.broadcast_to(garbage, (16, 10, 3)),
                               atol=1 / 255)  # unseen texels keep their (weightless) values


def test_build_command_refuses_maps_of_unknown_or_mixed_layouts(tmp_path, capsys):
    for name, layout in (("a", "layout-a"), ("b", "layout-b")):
        write_image(tmp_path / "mixed" / f"{name}.png", np.full((8, 8, 3), 0.5), text={"uv_layout_id": layout})
        write_image(tmp_path / "plain" / f"{name}.png", np.full((8, 8, 3), 0.5))
    for folder, message in (("mixed", "the maps use different UV layouts: layout-a (1 maps"),
                            ("plain", "no map carries a uv_layout_id; pass --uv_layout_id")):
        rc = main(["build", "--input_dir", str(tmp_path / folder), "--output", str(tmp_path / "x.npz")])
        assert rc == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()
    rc = main(["build", "--input_dir", str(tmp_path / "plain"), "--output", str(tmp_path / "x.npz"), "--components",
               "1", "--resolution", "4", "--uv_layout_id", "given", "--quiet"])
    assert rc == 0 and UVAlbedoModel.from_file(tmp_path / "x.npz").uv_layout_id == "given"


def test_coefficient_covariance_couples_the_channels(tmp_path):
    """Maps whose R, G and B vary together give a joint prior whose samples keep the channels together."""
    from models.uv_albedo_model.build import build_uv_albedo_model

    rng = np.random.default_rng(0)
    R, N = 16, 60
    pattern = rng.normal(size=(2, R, R))
    tone = np.array([0.7, 0.5, 0.4])
    for n in range(N):
        a, b = rng.normal(size=2)
        # one shared coefficient per pattern, applied to every channel with the same sign
        image = tone[:, None, None] + 0.05 * (a * pattern[0] + b * pattern[1])[None] * np.array([1, 0.8, 0.6])[:, None,
                                                                                                               None]
        write_image(tmp_path / f"{n:03d}.png", np.clip(image.transpose(1, 2, 0), 0, 1))
    data, skipped = build_uv_albedo_model(tmp_path, components=2, resolution=R, uv_layout_id="test", progress=False,
                                          workers=1)
    assert not skipped and data.coefficient_covariance.shape == (6, 6)
    model = UVAlbedoModel(data)
    cov = torch.as_tensor(data.coefficient_covariance)
    corr = cov / cov.diag().sqrt()[:, None] / cov.diag().sqrt()[None]
    assert corr[0, 2].abs() > 0.9 and corr[0, 4].abs() > 0.9  # R's first component moves with G's and B's

    def red_green_cosine(m: UVAlbedoModel) -> torch.Tensor:
        samples = (m.sample(200, torch.Generator().manual_seed(0)) - m.mean).flatten(2)
        r, g = samples[:, 0], samples[:, 1]
        return ((r * g).sum(1) / (r.norm(dim=1) * g.norm(dim=1))).mean()

    # samples keep R and G together (up to the shrinkage toward independence) instead of random colours
    independent = UVAlbedoModel(dataclasses.replace(data, coefficient_covariance=None))
    assert red_green_cosine(model) > 0.75 and red_green_cosine(independent).abs() < 0.2
    aligned = torch.tensor([[1.0, 0.0, corr[0, 2].sign(), 0.0, corr[0, 4].sign(), 0.0]])
    assert model.prior(aligned) < model.prior(aligned * torch.tensor([[1.0, 1, -1, 1, -1, 1]]))
    path = tmp_path / "model.npz"
    save_uv_albedo_model(path, data)
    torch.testing.assert_close(UVAlbedoModel.from_file(path).scale_tril, model.scale_tril)
