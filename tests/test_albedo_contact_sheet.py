"""``scripts/albedo_contact_sheet.py`` on real photos with the quick stand-in models: a row per fitted face."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from tests.conftest import REPO
from utils.image_io import read_image


def _script():
    spec = importlib.util.spec_from_file_location("albedo_contact_sheet", REPO / "scripts" / "albedo_contact_sheet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sheet_has_a_labelled_row_per_face(tmp_path, faces_dir, ict_model):
    script = _script()
    photos = [faces_dir / "single" / name for name in ("0003_d3dfr.jpg", "0097_deepface.jpg")]
    args = ["--photos", *map(str, photos), "--output_dir", str(tmp_path), "--quick", "-q"]
    assert script.main(args) == 0
    sheet = read_image(tmp_path / "albedo_sheet.png")
    assert sheet.shape == (2 * script.TILE, 6 * script.TILE, 3)
    albedo_tile = sheet[: script.TILE, 2 * script.TILE : 3 * script.TILE].astype(np.float32)
    assert albedo_tile.std() > 5  # a map, not a blank tile
    views = sheet[: script.TILE, 3 * script.TILE :].astype(np.float32)
    assert (np.abs(views - 128) > 10).mean() > 0.1  # the head covers part of the grey background
    # a missing photo is a one-line error naming it, nothing else written
    assert script.main(["--photos", str(tmp_path / "nope.jpg"), "--output_dir", str(tmp_path / "x"), "-q"]) == 2
    assert not (tmp_path / "x").exists()
