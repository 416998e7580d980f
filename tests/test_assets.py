"""Asset manager: ICT conversion against the raw OBJ files, HiFi3D++/BFM
loaders on synthetic .mat files in the official schema, and bad inputs."""

from __future__ import annotations

import lzma
import pickle
import subprocess
import sys
import tarfile

import numpy as np
import pytest
import scipy.io
import torch

from assets import ict
from assets.matlab_models import convert_bfm, convert_hifi3dpp
from assets.sources import iter_files
from models import FaceModel
from models.face_model_format import load_face_model
from tests.conftest import REPO
from utils.errors import FileFormatError
from utils.mesh_io import read_obj_vertices


def _raw_vertices(archive, names):
    wanted = {f"FaceXModel/{n}" for n in names}
    out = {}
    with tarfile.open(archive, "r:xz") as tar:
        for member in tar:
            if member.name in wanted:
                out[member.name.split("/")[-1]] = read_obj_vertices(tar.extractfile(member).read())
    return out


def test_ict_model_matches_raw_obj_files(ict_archive, ict_model):
    rng = np.random.default_rng(1)
    id_idx = rng.choice(100, 4, replace=False)
    exp_idx = rng.choice(53, 4, replace=False)
    names = ["generic_neutral_mesh.obj"] + [f"identity{k:03d}.obj" for k in id_idx]
    names += [f"{ict_model.exp_names[k]}.obj" for k in exp_idx]
    raw = _raw_vertices(ict_archive, names)
    neutral = raw["generic_neutral_mesh.obj"][:11248].astype(np.float64)
    w_id = rng.normal(size=4)
    w_exp = rng.uniform(size=4)
    expected = neutral.copy()
    for w, k in zip(w_id, id_idx):
        expected += w * (raw[f"identity{k:03d}.obj"][:11248] - neutral)
    for w, k in zip(w_exp, exp_idx):
        expected += w * (raw[f"{ict_model.exp_names[k]}.obj"][:11248] - neutral)

    identity = torch.zeros(1, 100)
    identity[0, id_idx] = torch.tensor(w_id, dtype=torch.float32)
    expression = torch.zeros(1, 53)
    expression[0, exp_idx] = torch.tensor(w_exp, dtype=torch.float32)
    shape = ict_model.shape(identity, expression)[0].double().numpy()
    centre = neutral[:9409].mean(0)  # the model is recentred on its face region
    np.testing.assert_allclose(shape + centre, expected, atol=2e-4)  # cm, float32 precision


def test_ict_display_parts_follow_the_raw_obj_files(ict_archive, ict_model):
    assert ict_model.has_parts, "the installed ICT model predates the display parts: python -m assets install ict"
    assert ict_model.part_names == ["mouth_socket", "eye_sockets", "gums_tongue", "teeth", "eyeballs"]
    names = ["generic_neutral_mesh.obj", "identity007.obj", "jawOpen.obj", "eyeLookUp_L.obj"]
    raw = {k: v.astype(np.float64) for k, v in _raw_vertices(ict_archive, names).items()}
    # the part vertices: the sockets', gums', teeth's and sclera shells' (irises left out), in source order
    source = np.r_[11248:22221, 23021:23791]
    assert ict_model.part_shape.shape == (len(source), 3)
    neutral = raw["generic_neutral_mesh.obj"]
    expected = neutral + 0.7 * (raw["identity007.obj"] - neutral) + 0.5 * (raw["jawOpen.obj"] - neutral)
    identity, expression = torch.zeros(1, 100), torch.zeros(1, 53)
    identity[0, 7] = 0.7
    expression[0, ict_model.exp_names.index("jawOpen")] = 0.5
    display = ict_model.display_shape(identity, expression)[0].double().numpy()
    centre = neutral[:9409].mean(0)
    np.testing.assert_allclose(display[:11248] + centre, expected[:11248], atol=2e-4)
    np.testing.assert_allclose(display[11248:] + centre, expected[source], atol=2e-4)
    # the sockets share the lips' and lids' vertices: every part triangle touching the model's vertices does so
    faces = ict_model.part_faces
    shared = faces[(faces < 11248).any(1)]
    assert len(shared) and ict_model.part_labels[(faces < 11248).any(1)].unique().tolist() == [0, 1]
    # the jaw opens the lower teeth; ICT's eyeLook shapes move the lids only, the eyeballs look straight ahead
    teeth = ict_model.part_labels == ict_model.part_names.index("teeth")
    lower = faces[teeth].unique()
    drop = (ict_model.display_shape(None, expression) - ict_model.display_shape())[0, lower, 1]
    assert (drop < -0.3).float().mean() > 0.3  # about half the teeth (the lower row) move down by mm
    look = torch.zeros(1, 53)
    look[0, ict_model.exp_names.index("eyeLookUp_L")] = 1.0
    eyes = faces[ict_model.part_labels == ict_model.part_names.index("eyeballs")].unique()
    moved = (ict_model.display_shape(None, look) - ict_model.display_shape())[0]
    assert moved[:11248].norm(dim=-1).max() > 0.2 and moved[eyes].norm(dim=-1).max() == 0


def test_ict_model_facts(ict_npz):
    data = load_face_model(ict_npz)
    assert data.num_vertices == 11248 and data.num_face_vertices == 9409
    assert data.id_basis.shape == (11248, 3, 100) and data.exp_basis.shape == (11248, 3, 53)
    assert data.faces.max() < 9409  # fitting region only uses face vertices
    assert data.head_faces.shape[0] > data.faces.shape[0]
    face_uvs = data.uvs[np.unique(data.faces_uv)]
    assert face_uvs.min() >= 0 and face_uvs.max() <= 1  # the face fills the [0,1]^2 tile
    assert data.landmark_indices.shape == (68,) and data.landmark_indices.max() < 9409
    assert data.units == "cm" and data.exp_names[0] == "browDown_L"


def test_zero_coefficients_give_the_mean(ict_model):
    out = ict_model(torch.zeros(2, 100), torch.zeros(2, 53))
    torch.testing.assert_close(out.vertices, ict_model.mean_shape.expand(2, -1, -1))
    torch.testing.assert_close(out.landmarks, ict_model.mean_shape[ict_model.landmark_indices].expand(2, -1, -1))


def _hifi_fixture(path, N=40, K_id=5, K_exp=4, K_tex=3, schema_break=None):
    rng = np.random.default_rng(0)
    tri = rng.integers(1, N + 1, size=(30, 3))
    head_tri = np.vstack([tri, rng.integers(1, N + 1, size=(10, 3))])
    mat = {
        "meanshape": rng.normal(size=(1, 3 * N)).astype(np.float32),
        "meantex": rng.uniform(0, 255, size=(1, 3 * N)).astype(np.float32),
        "idBase": rng.normal(size=(3 * N, K_id)).astype(np.float32),
        "exBase": rng.normal(size=(3 * N, K_exp)).astype(np.float32),
        "texBase": rng.normal(size=(3 * N, K_tex)).astype(np.float32),
        "vt_list": rng.uniform(size=(N + 7, 2)).astype(np.float32),
        "tri": tri, "tri_vt": rng.integers(1, N + 8, size=(30, 3)),
        "head_tri": head_tri, "head_tri_vt": rng.integers(1, N + 8, size=(40, 3)),
        "keypoints": rng.integers(1, N + 1, size=(1, 68)),
        "skinmask": rng.integers(0, 2, size=(1, N)),
        "uv_idx": np.zeros((4, 2), np.int64),  # present in the release, unused
    }
    if schema_break == "missing":
        del mat["exBase"]
    elif schema_break == "shape":
        mat["tri"] = tri[:, :2]
    scipy.io.savemat(path, mat)
    return mat


def test_hifi3dpp_loader_on_synthetic_mat(tmp_path):
    mat = _hifi_fixture(tmp_path / "hifi3dpp_model_info.mat")
    data = convert_hifi3dpp(tmp_path / "hifi3dpp_model_info.mat")
    data.validate()
    N = 40
    np.testing.assert_allclose(data.mean_shape, mat["meanshape"].reshape(N, 3))
    # vertex 7's identity mode 2 comes from rows 21..23 of the interleaved basis
    np.testing.assert_allclose(data.id_basis[7, :, 2], mat["idBase"][21:24, 2])
    np.testing.assert_array_equal(data.faces, mat["tri"] - 1)
    np.testing.assert_array_equal(data.landmark_indices, mat["keypoints"].ravel() - 1)
    np.testing.assert_allclose(data.albedo_mean, mat["meantex"].reshape(N, 3) / 255, rtol=1e-6)
    model = FaceModel(data)
    assert model(torch.zeros(1, 5)).vertices.shape == (1, N, 3)


def test_bfm_loader_on_synthetic_mat(tmp_path):
    rng = np.random.default_rng(0)
    N = 30
    mat = {
        "meanshape": rng.normal(size=(1, 3 * N)), "meantex": rng.uniform(0, 255, size=(1, 3 * N)),
        "idBase": rng.normal(size=(3 * N, 8)), "exBase": rng.normal(size=(3 * N, 6)),
        "texBase": rng.normal(size=(3 * N, 8)), "tri": rng.integers(1, N + 1, size=(20, 3)),
        "keypoints": rng.integers(1, N + 1, size=(1, 68)), "skinmask": rng.integers(0, 2, size=(1, N)),
        "point_buf": rng.integers(1, 20, size=(N, 8)),
    }
    scipy.io.savemat(tmp_path / "BFM_model_front.mat", mat)
    data = convert_bfm(tmp_path / "BFM_model_front.mat")
    np.testing.assert_allclose(data.exp_basis[3, :, 1], mat["exBase"][9:12, 1], rtol=1e-6)
    assert data.uvs.min() >= 0 and data.uvs.max() <= 1  # planar UVs fill the tile
    np.testing.assert_array_equal(data.faces_uv, data.faces)


@pytest.mark.parametrize("kind,message", [("missing", "missing keys ['exBase']"), ("shape", "key 'tri' has shape")])
def test_wrong_mat_gives_clear_error(tmp_path, kind, message):
    _hifi_fixture(tmp_path / "bad.mat", schema_break=kind)
    with pytest.raises(FileFormatError, match=r"bad\.mat: " + message.replace("[", r"\[").replace("]", r"\]")):
        convert_hifi3dpp(tmp_path / "bad.mat")


def test_not_a_mat_file(tmp_path):
    (tmp_path / "x.mat").write_text("hello")
    with pytest.raises(FileFormatError, match="x.mat: not a readable MATLAB"):
        convert_hifi3dpp(tmp_path / "x.mat")


def test_pickle_planted_as_npz_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "ict.npz"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(FileFormatError, match="ict.npz: a pickle; refusing"):
        load_face_model(path)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "objarr.npz", x=np.array([{"a": 1}], dtype=object))
    with pytest.raises(FileFormatError, match="object arrays"):
        load_face_model(tmp_path / "objarr.npz")


def test_corrupt_archive_gives_clear_error_and_installs_nothing(ict_archive, tmp_path):
    truncated = tmp_path / "truncated.tar.xz"
    truncated.write_bytes(ict_archive.read_bytes()[: 3_000_000])
    with pytest.raises(FileFormatError, match="truncated.tar.xz: corrupt or truncated archive"):
        dict(iter_files(truncated, ict.wanted_member))
    env = {"UVAPM_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "assets", "install", "ict", "--from", str(truncated)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "corrupt or truncated archive" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((tmp_path / "home").rglob("*.npz"))


def test_modified_files_fail_the_checksum(ict_archive, tmp_path):
    # Unpack a folder, alter one identity mesh, install from the folder.
    folder = tmp_path / "FaceXModel"
    folder.mkdir()
    with tarfile.open(ict_archive, "r:xz") as tar:
        for member in tar:
            key = ict.wanted_member(member.name)
            if key:
                (folder / key).write_bytes(tar.extractfile(member).read())
    lines = (folder / "identity007.obj").read_bytes().split(b"\n")
    first_vertex = next(i for i, line in enumerate(lines) if line.startswith(b"v "))
    lines[first_vertex] = b"v 0.5 0.5 0.5"
    (folder / "identity007.obj").write_bytes(b"\n".join(lines))
    env = {"UVAPM_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "assets", "install", "ict", "--from", str(folder)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "do not match the expected release" in proc.stderr


def test_offline_install_without_source_explains_and_exits_2(tmp_path):
    env = {"UVAPM_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [sys.executable, "-m", "assets", "install", "ict", "--from", "http://127.0.0.1:9/ict.zip"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "could not download" in proc.stderr and "--from PATH" in proc.stderr


def test_list_and_check_report_models_and_checkpoints(ict_npz, tmp_path):
    home = ict_npz.parent.parent
    if ict_npz.parent.name != "face_models":  # converted for this session: lay out a home
        (tmp_path / "face_models").mkdir()
        (tmp_path / "face_models" / "ict.npz").symlink_to(ict_npz)
        home = tmp_path
    env = {"UVAPM_HOME": str(home), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "assets", "check", "--checkpoints_dir", str(tmp_path)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "V=9409 face vertices" in proc.stdout and "100 identity and 53 expression modes, 68 landmarks" in proc.stdout
    assert "[missing] parsing_model/79999_iter.pth" in proc.stdout
    assert "hifi3dpp  not installed" in proc.stdout


def test_xz_error_is_not_silently_swallowed(tmp_path):
    bad = tmp_path / "bad.tar.xz"
    bad.write_bytes(lzma.compress(b"not a tar file at all" * 100))
    with pytest.raises(FileFormatError, match="corrupt or truncated archive"):
        dict(iter_files(bad, ict.wanted_member))
