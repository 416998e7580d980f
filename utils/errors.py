"""Exception types shared across the toolkit.

Errors about a user's file carry the file name and the reason in one line, so
command-line entry points can print ``str(error)`` without a traceback.
"""

from __future__ import annotations

import os

__all__ = ["ToolkitError", "FileFormatError", "MissingAssetError", "error_reason", "failures_tsv"]


class ToolkitError(Exception):
    """Base class of the errors this toolkit raises on purpose."""


class FileFormatError(ToolkitError, ValueError):
    """A file cannot be used: unreadable, corrupt, or not the expected format."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = " ".join(str(reason).split())  # one line, whatever the library that failed said
        super().__init__(f"{self.path}: {self.reason}")


class MissingAssetError(ToolkitError, FileNotFoundError):
    """A model or checkpoint the requested feature needs is not installed."""


def error_reason(err: BaseException) -> str:
    """``err`` as one line for logs and failure lists: the message of a toolkit error, the file and the
    system's reason for an ``OSError`` (``disk full``, ``read-only``), else the exception type and message."""
    if isinstance(err, ToolkitError):
        text = str(err)
    elif isinstance(err, OSError):
        names = [os.fspath(n) if isinstance(n, os.PathLike) else str(n) for n in (err.filename, err.filename2)
                 if n is not None]
        text = f"{' -> '.join(names)}: {err.strerror or err}" if names else str(err.strerror or err)
    elif isinstance(err, MemoryError):
        text = "out of memory"
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    return " ".join(text.split())


def failures_tsv(failures: list[tuple[str, str]]) -> str:
    """The text of a ``failures.tsv``: a ``file<TAB>reason`` header, then one line per failure."""
    clean = lambda text: " ".join(str(text).split())  # noqa: E731 - tabs and newlines would break the table
    return "".join(f"{clean(name)}\t{clean(reason)}\n" for name, reason in [("file", "reason"), *failures])
