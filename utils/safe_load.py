"""Loading untrusted files without running code from them.

* ``.npz`` / ``.npy``: ``numpy.load(..., allow_pickle=False)``;
* ``.pt`` / ``.pth``: ``torch.load(..., weights_only=True)``;
* ``.pkl`` (the paper's UV albedo model): a restricted unpickler that accepts
  only NumPy arrays, NumPy scalars/dtypes and plain containers;
* ``.mat``: ``scipy.io.loadmat`` (MATLAB v5 has no code objects), checked
  against an expected schema of keys and shapes.

Every failure becomes a one-line :class:`~utils.errors.FileFormatError`
naming the file and the reason. The bytes are decoded in memory by code that
runs nothing from the file, so any exception while decoding is a property of
the file: each loader turns them all into that error (fuzzing,
``tests/robustness/fuzz_loaders.py``, finds exceptions of many types in the
libraries' parsers: ``IndexError``, ``OverflowError``, ``zlib.error``, ...).
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .errors import FileFormatError

__all__ = ["read_bytes", "load_npz", "load_torch", "load_restricted_pickle", "load_mat"]


def read_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a file, or a one-line :class:`FileFormatError` saying why they cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FileFormatError(path, "broken symbolic link" if path.is_symlink() else "file not found") from None
    except IsADirectoryError:
        raise FileFormatError(path, "is a folder, not a file") from None
    except PermissionError:
        raise FileFormatError(path, "permission denied") from None
    except OSError as err:
        raise FileFormatError(path, f"cannot be read ({err.strerror or err})") from None


def load_npz(path: str | os.PathLike, required: Sequence[str] = ()) -> dict[str, np.ndarray]:
    """Load every array of an ``.npz`` file into memory, refusing pickled objects."""
    path = Path(path)
    data = read_bytes(path)
    if not data.startswith(b"PK"):
        kind = "a pickle" if data[:1] == b"\x80" else "not a NumPy .npz archive"
        raise FileFormatError(path, f"{kind}; refusing to load it as .npz")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise FileFormatError(path, f"holds object arrays that would need pickle ({err})") from None
        raise FileFormatError(path, f"corrupt or truncated .npz ({err})") from None
    except Exception as err:  # noqa: BLE001 - see the module docstring
        raise FileFormatError(path, f"corrupt or truncated .npz ({type(err).__name__}: {err})") from None
    missing = [key for key in required if key not in arrays]
    if missing:
        raise FileFormatError(path, f"missing keys {missing}")
    return arrays


def load_torch(path: str | os.PathLike, map_location="cpu"):
    """``torch.load`` with ``weights_only=True`` and readable errors (``map_location``: a device or its name)."""
    import torch  # here, not at the top: commands import this module before parsing their arguments

    path = Path(path)
    data = read_bytes(path)
    if not data:
        raise FileFormatError(path, "empty file")
    try:
        return torch.load(io.BytesIO(data), map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileFormatError(path, f"refused: not a plain tensor checkpoint ({first})") from None
    except Exception as err:  # noqa: BLE001 - see the module docstring
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise FileFormatError(path, f"corrupt or truncated checkpoint ({first})") from None


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    # protocol-2 pickles store array bytes as latin-1 text re-encoded by this
    ("_codecs", "encode"),
}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, allowing only :data:`_ALLOWED_GLOBALS`.

    Not the C one: it sizes its memo by the largest index a file names, so a
    few bytes (``LONG_BINPUT 700000000``) make it zero gigabytes of memory
    (found by fuzzing). The pure-Python memo is a dict; large arrays load as
    fast (their bytes are one opcode argument).
    """

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_GLOBALS:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"global '{module}.{name}' is not allowed")


def load_restricted_pickle(path: str | os.PathLike):
    """Unpickle ``path`` allowing only NumPy arrays and plain containers.

    Anything else (a class, a function such as ``os.system``) is refused
    before it is constructed, so a malicious file cannot run code.
    """
    path = Path(path)
    data = read_bytes(path)
    try:
        return _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except _RefusedGlobal as err:
        raise FileFormatError(path, f"refused: {err}") from None
    except Exception as err:  # noqa: BLE001 - see the module docstring
        raise FileFormatError(path, f"corrupt or truncated pickle ({type(err).__name__}: {err})") from None


def load_mat(path: str | os.PathLike, schema: Mapping[str, tuple]) -> dict[str, np.ndarray]:
    """Load a MATLAB ``.mat`` file and check it against ``schema``.

    Args:
        schema: key -> expected shape; an entry of a shape may be ``None``
            (any size) and the shape itself may be ``None`` (any shape).
            Keys not in the schema are ignored (not loaded into the result).

    Returns:
        The arrays named in ``schema``, as stored (no reshaping).
    """
    import scipy.io

    path = Path(path)
    data = read_bytes(path)
    try:
        mat = scipy.io.loadmat(io.BytesIO(data), variable_names=list(schema))
    except Exception as err:  # noqa: BLE001 - see the module docstring
        raise FileFormatError(path, f"not a readable MATLAB .mat file ({type(err).__name__}: {err})") from None
    missing = [key for key in schema if key not in mat]
    if missing:
        raise FileFormatError(path, f"missing keys {missing}")
    out = {}
    for key, shape in schema.items():
        value = np.asarray(mat[key])
        if value.dtype == object:
            raise FileFormatError(path, f"key {key!r} is a MATLAB cell/struct, expected a numeric array")
        if shape is not None:
            ok = value.ndim == len(shape) and all(s is None or s == v for s, v in zip(shape, value.shape))
            if not ok:
                want = "(" + ", ".join("*" if s is None else str(s) for s in shape) + ")"
                raise FileFormatError(path, f"key {key!r} has shape {value.shape}, expected {want}")
        out[key] = value
    return out
