"""Reading asset files from an archive (``.tar.*``, ``.zip``) or a folder.

Members are read into memory one by one and matched by their path suffix, so
an archive of the whole upstream repository works as well as one holding only
the model folder. Nothing is extracted to disk, which makes installation
atomic: the converted model is written only after every file was read and
verified.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

from utils.errors import FileFormatError

__all__ = ["iter_files", "content_digest"]


def iter_files(source: str | os.PathLike, wanted: Callable[[str], str | None]) -> Iterator[tuple[str, bytes]]:
    """Yield ``(key, data)`` for every file of ``source`` that ``wanted`` accepts.

    Args:
        source: an archive file or a folder.
        wanted: maps a member path (``/``-separated) to a key, or to ``None``
            to skip the member.
    """
    source = Path(source)
    if source.is_dir():
        # Paths include the folder's own name, so both ``FaceXModel/`` and its
        # parent folder can be given.
        for path in sorted(source.rglob("*")):
            if path.is_file():
                key = wanted(path.relative_to(source.parent).as_posix())
                if key is not None:
                    yield key, path.read_bytes()
        return
    if not source.exists():
        raise FileFormatError(source, "not found")
    try:
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                for info in archive.infolist():
                    key = None if info.is_dir() else wanted(info.filename)
                    if key is not None:
                        yield key, archive.read(info)
            return
        with tarfile.open(source, "r:*") as archive:
            for member in archive:
                key = wanted(member.name) if member.isfile() else None
                if key is not None:
                    yield key, archive.extractfile(member).read()
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
        # lzma/zlib errors derive from these; a truncated archive ends here.
        raise FileFormatError(source, f"corrupt or truncated archive ({type(err).__name__}: {err})") from None


def content_digest(files: dict[str, bytes]) -> str:
    """sha256 over the sorted ``(key, sha256(data))`` pairs of ``files``."""
    digest = hashlib.sha256()
    for key in sorted(files):
        digest.update(key.encode())
        digest.update(hashlib.sha256(files[key]).digest())
    return digest.hexdigest()
