"""Asset manager: face models in ``$UVAPM_HOME`` and the official checkpoints.

Face models are converted once into the canonical format
(:mod:`models.face_model_format`) and stored as
``$UVAPM_HOME/face_models/<name>.npz`` (default home ``~/.cache/uvapm``).
Command line: ``python -m assets {install,list,check}``.
"""

from __future__ import annotations

import os
from pathlib import Path

from models.face_model_format import FaceModelData, load_face_model
from utils.errors import MissingAssetError

__all__ = ["FACE_MODELS", "uvapm_home", "face_model_path", "installed_face_models", "load_installed_face_model"]

#: Face models the asset manager can install, with the command that installs each.
FACE_MODELS = {
    "ict": "python -m assets install ict [--from ict_facexmodel.tar.xz|ICT-FaceKit.zip|FaceXModel/]",
    "hifi3dpp": "python -m assets install hifi3dpp --from topo_assets/",
    "bfm": "python -m assets install bfm --from BFM_model_front.mat",
}


def uvapm_home() -> Path:
    """``$UVAPM_HOME``, or ``~/.cache/uvapm``."""
    return Path(os.environ.get("UVAPM_HOME") or Path.home() / ".cache" / "uvapm")


def face_model_path(name: str) -> Path:
    return uvapm_home() / "face_models" / f"{name}.npz"


def installed_face_models() -> list[str]:
    folder = uvapm_home() / "face_models"
    return sorted(p.stem for p in folder.glob("*.npz")) if folder.is_dir() else []


def load_installed_face_model(name: str) -> FaceModelData:
    """Load an installed face model, or say how to install it."""
    if name not in FACE_MODELS:
        raise MissingAssetError(f"unknown face model {name!r}; choose one of {sorted(FACE_MODELS)}")
    path = face_model_path(name)
    if not path.is_file():
        raise MissingAssetError(f"face model {name!r} is not installed at {path}; install it with: {FACE_MODELS[name]}")
    return load_face_model(path)
