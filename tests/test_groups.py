"""Several photos of one person fitted jointly: the groups, the fused texture and the run's outputs."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from fitting.groups import PhotoGroups
from fitting.run import main
from fitting.unwrap import UnwrapResult, fuse_unwrapped
from models.uv_layout import UVLayout
from testing.small_models import QUICK_OVERRIDES, write_small_models
from tests.conftest import REPO
from tests.test_run import FACE_FILES
from utils.errors import ToolkitError
from utils.image_io import read_image
from utils.safe_load import load_torch

PHOTO_FILES = ("coeffs.pt", "coeffs.json", "render.png", "summary.png", "loss.png", "log.txt", "metrics.json")


def test_groups_renumber_average_and_expand():
    groups = PhotoGroups.of(torch.tensor([7, 3, 7, 5]), 4)
    assert groups.index.tolist() == [0, 1, 0, 2] and groups.num_groups == 3 and not groups.trivial
    assert groups.members(0) == [0, 2] and groups.members(2) == [3]
    values = torch.tensor([[1.0, 2.0], [5.0, 5.0], [3.0, 6.0], [0.0, 1.0]])
    assert groups.mean(values).tolist() == [[2.0, 4.0], [5.0, 5.0], [0.0, 1.0]]
    weighted = groups.mean(values, torch.tensor([3.0, 1.0, 1.0, 1.0]))
    assert weighted[0].tolist() == [1.5, 3.0]
    assert groups.expand(groups.mean(values))[2].tolist() == [2.0, 4.0]
    single = PhotoGroups.of(None, 3)
    assert single.trivial and torch.equal(single.mean(values[:3]), values[:3])
    with pytest.raises(ValueError, match="groups"):
        PhotoGroups.of(torch.tensor([0, 1]), 3)


def test_fused_texture_covers_what_either_photo_saw_in_one_colour(ict_model):
    """Two photos of one albedo, each seeing one half of the face under a differently coloured light: the fused
    texture is seen wherever either saw it, and both halves take one colour (the light's differences removed)."""
    layout = UVLayout(ict_model, 64)
    albedo = torch.tensor([0.6, 0.45, 0.35])[None, :, None, None].expand(1, 3, 64, 64)
    left = (torch.arange(64) < 32).float()[None, None, None, :].expand(1, 1, 64, 64) * layout.mask
    right = layout.mask - left
    casts = torch.tensor([[1.2, 1.0, 0.8], [0.8, 1.0, 1.2]])[:, :, None, None]
    confidence = torch.cat([left, right])
    texture = (albedo * casts).clamp(0, 1) * confidence
    unwrapped = UnwrapResult(texture, confidence, texture, confidence, confidence.flatten(1).mean(1))
    fused, gain = fuse_unwrapped(unwrapped, PhotoGroups.of(torch.tensor([0, 0]), 2), layout)
    assert torch.equal(fused.texture[0], fused.texture[1]) and gain.shape == (2, 3)
    seen = fused.confidence[0, 0] > 0.5
    assert torch.equal(seen, layout.mask.view(64, 64) > 0.5)  # the union of the two halves
    colours = fused.texture[0][:, seen]
    assert float((colours - colours.mean(1, keepdim=True)).abs().max()) < 1e-4  # no seam between the halves
    assert float(fused.coverage[0]) > float(unwrapped.coverage.max()) + 0.3


@pytest.fixture(scope="module")
def small_models(tmp_path_factory, ict_model):
    folder = tmp_path_factory.mktemp("models")
    write_small_models(folder, ict_model.uv_layout_id)
    return folder


@pytest.mark.slow
def test_group_by_folder_fits_each_person_once(tmp_path, faces_dir, small_models):
    """A subfolder per person: one identity and albedo per person, a pose and light per photo, a person of one
    photo equal to that photo fitted alone, the photos beside the folders fitted alone, and a broken photo of a
    person reported while its other photos are fitted."""
    photos = tmp_path / "photos"
    for folder, names in {"pair": ("0003_d3dfr.jpg", "0097_deepface.jpg"), "one": ("0003_d3dfr.jpg",),
                          ".": ("0003_d3dfr.jpg",)}.items():
        (photos / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (photos / folder / name).symlink_to(faces_dir / "single" / name)
    (photos / "pair" / "broken.jpg").write_bytes(b"not an image")  # reported; the rest of the person is fitted
    out = tmp_path / "out"
    args = ["--input_dir", str(photos), "--output_dir", str(out), "--uvapm", str(small_models / "uvapm.npz"),
            "--detail_model", str(small_models / "detail.pt"), "--group_by", "folder", "-q",
            *[a for s in QUICK_OVERRIDES for a in ("--set", s)]]
    assert main(args) == 1  # the broken photo
    pair = out / "pair"
    assert sorted(p.name for p in pair.iterdir()) == sorted((*FACE_FILES, "photos"))
    metrics = json.loads((pair / "metrics.json").read_text())
    assert metrics["photos"] == ["0003_d3dfr", "0097_deepface"]
    coeffs = {}
    for name in metrics["photos"]:
        folder = pair / "photos" / name
        assert sorted(p.name for p in folder.iterdir()) == sorted(PHOTO_FILES)
        coeffs[name] = load_torch(folder / "coeffs.pt")
        assert read_image(folder / "render.png").shape == read_image(faces_dir / "single" / f"{name}.jpg").shape
    a, b = coeffs.values()
    for shared in ("identity", "albedo", "detail"):
        assert torch.equal(a[shared], b[shared]), shared
    for own in ("angles", "gamma"):
        assert not torch.equal(a[own], b[own]), own
    single = json.loads((out / "0003_d3dfr" / "metrics.json").read_text())
    assert metrics["unwrap_coverage"] > single["unwrap_coverage"]  # the second photo adds texels
    # a person with one photo is that photo fitted alone
    alone, person = load_torch(out / "0003_d3dfr" / "coeffs.pt"), load_torch(out / "one" / "coeffs.pt")
    for key in ("identity", "expression", "angles", "gamma", "albedo", "detail", "gaze"):
        torch.testing.assert_close(alone[key], person[key], atol=1e-5, rtol=0)  # float32 noise of batching
    assert (read_image(out / "one" / "uv_albedo.png").astype(int) - read_image(out / "0003_d3dfr" /
            "uv_albedo.png").astype(int)).__abs__().max() <= 1
    index = (out / "index.html").read_text()
    assert 'href="pair/summary.png"' in index and "pair/photos/0097_deepface/render.png" in index
    failures = (out / "failures.tsv").read_text().splitlines()
    assert len(failures) == 2 and failures[1].startswith("pair/broken.jpg\tpreprocess: "), failures


@pytest.mark.slow
def test_torchrun_shards_persons_and_each_matches_one_process(tmp_path, faces_dir, small_models):
    """Two ranks, two persons of two photos and one single photo: every person is fitted once, by one rank,
    exactly as in one process (same thread count)."""
    photos = tmp_path / "photos"
    for folder, names in {"anna": ("0003_d3dfr.jpg", "0097_deepface.jpg"),
                          "ben": ("0097_deepface.jpg", "0052_deca.jpg"), ".": ("0052_deca.jpg",)}.items():
        (photos / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            (photos / folder / name).symlink_to(faces_dir / "single" / name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    one, two = tmp_path / "one", tmp_path / "two"
    launchers = {one: [sys.executable, "-m"],
                 two: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]}
    for out, launcher in launchers.items():
        args = ["--input_dir", str(photos), "--output_dir", str(out), "--uvapm", str(small_models / "uvapm.npz"),
                "--stages", "1,2", "--group_by", "folder", "-q", *[a for s in QUICK_OVERRIDES for a in ("--set", s)]]
        proc = subprocess.run([*launcher, "fitting.run", *args], cwd=REPO, env=env, capture_output=True, text=True,
                              timeout=900)
        assert proc.returncode == 0, proc.stderr[-2000:]
    for person, names in {"anna": ("0003_d3dfr", "0097_deepface"), "ben": ("0052_deca", "0097_deepface")}.items():
        assert json.loads((two / person / "metrics.json").read_text())["photos"] == list(names)
        for name in names:
            a = load_torch(one / person / "photos" / name / "coeffs.pt")
            b = load_torch(two / person / "photos" / name / "coeffs.pt")
            for key in ("identity", "expression", "angles", "gamma", "albedo"):
                torch.testing.assert_close(a[key], b[key], atol=0, rtol=0)
        assert (read_image(one / person / "uv_albedo.png") == read_image(two / person / "uv_albedo.png")).all()
    assert (two / "0052_deca" / "metrics.json").is_file()
    index = (two / "index.html").read_text()
    assert all(f'href="{unit}/summary.png"' in index for unit in ("anna", "ben", "0052_deca"))


def test_fit_units_per_grouping(tmp_path):
    from fitting.runner import fit_units

    processed = tmp_path / "processed_data"
    for path in ("a.pt", "b.pt", "anna/1.pt", "anna/2.pt", "vis/a.png", "empty/x.png"):
        (processed / path).parent.mkdir(parents=True, exist_ok=True)
        (processed / path).write_bytes(b"")
    none = fit_units(processed, "none", "photos")
    assert [(u.name, [p.name for p in u.files], u.joint) for u in none] == [("a", ["a.pt"], False),
                                                                           ("b", ["b.pt"], False)]
    folder = fit_units(processed, "folder", "photos")
    assert [(u.name, len(u.files), u.joint) for u in folder] == [("a", 1, False), ("anna", 2, True), ("b", 1, False)]
    (everything,) = fit_units(processed, "all", "photos")
    assert everything.name == "photos" and everything.joint and [p.name for p in everything.files] == ["a.pt", "b.pt"]
    (processed / "anna.pt").write_bytes(b"")  # a photo named like a person's folder: one output folder for both
    with pytest.raises(ToolkitError, match="anna"):
        fit_units(processed, "folder", "photos")


def test_bad_group_by_is_a_usage_error(tmp_path, faces_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "0003_d3dfr.jpg").symlink_to(faces_dir / "single" / "0003_d3dfr.jpg")
    assert main(["--input_dir", str(photos), "--set", "group_by=people", "-q"]) == 2
    assert "group_by" in capsys.readouterr().err
