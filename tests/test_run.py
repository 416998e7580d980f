"""End to end: ``fitting.run`` on real photos with small models built by the test.

Small sizes keep it fast: 64x64 UV maps and detail crops, a few optimisation
steps, a 4-component UVAPM built from synthetic maps and an untrained detail
generator (:mod:`testing.small_models`, shared with the benchmarks' quick
runs). The pipeline, outputs, resume, failures and torchrun sharding are
what is tested, not reconstruction quality (benchmarks measure that).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmarks.texture_asset import detail_1024
from fitting.run import main
from testing.small_models import QUICK_OVERRIDES, write_small_models
from tests.conftest import REPO
from utils.image_io import read_image, write_image
from utils.safe_load import load_torch

PHOTOS = ("0003_d3dfr.jpg", "0097_deepface.jpg")
FACE_FILES = ("uv_albedo.png", "uv_albedo_head.png", "uv_eyes_mouth.png", "uv_albedo_coarse.png", "uv_unwrapped.png",
              "uv_confidence.png",
              "mesh.obj", "mesh.mtl", "mesh_neutral.obj", "mesh.glb", "coeffs.pt", "coeffs.json", "render.png",
              "summary.png", "loss.png", "log.txt", "metrics.json")


@pytest.fixture(scope="module")
def small_models(tmp_path_factory, ict_model):
    folder = tmp_path_factory.mktemp("models")
    write_small_models(folder, ict_model.uv_layout_id)
    return folder


@pytest.fixture()
def photo_dir(tmp_path, faces_dir):
    folder = tmp_path / "photos with space"
    folder.mkdir()
    for name in PHOTOS:
        (folder / name).symlink_to(faces_dir / "single" / name)
    return folder


def _args(photo_dir: Path, out: Path, models: Path, *extra: str) -> list[str]:
    return ["--input_dir", str(photo_dir), "--output_dir", str(out), "--uvapm", str(models / "uvapm.npz"),
            "--detail_model", str(models / "detail.pt"), "-q", *[a for s in QUICK_OVERRIDES for a in ("--set", s)],
            *extra]


@pytest.mark.slow
def test_run_writes_every_output_and_resumes(photo_dir, small_models, tmp_path):
    out = tmp_path / "out"
    assert main(_args(photo_dir, out, small_models)) == 0
    for photo in PHOTOS:
        folder = out / Path(photo).stem
        assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == sorted(FACE_FILES)
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["stages"] == [1, 2, 3]
        for key in ("stage1_psnr", "stage2_psnr", "stage3_psnr", "stage3_ssim", "landmark_residual"):
            assert np.isfinite(metrics[key]), key
        assert metrics["landmark_residual"] < 0.06
        # the albedo side: skin tones of the photo and of the albedo over the seen texels, as CIELAB and ITA
        for kind in ("photo_skin", "albedo_skin"):
            assert 20 < metrics[f"{kind}_L"] < 95 and -90 < metrics[f"{kind}_ita_deg"] < 90, metrics
        assert 0.3 < metrics["reliable_share"] <= 1.0  # shared photos with the face mostly uncovered
        assert set(metrics["seconds"]) == {"stage1", "unwrap", "stage2", "stage3", "evaluate"}
        # log.txt holds this face's own lines (stages with losses and times), not the other face's
        log = (folder / "log.txt").read_text()
        other = next(Path(p).stem for p in PHOTOS if p != photo)
        for stage in ("stage1", "unwrap", "stage2", "stage3", "evaluate"):
            assert f"{folder.name} {stage}: " in log, (stage, log)
        assert "total loss at steps 1/" in log and other not in log
        assert metrics["networks"]["arcface"].startswith("skipped")
        assert read_image(folder / "uv_albedo.png").shape == (64, 64, 3)
        coeffs = load_torch(folder / "coeffs.pt")
        assert coeffs["identity"].shape == (1, 100) and coeffs["albedo"].shape == (1, 12)
        assert coeffs["detail"].shape == (1, 8)
        assert json.loads((folder / "coeffs.json").read_text())["face_model"] == "ict"
        photo = read_image(photo_dir / photo)
        assert read_image(folder / "render.png").shape == photo.shape  # composited on the photo itself
        assert read_image(folder / "summary.png").shape == (224, 7 * 224, 3)
    # the gallery lists both faces and links their pictures
    index = (out / "index.html").read_text()
    for photo in PHOTOS:
        assert f'href="{Path(photo).stem}/summary.png"' in index
    assert (out / "failures.tsv").read_text() == "file\treason\n"
    # the saved configuration is the one that ran, derived values filled in
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["preprocess"]["device"] == "cpu" and saved["preprocess"]["checkpoints_dir"] == "checkpoints"
    assert saved["shape"]["refine"]["optim"]["steps"] == 4 and saved["overwrite"] is False
    # a second run skips the complete faces and rewrites none of their files
    def stamps():
        return {p: p.stat().st_mtime_ns for p in out.glob("*/*") if p.suffix in (".pt", ".png", ".obj", ".json")}

    before = stamps()
    assert main(_args(photo_dir, out, small_models)) == 0
    assert before == stamps()


@pytest.mark.slow
def test_mesh_opens_textured_in_trimesh(photo_dir, small_models, tmp_path, ict_model):
    import trimesh

    out = tmp_path / "out"
    assert main(_args(photo_dir, out, small_models, "--stages", "1,2", "--uv_1024")) == 0
    folder = out / Path(PHOTOS[0]).stem
    # --uv_1024: the 64-texel stage-2 map at 1024 with the photo's own detail where it was seen, more than the
    # same map enlarged and completed at 1024 (the skin's grain where it is flat) has there
    assert read_image(folder / "uv_albedo_1024.png").shape == (1024, 1024, 3)
    band, control = detail_1024(folder, ict_model)
    assert band > 2 * control, (band, control)
    assert "uv1024" in json.loads((folder / "metrics.json").read_text())["seconds"]
    scene = trimesh.load(folder / "mesh.obj", force="scene")
    textured = [g for g in scene.geometry.values() if getattr(g.visual, "uv", None) is not None
                and getattr(g.visual.material, "image", None) is not None]
    # the face with uv_albedo.png, the rest of the head with uv_albedo_head.png, eyeballs, teeth and sockets with
    # uv_eyes_mouth.png
    assert len(textured) == 3
    assert all(g.visual.material.image.size == (64, 64) for g in textured)
    triangles = 22288 + len(ict_model.part_faces)  # face + head/neck + display parts of ICT
    assert sum(len(g.faces) for g in scene.geometry.values()) == triangles
    assert "map_Kd uv_eyes_mouth.png" in (folder / "mesh.mtl").read_text()
    glb = trimesh.load(folder / "mesh.glb", force="scene")
    assert sum(len(g.faces) for g in glb.geometry.values()) == triangles
    for geometry in glb.geometry.values():  # PBR skin, not metal; each part's UVs in its own texture
        material = geometry.visual.material
        assert material.baseColorTexture is not None and material.metallicFactor == 0.0
        assert geometry.visual.uv.min() >= 0 and geometry.visual.uv.max() <= 1
    assert not (folder / "metrics.json").read_text().count("stage3_psnr")


@pytest.mark.slow
def test_bad_file_is_reported_and_the_rest_completes(photo_dir, small_models, tmp_path):
    (photo_dir / "broken.jpg").write_text("not an image")
    out = tmp_path / "out"
    assert main(_args(photo_dir, out, small_models, "--stages", "1")) == 1
    failures = (out / "failures.tsv").read_text().splitlines()
    assert failures[0] == "file\treason" and failures[1].startswith("broken.jpg\tpreprocess: ")
    assert "not a recognised image format" in failures[1]
    for photo in PHOTOS:
        assert (out / Path(photo).stem / "metrics.json").is_file()
    assert "broken.jpg" in (out / "index.html").read_text()


def test_missing_uvapm_is_a_clear_error(photo_dir, tmp_path, capsys):
    code = main(["--input_dir", str(photo_dir), "--output_dir", str(tmp_path / "o"), "--uvapm",
                 str(tmp_path / "nope.npz"), "-q"])
    assert code == 2
    assert "nope.npz" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_processes_match_one(photo_dir, small_models, tmp_path):
    """Two ranks shard the faces; each face comes out as in a single process (same thread count)."""
    one, two = tmp_path / "one", tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launchers = {one: [sys.executable, "-m"],
                 two: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]}
    for out, launcher in launchers.items():
        proc = subprocess.run([*launcher, "fitting.run", *_args(photo_dir, out, small_models, "--stages", "1,2")],
                              cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for photo in PHOTOS:
        name = Path(photo).stem
        a, b = load_torch(one / name / "coeffs.pt"), load_torch(two / name / "coeffs.pt")
        for key in ("identity", "expression", "angles", "translation", "gamma", "albedo"):
            torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
        assert (read_image(one / name / "uv_albedo.png") == read_image(two / name / "uv_albedo.png")).all()
        assert (one / name / "mesh.obj").read_bytes() == (two / name / "mesh.obj").read_bytes()
    assert (two / "index.html").is_file()


def test_help_and_bad_stages(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--input_dir" in capsys.readouterr().out
    assert main(["--input_dir", ".", "--stages", "2,3"]) == 2
    assert "stages run in order from 1" in capsys.readouterr().err


def test_write_image_keeps_layout_id(tmp_path):
    from utils.image_io import read_png_text

    write_image(tmp_path / "a.png", np.zeros((4, 4, 3)), text={"uv_layout_id": "abc"})
    assert read_png_text(tmp_path / "a.png") == {"uv_layout_id": "abc"}
