"""Atomic file output.

Every file the toolkit writes goes through :func:`atomic_path`: the data is
written to a hidden temporary name in the destination folder and renamed over
the final name only once it is complete, so an interrupted run, a full disk or
a crash never leaves a half-written file under the final name.

Temporary names are ``.<name>.<random>.<pid>.part``: the writer's process id
lets the interrupt watchdog (:mod:`utils.interrupts`) and
:func:`remove_stale_temporary_files` tell files of a process that died
(killed, power loss) from files being written right now.
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

_UMASK = os.umask(0)
os.umask(_UMASK)

__all__ = [
    "atomic_path",
    "write_bytes",
    "write_text",
    "write_json",
    "save_torch",
    "save_npz",
    "temporary_owner",
    "remove_stale_temporary_files",
    "process_alive",
]

#: Longest file name (bytes) of common Linux, macOS and Windows file systems.
NAME_MAX = 255
_TEMP_SUFFIX = ".part"


def _temporary_prefix(name: str) -> str:
    """``.<name>.``, with ``name`` shortened so that the whole temporary name fits in :data:`NAME_MAX` bytes."""
    room = NAME_MAX - len(f"..{'x' * 8}.{2**32}{_TEMP_SUFFIX}")  # dots, mkstemp's 8 characters, a pid
    return f".{os.fsdecode(os.fsencode(name)[:room])}."


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it to ``path`` on success.

    On any exception (``KeyboardInterrupt`` included) the temporary file is
    removed and ``path`` is left as it was; an ``OSError`` that names no file
    (a full disk while writing) is raised again naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path.name), suffix=f".{os.getpid()}{_TEMP_SUFFIX}",
                               dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)
        os.replace(tmp_path, path)
    except BaseException as err:
        tmp_path.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.filename is None and err.errno is not None:
            raise OSError(err.errno, err.strerror, str(path)) from err
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically.

    Lone surrogates (bytes of file names that are not UTF-8) are written as
    backslash escapes, so the file is always valid UTF-8.
    """
    write_bytes(path, text.encode("utf-8", errors="backslashreplace"))


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def save_torch(path: str | os.PathLike, obj) -> None:
    """``torch.save`` to ``path`` atomically.

    Keep ``obj`` to tensors, numbers, strings and plain containers so the file
    loads with ``torch.load(..., weights_only=True)``.
    """
    import torch  # here, not at the top: commands import this module before parsing their arguments

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


def temporary_owner(name: str) -> int | None:
    """Process id of the writer of a temporary file name of :func:`atomic_path`, or None if it is not one."""
    if not (name.startswith(".") and name.endswith(_TEMP_SUFFIX)):
        return None
    pid = name[: -len(_TEMP_SUFFIX)].rpartition(".")[2]
    return int(pid) if pid.isdigit() else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a process of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporary_files(folder: str | os.PathLike) -> list[Path]:
    """Remove temporary files under ``folder`` whose writer is no longer running on this machine.

    Call it only while holding the folder's lock (:mod:`utils.locking`): the
    process ids are this machine's, so only the lock rules out a writer on
    another machine sharing the folder.

    Returns:
        The files removed.
    """
    removed = []
    for root, _, files in os.walk(folder):
        for name in files:
            pid = temporary_owner(name)
            if pid is not None and pid != os.getpid() and not process_alive(pid):
                path = Path(root) / name
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed.append(path)
    return removed
