"""Atomic file output.

Every file the toolkit writes goes through :func:`atomic_path`: the data is
written to a hidden temporary name in the destination folder and renamed over
the final name only once it is complete, so an interrupted run, a full disk or
a crash never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = [
    "atomic_path",
    "write_bytes",
    "write_text",
    "write_json",
    "save_torch",
    "save_npz",
]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On any exception (``KeyboardInterrupt`` included) the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(path: str | os.PathLike, obj) -> None:
    """``torch.save`` to ``path`` atomically.

    Keep ``obj`` to tensors, numbers, strings and plain containers so the file
    loads with ``torch.load(..., weights_only=True)``.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray], compressed: bool = True) -> None:
    """Save a dict of arrays as ``.npz`` atomically (no object arrays)."""
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"{path}: array {key!r} has dtype object, which would need pickle")
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    write_bytes(path, buffer.getvalue())
