"""Shared fixtures.

Real data comes from ``../shared`` (read in place, never copied): the
ICT-FaceKit archive and face photos. Tests that need it skip with a message
when it is absent. The ICT model is taken from ``$UVAPM_HOME`` when installed
there (``.ci/run`` installs it), else converted once per session into a
temporary folder.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("UVAPM_SHARED", REPO.parent / "shared"))
ICT_ARCHIVE = SHARED / "assets" / "ict-facekit" / "ict_facexmodel.tar.xz"
FACES_DIR = SHARED / "data" / "faces"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    np.random.seed(0)


@pytest.fixture(scope="session")
def ict_archive() -> Path:
    if not ICT_ARCHIVE.is_file():
        pytest.skip(f"ICT-FaceKit archive not found at {ICT_ARCHIVE}")
    return ICT_ARCHIVE


@pytest.fixture(scope="session")
def ict_npz(tmp_path_factory) -> Path:
    """Path of the canonical ICT model (installed, or converted for this session)."""
    from assets import face_model_path

    installed = face_model_path("ict")
    if installed.is_file():
        return installed
    if not ICT_ARCHIVE.is_file():
        pytest.skip(f"ICT model not installed and archive not found at {ICT_ARCHIVE}")
    from assets import ict
    from assets.sources import iter_files
    from models.face_model_format import save_face_model

    files = ict.used_files(dict(iter_files(ICT_ARCHIVE, ict.wanted_member)), ICT_ARCHIVE)
    path = tmp_path_factory.mktemp("ict") / "ict.npz"
    save_face_model(path, ict.convert(files, ICT_ARCHIVE))
    return path


@pytest.fixture(scope="session")
def ict_model(ict_npz):
    from models import FaceModel

    return FaceModel.from_file(ict_npz)


@pytest.fixture(scope="session")
def faces_dir() -> Path:
    single = FACES_DIR / "single"
    if not single.is_dir():
        pytest.skip(f"shared face photos not found at {single}")
    return FACES_DIR
