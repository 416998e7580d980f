"""Training the detail generator: data, augmentation, resume, DDP, bad files, learning, CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import train_detail_generator as cli
from models.config import DetailAugmentConfig, DetailDataConfig, DetailGeneratorConfig, DetailTrainingConfig
from models.detail_generator import DetailVAE, load_detail_generator
from models.detail_generator.dataset import (
    UVDetailDataset,
    augment_uv_map,
    find_uv_maps,
    load_flip_map,
    split_train_val,
)
from models.detail_generator.training import train_detail_generator, weighted_mse
from utils.config import ConfigError
from utils.errors import FileFormatError, ToolkitError
from utils.image_io import read_image, write_image
from utils.runtime import seed_everything

REPO = Path(__file__).resolve().parents[1]
TINY_MODEL = DetailGeneratorConfig(resolution=32, channels=1, latent_dim=8, latent_grid=2, base_channels=8,
                                   max_channels=32, low_pass_resolution=16)
TINY_ARGS = ["--resolution", "32", "--latent_dim", "8", "--latent_grid", "2", "--set", "model.low_pass_resolution=16",
             "--set", "model.base_channels=4", "--set", "model.max_channels=16", "--num_workers", "0",
             "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread avoids oversubscribing shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def synthetic_uv_map(size: int, seed: int) -> np.ndarray:
    """A skin-coloured (size, size, 3) map whose detail mixes two texel-level patterns fixed in UV.

    Each map has its own base tone, a smooth shading ramp, two random mixing
    weights and a little independent noise: detail-like texture with a
    low-dimensional structure a small VAE can learn.
    """
    patterns = np.random.default_rng(1234).normal(0.0, 0.04, (2, size, size))
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    tone = np.array([0.72, 0.52, 0.42]) * rng.uniform(0.8, 1.1)
    shade = 0.8 + 0.1 * np.sin(2 * np.pi * (xx + yy + rng.uniform()))
    detail = np.tensordot(rng.uniform(0.0, 1.0, 2), patterns, axes=1) + rng.normal(0, 0.005, (size, size))
    return np.clip(shade[..., None] * tone + detail[..., None], 0, 1)


def write_maps(folder: Path, count: int, size: int = 32, first_seed: int = 0) -> list[Path]:
    paths = []
    for i in range(count):
        path = folder / f"face_{first_seed + i:03d}.png"
        write_image(path, synthetic_uv_map(size, first_seed + i))
        paths.append(path)
    return paths


def tiny_config(dataset: Path, output: Path, **changes) -> DetailTrainingConfig:
    data = DetailDataConfig(dataset_path=str(dataset), val_split=0.2, num_workers=0)
    values = dict(model=TINY_MODEL, data=data, epochs=4, batch_size=4, lr=3e-3, output_dir=str(output),
                  device="cpu", num_visuals=2)
    return DetailTrainingConfig(**{**values, **changes})


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def _max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[k].float() - b[k].float()).abs().max().item() for k in a)


# ----------------------------------------------------------------------------- data


def test_find_uv_maps_pairs_confidence_maps_and_recurses(tmp_path):
    write_image(tmp_path / "a.png", np.zeros((8, 8, 3), np.uint8))
    write_image(tmp_path / "a_conf.png", np.zeros((8, 8, 3), np.uint8))
    write_image(tmp_path / "sub" / "b.jpg", np.zeros((8, 8, 3), np.uint8))
    write_image(tmp_path / "sub" / "c_conf.png", np.zeros((8, 8, 3), np.uint8))  # no map "c": a sample
    items = find_uv_maps(tmp_path)
    assert [(Path(i.map_path).name, i.confidence_path and Path(i.confidence_path).name) for i in items] == [
        ("a.png", "a_conf.png"), ("b.jpg", None), ("c_conf.png", None)]


def test_split_is_deterministic_and_disjoint():
    train, val = split_train_val(10, 0.3, seed=4)
    assert (train, val) == split_train_val(10, 0.3, seed=4)
    assert len(val) == 3 and sorted(train + val) == list(range(10))
    assert split_train_val(10, 0.3, seed=5) != (train, val)
    assert len(split_train_val(2, 0.01, seed=0)[1]) == 1


def test_augmentation_shifts_by_whole_texels_and_never_flips_by_default():
    image = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    confidence = np.ones((32, 32), np.float32)
    config = DetailAugmentConfig(brightness=0.0, contrast=0.0, max_shift=0.1)
    seen_shifts = set()
    for seed in range(12):
        out, conf = augment_uv_map(image, confidence, np.random.default_rng(seed), config)
        matches = [(dy, dx) for dy in range(-3, 4) for dx in range(-3, 4)
                   if np.array_equal(out[max(dy, 0):32 + min(dy, 0), max(dx, 0):32 + min(dx, 0)],
                                     image[max(-dy, 0):32 + min(-dy, 0), max(-dx, 0):32 + min(-dx, 0)])]
        assert len(matches) == 1  # an exact texel shift: no resampling, no flip
        dy, dx = matches[0]
        seen_shifts.add((dy, dx))
        assert conf.sum() == (32 - abs(dy)) * (32 - abs(dx))  # texels shifted in carry no confidence
    assert len(seen_shifts) > 3


def test_flip_only_through_a_mapping(tmp_path):
    image = np.random.default_rng(1).random((16, 16, 3)).astype(np.float32)
    confidence = np.ones((16, 16), np.float32)
    config = DetailAugmentConfig(brightness=0.0, contrast=0.0, max_shift=0.0, flip_map="mirror")
    mirror = load_flip_map("mirror", 16)
    outcomes = set()
    for seed in range(10):
        out, _ = augment_uv_map(image, confidence, np.random.default_rng(seed), config, mirror)
        outcomes.add("flipped" if np.array_equal(out, image[:, ::-1]) else "kept" if np.array_equal(out, image)
                     else "other")
    assert outcomes == {"flipped", "kept"}

    np.savez(tmp_path / "bad_flip.npz", source=np.zeros((8, 8, 2), np.int64))
    with pytest.raises(FileFormatError, match=r"bad_flip.npz: 'source' must be an integer array of shape \(16, 16"):
        load_flip_map(str(tmp_path / "bad_flip.npz"), 16)


def test_dataset_samples_depend_only_on_seed_epoch_and_index(tmp_path):
    write_maps(tmp_path, 2)
    items = find_uv_maps(tmp_path)
    dataset = UVDetailDataset(items, TINY_MODEL, DetailAugmentConfig(max_shift=0.1), seed=3)
    again = UVDetailDataset(items, TINY_MODEL, DetailAugmentConfig(max_shift=0.1), seed=3)
    first = dataset[1]
    assert first["detail"].shape == (1, 32, 32) and first["weight"].shape == (1, 32, 32)
    assert first["noise"].shape == (8 * 2 * 2,) and first["index"] == 1
    torch.testing.assert_close(first["detail"], again[1]["detail"], rtol=0, atol=0)
    torch.testing.assert_close(first["noise"], again[1]["noise"], rtol=0, atol=0)
    dataset.set_epoch(1)
    assert not torch.equal(dataset[1]["noise"], first["noise"])
    assert abs(first["detail"].mean()) < 0.01  # detail is the high-pass: no low-frequency offset


def test_weighted_mse_ignores_zero_confidence():
    target = torch.zeros(2, 1, 4, 4)
    pred = target.clone()
    pred[0, 0, 0, 0] = 1.0  # error only where the confidence is 0
    pred[1] = 0.5
    weight = torch.ones(2, 1, 4, 4)
    weight[0, 0, 0, 0] = 0.0
    weight[1, :, :2] = 3.0  # a uniform error stays the same however it is weighted
    torch.testing.assert_close(weighted_mse(pred, target, weight), torch.tensor([0.0, 0.25]))


# ----------------------------------------------------------------------------- training


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path):
    write_maps(tmp_path / "maps", 10)
    straight = train_detail_generator(tiny_config(tmp_path / "maps", tmp_path / "straight"), progress=False)
    train_detail_generator(tiny_config(tmp_path / "maps", tmp_path / "split", epochs=2), progress=False)
    resumed = train_detail_generator(
        tiny_config(tmp_path / "maps", tmp_path / "split", resume=str(tmp_path / "split" / "last.pt")),
        progress=False)

    seed_everything(0)
    initial = DetailVAE(TINY_MODEL).state_dict()
    moved = _max_difference(initial, _state(straight.last_checkpoint))
    assert moved > 1e-2  # training changed the weights ...
    assert _max_difference(_state(straight.last_checkpoint), _state(resumed.last_checkpoint)) < 1e-6  # identically
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    for a, b in zip(straight.history, resumed.history):
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
        assert a["lr"] == pytest.approx(b["lr"])

    out = tmp_path / "split"
    metrics = json.loads((out / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3, 4]
    assert read_image(out / "loss_curve.png").shape == (420, 720, 3)
    assert read_image(out / "visuals" / "epoch_0004.png").shape[0] == 3 * (32 + 4)
    assert (out / "config.yaml").is_file() and (out / "best.pt").is_file()
    best = load_detail_generator(out / "best.pt")
    assert isinstance(best, DetailVAE) and best.config == TINY_MODEL

    with pytest.raises(ToolkitError, match="last.pt exists: pass --resume"):
        train_detail_generator(tiny_config(tmp_path / "maps", out))
    with pytest.raises(FileFormatError, match="best.pt: has no training state"):
        train_detail_generator(tiny_config(tmp_path / "maps", tmp_path / "x", resume=str(out / "best.pt")))
    with pytest.raises(ConfigError, match="model config differs: latent_dim 8 \\(checkpoint\\) vs 4"):
        bigger = DetailGeneratorConfig(**{**TINY_MODEL.__dict__, "latent_dim": 4})
        train_detail_generator(tiny_config(tmp_path / "maps", tmp_path / "x", model=bigger,
                                           resume=str(out / "last.pt")))


def test_validation_loss_falls_below_predicting_no_detail(tmp_path):
    write_maps(tmp_path / "maps", 20)
    config = tiny_config(tmp_path / "maps", tmp_path / "run", epochs=10,
                         data=DetailDataConfig(dataset_path=str(tmp_path / "maps"), val_split=0.2, num_workers=0,
                                               augment=DetailAugmentConfig(max_shift=0.0)))
    result = train_detail_generator(config, progress=False)
    val_losses = [h["val_loss"] for h in result.history]

    val_items = find_uv_maps(tmp_path / "maps")
    val_items = [val_items[i] for i in split_train_val(len(val_items), 0.2, config.seed)[1]]
    details = torch.stack([s["detail"] for s in UVDetailDataset(val_items, TINY_MODEL)])
    no_detail_loss = details.square().mean().item()  # the untrained model's prediction: zero detail

    assert val_losses[0] == pytest.approx(no_detail_loss, rel=0.1)
    assert val_losses[-1] < 0.85 * no_detail_loss
    assert val_losses[-1] < min(val_losses[:2])


def test_broken_files_are_reported_and_skipped(tmp_path, capsys):
    maps = tmp_path / "maps"
    good = write_maps(maps, 4) + write_maps(maps / "sub", 2, first_seed=10)
    write_image(maps / "face_000_conf.png", np.full((32, 32), 200, np.uint8))
    (maps / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    (maps / "notes.png").write_text("not an image")
    write_image(maps / "wide.png", np.zeros((16, 32, 3), np.uint8))

    code = cli.main(["--dataset_path", str(maps), "--output_dir", str(tmp_path / "run"), "--epochs", "1",
                     "--batch_size", "2", "--channels", "3", "--val_split", "0.3", *TINY_ARGS])
    assert code == 0
    skipped = [line for line in capsys.readouterr().err.splitlines() if "skipped" in line]
    assert len(skipped) == 3
    for name, reason in [("truncated.png", "corrupt or truncated"), ("notes.png", "not a recognised image"),
                         ("wide.png", "UV maps are square")]:
        assert sum(name in line and reason in line for line in skipped) == 1, skipped
    model = load_detail_generator(tmp_path / "run" / "last.pt")
    assert model.config.channels == 3
    items = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["training"]["items"]
    assert sorted(Path(p).name for part in items for p in part) == sorted(p.name for p in good)

    few = tmp_path / "few"
    write_maps(few, 1)
    (few / "empty.png").write_bytes(b"")
    code = cli.main(["--dataset_path", str(few), "--output_dir", str(tmp_path / "run2"), "--epochs", "1",
                     *TINY_ARGS])
    err = capsys.readouterr().err
    assert code == 2
    assert "empty.png: empty file" in err and "1 readable UV map(s) of 2 found; need at least 2" in err
    assert not (tmp_path / "run2" / "last.pt").exists()


@pytest.mark.slow
def test_ddp_two_processes_match_one_process(tmp_path):
    write_maps(tmp_path / "maps", 10)
    args = ["--dataset_path", str(tmp_path / "maps"), "--epochs", "2", "--batch_size", "4", "--lr", "0.005",
            "--val_split", "0.2", *TINY_ARGS]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                            "MASTER_PORT")}
    env["OMP_NUM_THREADS"] = "1"
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(REPO / "train_detail_generator.py"), *args, "--output_dir", str(tmp_path / "ddp")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "ddp" / "last.pt").is_file() and (tmp_path / "ddp" / "best.pt").is_file()

    assert cli.main([*args, "--output_dir", str(tmp_path / "single")]) == 0
    ddp, single = _state(tmp_path / "ddp" / "last.pt"), _state(tmp_path / "single" / "last.pt")
    config = load_detail_generator(tmp_path / "single" / "last.pt").config
    seed_everything(0)
    moved = _max_difference(DetailVAE(config).state_dict(), single)
    assert moved > 5e-3
    # Equal up to float summation order (all-reduce vs one batch), which Adam's first steps amplify: well
    # within 1% of the distance trained (changing only the CPU thread count differs by about that much).
    assert _max_difference(ddp, single) < 0.01 * moved
    history = torch.load(tmp_path / "ddp" / "last.pt", weights_only=True)["training"]["history"]
    assert [h["train_maps"] for h in history] == [8, 8]  # both processes' samples counted once


# ----------------------------------------------------------------------------- command line


def test_cli_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--dataset_path", "--epochs", "--batch_size", "--resume", "--kl_weight", "--tensorboard",
                 "--config", "--set", "--quiet"):
        assert flag in out


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, capsys):
    try:
        import torch.utils.tensorboard  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("tensorboard is installed")
    write_maps(tmp_path / "maps", 2)
    code = cli.main(["--dataset_path", str(tmp_path / "maps"), "--output_dir", str(tmp_path / "run"),
                     "--tensorboard", *TINY_ARGS])
    assert code == 2
    assert "--tensorboard needs the 'tensorboard' package" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_bad_config_values_are_reported(tmp_path, capsys):
    write_maps(tmp_path / "maps", 2)
    code = cli.main(["--dataset_path", str(tmp_path / "maps"), "--output_dir", str(tmp_path / "run"),
                     *TINY_ARGS, "--resolution", "48"])
    assert code == 2 and "model.resolution must be a power of two" in capsys.readouterr().err
