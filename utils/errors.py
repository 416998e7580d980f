"""Exception types shared across the toolkit.

Errors about a user's file carry the file name and the reason in one line, so
command-line entry points can print ``str(error)`` without a traceback.
"""

from __future__ import annotations

import os

__all__ = ["ToolkitError", "FileFormatError", "MissingAssetError", "error_reason", "failure_reason", "failures_tsv"]


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


def failure_reason(err: BaseException, path: str | os.PathLike | None = None) -> str:
    """The one-line reason an item of a batch (an image, a face) failed, for the log and ``failures.tsv``.

    A :class:`FileFormatError` about ``path`` itself gives just its reason
    (the table already names the file); other toolkit errors their message;
    a system error while writing says so; anything else is an unexpected
    error, with a pointer to ``--verbose`` for the traceback.
    """
    if isinstance(err, FileFormatError) and path is not None and os.fspath(err.path) == os.fspath(path):
        return err.reason
    if isinstance(err, (ToolkitError, MemoryError)):
        return error_reason(err)
    if isinstance(err, OSError):
        return f"cannot write output ({error_reason(err)})"
    return f"unexpected error ({error_reason(err)}); rerun with --verbose for the traceback"


def failures_tsv(failures: list[tuple[str, str]]) -> str:
    """The text of a ``failures.tsv``: a ``file<TAB>reason`` header, then one line per failure."""
    clean = lambda text: " ".join(str(text).split())  # noqa: E731 - tabs and newlines would break the table
    return "".join(f"{clean(name)}\t{clean(reason)}\n" for name, reason in [("file", "reason"), *failures])
