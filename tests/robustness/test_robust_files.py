"""Bad model, checkpoint and data files for every command: fitting.run, train_detail_generator.py,
render_3d_face.py and ``python -m assets``.

Each bad file gives exit code 2 (or, for training data, is skipped and
listed) with a one-line error naming the file and the reason, no traceback,
and nothing half-written. Files that would run code when unpickled are
refused without running it: each tries to create a marker file, which must
not exist afterwards.
"""

from __future__ import annotations

import io
import os
import pickle
import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch

import render_3d_face
import train_detail_generator
from assets.__main__ import main as assets_main
from fitting.config import PreprocessConfig
from fitting.preprocess.command import main as preprocess_main
from fitting.preprocess.folder import preprocess_folder
from fitting.run import main as run_main
from models.config import DetailGeneratorConfig
from models.detail_generator import DetailVAE, detail_generator_checkpoint
from tests.robustness.helpers import assert_outputs_complete, no_traceback, read_failures, run_args
from utils.image_io import write_image
from utils.safe_load import load_npz, load_restricted_pickle, load_torch


class _RunsCode:
    """Unpickling this creates ``marker``: what a malicious checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


def _error_line(err: str, path: Path, reason: str) -> None:
    """stderr holds exactly one error line, naming ``path`` and matching ``reason``, and no traceback."""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, err[-3000:]
    assert errors[0].startswith(f"error: {path}: "), errors[0]
    assert re.search(reason, errors[0]), errors[0]
    no_traceback(err)


# ----------------------------------------------------------------------------- bad files, built per case


def _truncated_checkpoint(folder: Path, marker: Path) -> Path:
    buffer = io.BytesIO()
    torch.save(detail_generator_checkpoint(DetailVAE(_TINY)), buffer)
    (folder / "truncated.pt").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return folder / "truncated.pt"


def _wrong_architecture(folder: Path, marker: Path) -> Path:
    checkpoint = detail_generator_checkpoint(DetailVAE(_TINY))
    checkpoint["state_dict"] = detail_generator_checkpoint(DetailVAE(DetailGeneratorConfig(
        **{**_TINY.__dict__, "latent_dim": 6})))["state_dict"]
    torch.save(checkpoint, folder / "other_architecture.pt")
    return folder / "other_architecture.pt"


def _newer_format(folder: Path, marker: Path) -> Path:
    torch.save({**detail_generator_checkpoint(DetailVAE(_TINY)), "format_version": 99}, folder / "newer.pt")
    return folder / "newer.pt"


def _pickle_in_pt(folder: Path, marker: Path) -> Path:
    torch.save({"format_version": 1, "config": _RunsCode(marker)}, folder / "evil.pt")
    return folder / "evil.pt"


def _not_a_dict(folder: Path, marker: Path) -> Path:
    torch.save(torch.zeros(3), folder / "tensor.pt")
    return folder / "tensor.pt"


def _empty(folder: Path, marker: Path) -> Path:
    (folder / "empty.pt").write_bytes(b"")
    return folder / "empty.pt"


_TINY = DetailGeneratorConfig(resolution=32, channels=1, latent_dim=4, latent_grid=1, base_channels=4, max_channels=8,
                              low_pass_resolution=16)

CHECKPOINTS = {
    "truncated": (_truncated_checkpoint, r"corrupt or truncated checkpoint"),
    "wrong architecture": (_wrong_architecture, r"wrong architecture for DetailVAE: shape mismatch"),
    "newer format": (_newer_format, r"format_version 99 is newer than this toolkit supports \(1\)"),
    "pickle that runs code": (_pickle_in_pt, r"refused: not a plain tensor checkpoint"),
    "a tensor, not a checkpoint": (_not_a_dict, r"not a detail generator checkpoint \(holds a Tensor\)"),
    "empty": (_empty, r"empty file"),
}


def _evil_pkl(folder: Path, marker: Path) -> Path:
    (folder / "model_256.pkl").write_bytes(pickle.dumps({"r": _RunsCode(marker)}, protocol=2))
    return folder / "model_256.pkl"


def _object_npz(folder: Path, marker: Path) -> Path:
    np.savez(folder / "objects.npz", mean=np.array([{"a": 1}], dtype=object))
    return folder / "objects.npz"


def _truncated_npz(folder: Path, marker: Path) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, mean=np.zeros((3, 16, 16)), basis=np.zeros((3, 2, 256)))
    (folder / "cut.npz").write_bytes(buffer.getvalue()[:300])
    return folder / "cut.npz"


def _npz_missing_keys(folder: Path, marker: Path) -> Path:
    np.savez(folder / "partial.npz", mean=np.zeros((3, 16, 16), np.float32))
    return folder / "partial.npz"


def _pickle_named_npz(folder: Path, marker: Path) -> Path:
    (folder / "pickled.npz").write_bytes(pickle.dumps(_RunsCode(marker)))
    return folder / "pickled.npz"


def _memo_bomb(folder: Path, marker: Path) -> Path:
    """Eleven bytes that make CPython's C unpickler zero 5.6 GB for its memo (LONG_BINPUT 700000000)."""
    (folder / "memo_bomb.pkl").write_bytes(b"\x80\x02}q\x00r" + (700_000_000).to_bytes(4, "little") + b".")
    return folder / "memo_bomb.pkl"


UV_MODELS = {
    "pickle that runs code": (_evil_pkl, r"refused: global '(posix|os)\.system' is not allowed"),
    "object arrays": (_object_npz, r"holds object arrays that would need pickle"),
    "truncated": (_truncated_npz, r"corrupt or truncated \.npz"),
    "missing keys": (_npz_missing_keys, r"missing keys \['format_version', 'basis'"),
    "a pickle named .npz": (_pickle_named_npz, r"a pickle; refusing to load it as \.npz"),
    "memory bomb": (_memo_bomb, r"expected a dict with keys 'r', 'g', 'b'"),
}


@pytest.fixture(scope="module")
def preprocessed(tmp_path_factory, faces_dir):
    """An output folder whose photo is already preprocessed, so a run goes straight to loading the models."""
    root = tmp_path_factory.mktemp("preprocessed")
    (root / "photos").mkdir()
    (root / "photos" / "face.jpg").symlink_to(faces_dir / "single" / "0003_d3dfr.jpg")
    config = PreprocessConfig(masks="landmarks", checkpoints_dir=str(root / "none"))
    assert preprocess_folder(root / "photos", root / "out" / "processed_data", config, progress=False).failures == []
    return root


@pytest.mark.parametrize("case", CHECKPOINTS)
def test_bad_detail_generator_for_fitting(case, preprocessed, small_models, tmp_path, capsys):
    make, reason = CHECKPOINTS[case]
    marker = tmp_path / "PWNED"
    bad = make(tmp_path, marker)
    out = tmp_path / "out"
    shutil.copytree(preprocessed / "out", out)
    args = run_args(preprocessed / "photos", out, small_models)
    args[args.index("--detail_model") + 1] = str(bad)
    assert run_main(args) == 2
    _error_line(capsys.readouterr().err, bad, reason)
    assert not marker.exists()
    assert not (out / "face").exists()


@pytest.mark.parametrize("case", UV_MODELS)
def test_bad_uv_albedo_model_for_fitting(case, preprocessed, small_models, tmp_path, capsys):
    make, reason = UV_MODELS[case]
    marker = tmp_path / "PWNED"
    bad = make(tmp_path, marker)
    out = tmp_path / "out"
    shutil.copytree(preprocessed / "out", out)
    args = run_args(preprocessed / "photos", out, small_models, "--face_model", "ict")
    args[args.index("--uvapm") + 1] = str(bad)
    assert run_main(args) == 2
    _error_line(capsys.readouterr().err, bad, reason)
    assert not marker.exists()


@pytest.mark.parametrize("case", ["truncated", "wrong architecture", "newer format", "pickle that runs code"])
def test_bad_checkpoint_to_resume_training(case, tmp_path, capsys, one_thread):
    make, reason = CHECKPOINTS[case]
    marker = tmp_path / "PWNED"
    bad = make(tmp_path, marker)
    for k in range(2):
        write_image(tmp_path / "maps" / f"m{k}.png", np.full((32, 32, 3), 100 + k, np.uint8))
    code = train_detail_generator.main([
        "--dataset_path", str(tmp_path / "maps"), "--output_dir", str(tmp_path / "run"), "--resume", str(bad),
        "--resolution", "32", "--latent_dim", "4",
        "--latent_grid", "2", "--set", "model.low_pass_resolution=16", "--set",
        "model.base_channels=4", "--set", "model.max_channels=8", "--num_workers", "0", "--device", "cpu", "-q"])
    assert code == 2
    _error_line(capsys.readouterr().err, bad, reason)
    assert not marker.exists() and not (tmp_path / "run" / "last.pt").exists()


def test_training_folder_with_a_third_of_the_files_broken(tmp_path, capsys, one_thread):
    maps = tmp_path / "maps"
    rng = np.random.default_rng(0)
    for k in range(8):
        write_image(maps / f"good_{k}.png", rng.integers(60, 200, (32, 32, 3), np.uint8))
    good = (maps / "good_0.png").read_bytes()
    (maps / "truncated.png").write_bytes(good[: len(good) // 3])
    (maps / "zero.png").write_bytes(b"")
    (maps / "text.jpg").write_text("not a map")
    write_image(maps / "wide.png", np.zeros((16, 32, 3), np.uint8))
    code = train_detail_generator.main([
        "--dataset_path", str(maps), "--output_dir", str(tmp_path / "run"), "--epochs", "1", "--batch_size", "2",
        "--resolution", "32", "--latent_dim", "4",
        "--latent_grid", "2", "--set", "model.low_pass_resolution=16", "--set",
        "model.base_channels=4", "--set", "model.max_channels=8", "--num_workers", "0", "--device", "cpu", "-q"])
    assert code == 0  # the run itself succeeds on the usable maps
    failures = read_failures(tmp_path / "run" / "failures.tsv")
    assert {Path(p).name: r.split(" (")[0] for p, r in failures.items()} == {
        "truncated.png": "corrupt or truncated image", "zero.png": "empty file",
        "text.jpg": "not a recognised image format", "wide.png": "UV maps are square, this image is 32x16"}
    err = capsys.readouterr().err
    assert sum(line.startswith("WARNING") and "skipped" in line for line in err.splitlines()) == 4
    no_traceback(err)
    items = load_torch(tmp_path / "run" / "last.pt")["training"]["items"]
    assert sorted(Path(p).name for part in items for p in part) == [f"good_{k}.png" for k in range(8)]
    assert_outputs_complete(tmp_path / "run")


# ----------------------------------------------------------------------------- the loaders themselves


def test_pickles_that_run_code_are_refused_by_every_loader(tmp_path):
    marker = tmp_path / "PWNED"
    payload = pickle.dumps(_RunsCode(marker))
    (tmp_path / "evil.pkl").write_bytes(payload)
    with zipfile.ZipFile(tmp_path / "evil_npz.npz", "w") as archive:  # an .npy inside that holds a pickle
        buffer = io.BytesIO()
        np.save(buffer, np.array([_RunsCode(marker)], dtype=object), allow_pickle=True)
        archive.writestr("mean.npy", buffer.getvalue())
    torch.save([_RunsCode(marker)], tmp_path / "evil.pt")
    for load, name in ((load_restricted_pickle, "evil.pkl"), (load_npz, "evil_npz.npz"), (load_torch, "evil.pt")):
        with pytest.raises(Exception) as info:
            load(tmp_path / name)
        assert type(info.value).__name__ == "FileFormatError" and str(info.value).startswith(str(tmp_path / name))
    assert not marker.exists()


MATS = {
    "missing keys": ({"meanshape": np.zeros((1, 9))}, r"missing keys \['meantex', 'idBase'"),
    "wrong shape": ({**{k: np.zeros((3, 3)) for k in ("meantex", "idBase", "exBase", "texBase", "tri",
                                                       "keypoints", "skinmask")},
                     "meanshape": np.zeros((2, 9))}, r"key 'meanshape' has shape \(2, 9\), expected \(1, \*\)"),
    "a struct instead of an array": ({**{k: np.zeros((1, 9)) for k in ("meanshape", "meantex")},
                                      "idBase": {"a": np.zeros(3)}}, r"MATLAB cell/struct|missing keys"),
}


@pytest.mark.parametrize("case", [*MATS, "text", "truncated"])
def test_bad_mat_for_the_asset_command(case, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UVAPM_HOME", str(tmp_path / "home"))
    path = tmp_path / "BFM_model_front.mat"
    if case == "text":
        path.write_text("MATLAB 5.0 MAT-file, but not really")
        reason = r"not a readable MATLAB \.mat file"
    elif case == "truncated":
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, {"meanshape": np.zeros((1, 3000)), "meantex": np.zeros((1, 3000))})
        path.write_bytes(buffer.getvalue()[:2000])
        reason = r"not a readable MATLAB \.mat file"
    else:
        content, reason = MATS[case]
        scipy.io.savemat(path, content)
    assert assets_main(["install", "bfm", "--from", str(path)]) == 2
    _error_line(capsys.readouterr().err, path, reason)
    assert not (tmp_path / "home" / "face_models" / "bfm.npz").exists()


def test_bad_reference_template_for_preprocessing(tmp_path, capsys):
    scipy.io.savemat(tmp_path / "similarity_Lm3D_all.mat", {"lm": np.zeros((5, 3))})
    write_image(tmp_path / "in" / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert preprocess_main(["--input_dir", str(tmp_path / "in"), "--reference_template",
                            str(tmp_path / "similarity_Lm3D_all.mat"), "-q"]) == 2
    _error_line(capsys.readouterr().err, tmp_path / "similarity_Lm3D_all.mat",
                r"key 'lm' has shape \(5, 3\), expected \(68, 3\)")


@pytest.mark.parametrize("case", ["truncated", "pickle that runs code"])
def test_bad_face_parsing_checkpoint_for_preprocessing(case, tmp_path, capsys):
    make, reason = CHECKPOINTS[case]
    marker = tmp_path / "PWNED"
    bisenet = tmp_path / "checkpoints" / "parsing_model" / "79999_iter.pth"
    bisenet.parent.mkdir(parents=True)
    make(tmp_path, marker).rename(bisenet)
    write_image(tmp_path / "in" / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert preprocess_main(["--input_dir", str(tmp_path / "in"), "--checkpoints_dir", str(tmp_path / "checkpoints"),
                            "-q"]) == 2
    _error_line(capsys.readouterr().err, bisenet, reason)
    assert not marker.exists()


def test_verbose_adds_the_traceback(tmp_path, capsys):
    scipy.io.savemat(tmp_path / "similarity_Lm3D_all.mat", {"lm": np.zeros((5, 3))})
    write_image(tmp_path / "in" / "x.png", np.zeros((8, 8, 3), np.uint8))
    assert preprocess_main(["--input_dir", str(tmp_path / "in"), "--reference_template",
                            str(tmp_path / "similarity_Lm3D_all.mat"), "--verbose"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "load_reference_template" in err
    assert err.rstrip().splitlines()[-1].startswith(f"error: {tmp_path / 'similarity_Lm3D_all.mat'}: key 'lm'")


def test_truncated_face_model_archive(tmp_path, monkeypatch, capsys, ict_archive):
    monkeypatch.setenv("UVAPM_HOME", str(tmp_path / "home"))
    with open(ict_archive, "rb") as fh:
        (tmp_path / "ict_facexmodel.tar.xz").write_bytes(fh.read(300_000))
    assert assets_main(["install", "ict", "--from", str(tmp_path / "ict_facexmodel.tar.xz")]) == 2
    _error_line(capsys.readouterr().err, tmp_path / "ict_facexmodel.tar.xz", r"corrupt or truncated archive")
    assert not list((tmp_path / "home").rglob("*.npz"))


# ----------------------------------------------------------------------------- render_3d_face.py


@pytest.fixture()
def ict_home(tmp_path, ict_npz, monkeypatch):
    """$UVAPM_HOME with the ICT face model installed."""
    (tmp_path / "home" / "face_models").mkdir(parents=True)
    (tmp_path / "home" / "face_models" / "ict.npz").symlink_to(ict_npz)
    monkeypatch.setenv("UVAPM_HOME", str(tmp_path / "home"))


def _uv_png(path: Path, size: tuple[int, int], layout: str | None) -> Path:
    write_image(path, np.full((size[1], size[0], 3), 180, np.uint8), text={"uv_layout_id": layout} if layout else None)
    return path


def _render(tmp_path: Path, *extra: str) -> int:
    return render_3d_face.main(["--output_path", str(tmp_path / "renders"), "--views", "0", "--resolution", "64",
                                "-q", *extra])


def _broken_obj(path: Path) -> Path:
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nvt 0 0\nf 1/1 2/5 3/1\n")
    return path


RENDER_CASES = {
    "not square": (lambda d: _uv_png(d / "wide.png", (128, 64), None), (), r"UV albedo maps are square"),
    "too small": (lambda d: _uv_png(d / "small.png", (8, 8), None), (), r"UV map of 8x8 pixels is too small"),
    "another UV layout": (lambda d: _uv_png(d / "other.png", (64, 64), "0123456789abcdef"), (),
                          r"UV map made for UV layout 0123456789abcdef"),
    "truncated": (lambda d: d / "cut.png", (), r"corrupt or truncated image"),
    "not an image": (lambda d: d / "notes.png", (), r"not a recognised image format"),
    "missing": (lambda d: d / "missing.png", (), r"file not found"),
}


@pytest.mark.parametrize("case", RENDER_CASES)
def test_bad_uv_map_for_rendering(case, tmp_path, capsys, ict_home):
    make, extra, reason = RENDER_CASES[case]
    good = _uv_png(tmp_path / "good.png", (64, 64), None)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "notes.png").write_text("not a map")
    bad = make(tmp_path)
    assert _render(tmp_path, "--albedo_map", str(bad), *extra) == 2
    _error_line(capsys.readouterr().err, bad, reason)
    assert not (tmp_path / "renders").exists() or not list((tmp_path / "renders").iterdir())


@pytest.mark.parametrize("case", ["truncated", "pickle that runs code", "a tensor, not a checkpoint"])
def test_bad_coefficients_for_rendering(case, tmp_path, capsys, ict_home):
    make, _ = CHECKPOINTS[case]
    marker = tmp_path / "PWNED"
    bad = make(tmp_path, marker)
    uv = _uv_png(tmp_path / "uv.png", (64, 64), None)
    assert _render(tmp_path, "--albedo_map", str(uv), "--coeffs", str(bad)) == 2
    err = capsys.readouterr().err
    _error_line(err, bad, r"(corrupt or truncated|refused|not a coeffs\.pt of a fit)")
    assert not marker.exists()


def test_obj_with_texture_indices_out_of_range(tmp_path, capsys, ict_home):
    uv = _uv_png(tmp_path / "uv.png", (64, 64), None)
    mesh = _broken_obj(tmp_path / "mesh.obj")
    assert _render(tmp_path, "--albedo_map", str(uv), "--mesh", str(mesh)) == 2
    _error_line(capsys.readouterr().err, mesh, r"texture coordinate")


def test_rendering_writes_complete_files(tmp_path, ict_home):
    uv = _uv_png(tmp_path / "uv.png", (64, 64), None)
    assert _render(tmp_path, "--albedo_map", str(uv)) == 0
    assert sorted(p.name for p in (tmp_path / "renders").iterdir()) == ["contact_sheet.png", "view_+000.png"]
    assert assert_outputs_complete(tmp_path / "renders") == 2
