"""render_3d_face.py on the ICT model: what the views show, and the mean albedo when no map is given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import render_3d_face
from models.uv_albedo_model import UVAlbedoModelData, save_uv_albedo_model
from utils.image_io import write_image


@pytest.fixture
def ict_home(tmp_path, ict_npz, ict_model, monkeypatch):
    """$UVAPM_HOME with the ICT face model installed; returns the face model."""
    (tmp_path / "home" / "face_models").mkdir(parents=True)
    (tmp_path / "home" / "face_models" / "ict.npz").symlink_to(ict_npz)
    monkeypatch.setenv("UVAPM_HOME", str(tmp_path / "home"))
    return ict_model


def _render(out: Path, *extra: str) -> int:
    return render_3d_face.main(["--output_path", str(out), "--resolution", "96", "--light", "frontal", "-q", *extra])


def _rgba(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def _face_pixels(view: np.ndarray) -> np.ndarray:
    """RGB of the opaque pixels of an RGBA view, (N, 3) in [0, 1]."""
    return view[view[..., 3] > 250][:, :3].astype(np.float32) / 255


def test_views_show_the_albedo_from_each_side(tmp_path, ict_home):
    # left half of the UV layout red, right half green: the face's two sides (the layout is left-right symmetric)
    uv = np.zeros((128, 128, 3), np.uint8)
    uv[:, :64] = (200, 40, 40)
    uv[:, 64:] = (40, 200, 40)
    write_image(tmp_path / "uv.png", uv, text={"uv_layout_id": ict_home.uv_layout_id})
    assert _render(tmp_path / "out", "--albedo_map", str(tmp_path / "uv.png"), "--views=-60,0,60") == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["contact_sheet.png", "view_+000.png", "view_+060.png", "view_-060.png"]
    views = {yaw: _rgba(tmp_path / "out" / f"view_{yaw}.png") for yaw in ("-060", "+000", "+060")}
    front = views["+000"]
    assert front[0, 0, 3] == 0 and front[48, 48, 3] == 255  # transparent background, the face in the centre
    # red and green each cover a side of the front view; turning the head shows mostly one of them
    reds = {yaw: (_face_pixels(v)[:, 0] > _face_pixels(v)[:, 1]).mean() for yaw, v in views.items()}
    assert 0.3 < reds["+000"] < 0.7
    assert abs(reds["-060"] - reds["+060"]) > 0.5


def test_without_an_albedo_map_the_mean_of_the_uv_albedo_model_is_rendered(tmp_path, ict_home):
    R, K = 16, 2
    data = UVAlbedoModelData(mean=np.stack([np.full((R, R), v, np.float32) for v in (0.7, 0.5, 0.4)]),
                             basis=np.eye(K, R * R, dtype=np.float32)[None].repeat(3, 0),
                             std=np.full((3, K), 0.1, np.float32), explained_variance_ratio=np.full((3, K), 0.1,
                                                                                                    np.float32),
                             uv_layout_id=ict_home.uv_layout_id, num_maps=10)
    save_uv_albedo_model(tmp_path / "uvapm.npz", data)
    assert _render(tmp_path / "out", "--uvapm", str(tmp_path / "uvapm.npz"), "--views", "0",
                   "--shading", "albedo") == 0
    face = _face_pixels(_rgba(tmp_path / "out" / "view_+000.png"))
    torch.testing.assert_close(torch.from_numpy(np.median(face, 0)), torch.tensor([0.7, 0.5, 0.4]), atol=0.01,
                               rtol=0)


def test_without_an_albedo_map_or_a_model_the_error_names_the_missing_file(tmp_path, ict_home, capsys):
    missing = tmp_path / "nowhere" / "uvapm.npz"
    assert _render(tmp_path / "out", "--uvapm", str(missing)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {missing}: no UV albedo model to take the mean albedo from; pass --albedo_map "
                   "(e.g. uv_albedo.png of a reconstruction) or --uvapm FILE"]


def test_the_eyes_take_the_parts_map_beside_the_albedo_map(tmp_path, ict_home):
    from models.part_texture import EyeColours, PartTexture

    uv = np.full((128, 128, 3), 150, np.uint8)
    text = {"uv_layout_id": ict_home.uv_layout_id}
    for folder in ("fit", "bare"):
        (tmp_path / folder).mkdir()
        write_image(tmp_path / folder / "uv_albedo.png", uv, text=text)
    blue_eyes = EyeColours(sclera=torch.tensor([[0.8, 0.8, 0.8]]), iris=torch.tensor([[0.05, 0.1, 0.9]]))
    parts = PartTexture(ict_home.part_names, 128)(blue_eyes)[0].permute(1, 2, 0).numpy()
    write_image(tmp_path / "fit" / "uv_eyes_mouth.png", parts, text=text)

    def blue_pixels(folder: str) -> int:
        out = tmp_path / f"out_{folder}"
        assert _render(out, "--albedo_map", str(tmp_path / folder / "uv_albedo.png"), "--views=0", "--shading",
                       "albedo", "--resolution", "256") == 0
        rgb = _face_pixels(_rgba(out / "view_+000.png"))
        return int(((rgb[:, 2] > rgb[:, 0] + 0.3) & (rgb[:, 2] > rgb[:, 1] + 0.3)).sum())

    assert blue_pixels("fit") > 20  # the fit's blue irises
    assert blue_pixels("bare") == 0  # no parts map: the default brown irises
