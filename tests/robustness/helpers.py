"""Helpers of the bad-input corpus: arguments of small end-to-end runs and checks of what a run left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from testing.small_models import QUICK_OVERRIDES
from tests.conftest import REPO
from utils.image_io import read_image
from utils.safe_load import load_npz, load_torch

__all__ = ["REPO", "TEST_TIME_LIMIT", "PHOTOS", "run_args", "read_failures", "assert_outputs_complete",
           "no_traceback", "random_image"]

#: Seconds a single robustness test may take before the session is stopped with a stack dump.
TEST_TIME_LIMIT = 240
PHOTOS = ("0003_d3dfr.jpg", "0097_deepface.jpg")


def run_args(input_dir: Path, output_dir: Path, models: Path, *extra: str) -> list[str]:
    """Arguments of ``python -m fitting.run`` with the small models and the quick runs' sizes and steps."""
    sets = [a for s in QUICK_OVERRIDES for a in ("--set", s)]
    return ["--input_dir", str(input_dir), "--output_dir", str(output_dir), "--uvapm", str(models / "uvapm.npz"),
            "--detail_model", str(models / "detail.pt"), "-q", *sets, *extra]


def read_failures(path: Path) -> dict[str, str]:
    """failures.tsv as {file: reason}; checks the header and one tab per line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "file\treason"
    assert all(line.count("\t") == 1 for line in lines[1:]), lines
    return dict(line.split("\t") for line in lines[1:])


def assert_outputs_complete(folder: Path) -> int:
    """No temporary file is left and every image, .pt, .npz and .json under ``folder`` loads.

    Returns:
        The number of files loaded.
    """
    parts = [p for p in folder.rglob("*") if p.name.endswith(".part")]
    assert not parts, f"temporary files left behind: {parts}"
    checked = 0
    for path in folder.rglob("*"):
        if not path.is_file() or path.is_symlink():
            continue
        if path.suffix in (".png", ".jpg"):
            assert read_image(path).size > 0
        elif path.suffix == ".pt":
            load_torch(path)
        elif path.suffix == ".npz":
            load_npz(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())
        else:
            continue
        checked += 1
    return checked


def no_traceback(stderr: str) -> None:
    assert "Traceback" not in stderr, stderr[-3000:]


def random_image(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
