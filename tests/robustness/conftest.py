"""Fixtures of the bad-input corpus: a time limit per test, small models and a folder of real photos.

Every case is bounded in time: subprocesses get timeouts, and each test runs
under :func:`faulthandler.dump_traceback_later`, which prints every thread's
stack and ends the session if a test hangs (a pytest-timeout without the
plugin).
"""

from __future__ import annotations

import faulthandler
import sys
from pathlib import Path

import pytest
import torch

from testing.small_models import write_small_models
from tests.robustness.helpers import PHOTOS, TEST_TIME_LIMIT


@pytest.fixture(autouse=True)
def _time_limit():
    faulthandler.dump_traceback_later(TEST_TIME_LIMIT, exit=True, file=sys.stderr)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="session")
def small_models(tmp_path_factory, ict_model) -> Path:
    """Folder with the small UVAPM (``uvapm.npz``) and detail generator (``detail.pt``) of the quick runs."""
    folder = tmp_path_factory.mktemp("small_models")
    write_small_models(folder, ict_model.uv_layout_id)
    return folder


@pytest.fixture()
def photo_dir(tmp_path, faces_dir) -> Path:
    """Two real photos (symbolic links into the shared data)."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in PHOTOS:
        (folder / name).symlink_to(faces_dir / "single" / name)
    return folder


@pytest.fixture()
def one_thread():
    """Small models: one thread avoids oversubscribing the shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
