"""Atomic output, safe loading of untrusted files and OBJ round trips."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from utils.atomic import atomic_path, save_torch, write_text
from utils.errors import FileFormatError
from utils.mesh_io import read_obj, triangulate, write_mtl, write_obj
from utils.safe_load import load_restricted_pickle, load_torch


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    write_text(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("disk full")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.txt"]


def test_atomic_write_reports_enospc_and_keeps_old_file(tmp_path, monkeypatch):
    target = tmp_path / "x.bin"
    write_text(target, "complete")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_text(target, "new content")
    assert target.read_text() == "complete" and len(list(tmp_path.iterdir())) == 1


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_restricted_pickle_accepts_arrays_and_refuses_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good = {"r": {"mean": np.arange(4.0), "base": np.eye(4, 2, dtype=np.float32)}}
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(good, protocol=2))
    loaded = load_restricted_pickle(tmp_path / "model.pkl")
    np.testing.assert_array_equal(loaded["r"]["base"], good["r"]["base"])

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_RunsCode()))
    with pytest.raises(FileFormatError, match=r"evil.pkl: refused: global '(posix|os)\.system' is not allowed"):
        load_restricted_pickle(tmp_path / "evil.pkl")
    assert not (tmp_path / "PWNED").exists()

    (tmp_path / "cut.pkl").write_bytes(pickle.dumps(good)[:50])
    with pytest.raises(FileFormatError, match="cut.pkl: corrupt or truncated pickle"):
        load_restricted_pickle(tmp_path / "cut.pkl")


def test_torch_checkpoints_load_weights_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_torch(tmp_path / "ok.pt", {"w": torch.ones(2), "config": {"dim": 3}})
    assert load_torch(tmp_path / "ok.pt")["config"]["dim"] == 3
    torch.save({"x": _RunsCode()}, tmp_path / "evil.pt")
    with pytest.raises(FileFormatError, match="evil.pt: refused"):
        load_torch(tmp_path / "evil.pt")
    assert not (tmp_path / "PWNED").exists()
    data = (tmp_path / "ok.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="cut.pt: corrupt or truncated"):
        load_torch(tmp_path / "cut.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(FileFormatError, match="empty.pt: empty file"):
        load_torch(tmp_path / "empty.pt")


def test_obj_round_trip_with_uvs_and_material(tmp_path):
    vertices = np.random.rand(5, 3).astype(np.float32)
    faces = np.array([[0, 1, 2], [0, 2, 3], [1, 4, 2]])
    uvs = np.random.rand(6, 2).astype(np.float32)
    faces_uv = np.array([[0, 1, 2], [0, 2, 3], [5, 4, 2]])
    write_obj(tmp_path / "m.obj", vertices, faces, uvs, faces_uv, mtl_file="m.mtl")
    write_mtl(tmp_path / "m.mtl", [("face", "albedo.png", (1.0, 1.0, 1.0)), ("head", None, (0.8, 0.6, 0.5))])
    mesh = read_obj(tmp_path / "m.obj")
    np.testing.assert_allclose(mesh.vertices, vertices, atol=1e-6)
    np.testing.assert_allclose(mesh.uvs, uvs, atol=1e-6)
    f, ft, _ = triangulate(mesh.polygons, mesh.polygon_uvs)
    np.testing.assert_array_equal(f, faces)
    np.testing.assert_array_equal(ft, faces_uv)
    assert set(mesh.materials) == {"face"}
    mtl = (tmp_path / "m.mtl").read_text()
    assert "map_Kd albedo.png" in mtl and "newmtl head" in mtl and "Kd 0.8000 0.6000 0.5000" in mtl


def test_triangulate_quads_as_fans():
    faces, _, origin = triangulate([np.array([0, 1, 2, 3]), np.array([4, 5, 6])])
    np.testing.assert_array_equal(faces, [[0, 1, 2], [0, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(origin, [0, 0, 1])


def test_checkpoint_readme_lists_every_official_file():
    from assets.checkpoints import OFFICIAL_CHECKPOINTS
    from tests.conftest import REPO

    readme = (REPO / "checkpoints" / "README.md").read_text()
    for ckpt in OFFICIAL_CHECKPOINTS:
        assert f"`{ckpt.relpath}`" in readme, ckpt.relpath
