"""Exception types shared across the toolkit.

Errors about a user's file carry the file name and the reason in one line, so
command-line entry points can print ``str(error)`` without a traceback.
"""

from __future__ import annotations

import os

__all__ = ["ToolkitError", "FileFormatError", "MissingAssetError"]


class ToolkitError(Exception):
    """Base class of the errors this toolkit raises on purpose."""


class FileFormatError(ToolkitError, ValueError):
    """A file cannot be used: unreadable, corrupt, or not the expected format."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class MissingAssetError(ToolkitError, FileNotFoundError):
    """A model or checkpoint the requested feature needs is not installed."""
