"""Lazy re-exports for package ``__init__`` modules.

A package that hosts a command (``python -m models.uv_albedo_model``) runs
its ``__init__`` before the command's ``--help``; re-exporting torch code
there eagerly would make every ``--help`` pay for importing torch. Instead::

    __getattr__, __dir__ = lazy_exports(__name__, {"UVAlbedoModel": ".model", ...})

imports ``.model`` on the first access of ``package.UVAlbedoModel``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["lazy_exports"]


def lazy_exports(package: str, table: dict[str, str]) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package`` that resolve ``name`` from the submodule ``table[name]``."""

    def __getattr__(name: str):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(table[name], package), name)

    def __dir__() -> list[str]:
        return sorted(table)

    return __getattr__, __dir__
