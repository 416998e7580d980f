"""The canonical face-model file: one ``.npz`` per model, loaded without pickle.

Every face model (ICT-FaceKit, HiFi3D++, BFM) is converted once by
``python -m assets install ...`` into this format, so the rest of the
toolkit sees a single schema.

========================  ==============  =====================================================
key                       shape / dtype   meaning
========================  ==============  =====================================================
``format_version``        () int          :data:`FORMAT_VERSION`; newer files are refused
``name``                  () str          ``ict``, ``hifi3dpp``, ``bfm``, ...
``units``                 () str          unit of the coordinates, e.g. ``cm``
``metres_per_unit``       () float32      scale to metres (camera distance is chosen from it)
``mean_shape``            (V, 3) float32  mean (neutral) shape, model space, y up, z to the front
``id_basis``              (V, 3, Ki)      identity modes; coefficients have a N(0, 1) prior
``exp_basis``             (V, 3, Ke)      expression modes (ICT: blendshape deltas)
``exp_names``             (Ke,) str       expression names ("" where unnamed)
``exp_bounds``            (2,) float32    lower and upper bound of expression coefficients
``faces``                 (F, 3) int32    triangles of the fitting region (0-based)
``faces_uv``              (F, 3) int32    UV-vertex indices of ``faces`` (seams allowed)
``head_faces``            (Fh, 3) int32   triangles for display (fitting region + head/neck)
``head_faces_uv``         (Fh, 3) int32   UV-vertex indices of ``head_faces``
``uvs``                   (T, 2) float32  UV coordinates, OBJ convention (v up); the texture
                                          tile is [0, 1]^2
``landmark_indices``      (68,) int64     vertex per iBUG-68 landmark (dlib's order)
``face_vertex_mask``      (V,) bool       vertices of the fitting region
``skin_vertex_mask``      (V,) bool       skin vertices (for albedo statistics)
``albedo_mean``           (V, 3) float32  optional per-vertex albedo mean in [0, 1]
``albedo_basis``          (V, 3, Ka)      optional per-vertex albedo modes (same scale)
``uv_layout_id``          () str          hash of ``uvs`` and ``faces_uv`` (see
                                          :func:`uv_layout_id`); texture models store the
                                          id of the layout they were built for
``part_shape``            (Vp, 3) float32 optional display parts (eyeballs, teeth, mouth and
                                          eye sockets): their own vertices' mean shape,
                                          vertices V..V+Vp-1 of the display mesh
``part_id_basis``         (Vp, 3, Ki)     their identity modes (same coefficients)
``part_exp_basis``        (Vp, 3, Ke)     their expression modes
``part_faces``            (Fp, 3) int64   their triangles, indices into the V + Vp display
                                          vertices (sockets share the lips' and lids' vertices)
``part_faces_uv``         (Fp, 3) int64   UV-vertex indices of ``part_faces`` into ``part_uvs``
``part_uvs``              (Tp, 2) float32 each part's UVs in its own [0, 1]^2 square
                                          (:mod:`models.part_texture` places the squares)
``part_labels``           (Fp,) int64     the part of each triangle, an index into ``part_names``
``part_names``            (P,) str        ``eyeballs``, ``teeth``, ``gums_tongue``, ...
========================  ==============  =====================================================

The ``part_*`` keys are given all together or not at all; they do not enter
``uv_layout_id``, so texture models stay valid for a file with or without them.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from utils.atomic import save_npz
from utils.errors import FileFormatError
from utils.safe_load import load_npz

__all__ = ["FORMAT_VERSION", "PART_KEYS", "FaceModelData", "uv_layout_id", "save_face_model", "load_face_model"]

FORMAT_VERSION = 1
#: The optional display-part keys (given together).
PART_KEYS = ("part_shape", "part_id_basis", "part_exp_basis", "part_faces", "part_faces_uv", "part_uvs",
             "part_labels", "part_names")


def uv_layout_id(uvs: np.ndarray, faces_uv: np.ndarray) -> str:
    """A short stable hash of a UV layout (coordinates rounded to 1e-5)."""
    digest = hashlib.sha256()
    digest.update(np.round(np.asarray(uvs, np.float64) * 1e5).astype(np.int64).tobytes())
    digest.update(np.asarray(faces_uv, np.int64).tobytes())
    return digest.hexdigest()[:16]


@dataclass
class FaceModelData:
    """In-memory form of the canonical file (NumPy arrays, see module docstring)."""

    name: str
    units: str
    metres_per_unit: float
    mean_shape: np.ndarray
    id_basis: np.ndarray
    exp_basis: np.ndarray
    exp_names: np.ndarray
    exp_bounds: np.ndarray
    faces: np.ndarray
    faces_uv: np.ndarray
    head_faces: np.ndarray
    head_faces_uv: np.ndarray
    uvs: np.ndarray
    landmark_indices: np.ndarray
    face_vertex_mask: np.ndarray
    skin_vertex_mask: np.ndarray
    albedo_mean: np.ndarray | None = None
    albedo_basis: np.ndarray | None = None
    uv_layout_id: str = ""
    part_shape: np.ndarray | None = None
    part_id_basis: np.ndarray | None = None
    part_exp_basis: np.ndarray | None = None
    part_faces: np.ndarray | None = None
    part_faces_uv: np.ndarray | None = None
    part_uvs: np.ndarray | None = None
    part_labels: np.ndarray | None = None
    part_names: np.ndarray | None = None

    def __post_init__(self):
        if not self.uv_layout_id:
            self.uv_layout_id = uv_layout_id(self.uvs, self.faces_uv)

    @property
    def num_vertices(self) -> int:
        return int(self.mean_shape.shape[0])

    @property
    def num_face_vertices(self) -> int:
        return int(self.face_vertex_mask.sum())

    def validate(self, source: str | os.PathLike = "<face model>") -> None:
        """Raise :class:`FileFormatError` if shapes or indices are inconsistent."""

        def fail(reason: str):
            raise FileFormatError(source, reason)

        V = self.mean_shape.shape[0] if self.mean_shape.ndim == 2 else -1
        if self.mean_shape.shape != (V, 3) or V <= 0:
            fail(f"mean_shape has shape {self.mean_shape.shape}, expected (V, 3)")
        for key in ("id_basis", "exp_basis", "albedo_basis"):
            basis = getattr(self, key)
            if basis is not None and (basis.ndim != 3 or basis.shape[:2] != (V, 3)):
                fail(f"{key} has shape {basis.shape}, expected ({V}, 3, K)")
        if self.albedo_mean is not None and self.albedo_mean.shape != (V, 3):
            fail(f"albedo_mean has shape {self.albedo_mean.shape}, expected ({V}, 3)")
        if (self.albedo_mean is None) != (self.albedo_basis is None):
            fail("albedo_mean and albedo_basis must be given together")
        if self.exp_names.shape != (self.exp_basis.shape[2],):
            fail(f"exp_names has {self.exp_names.shape} entries for {self.exp_basis.shape[2]} expression modes")
        if self.exp_bounds.shape != (2,) or not self.exp_bounds[0] < self.exp_bounds[1]:
            fail(f"exp_bounds must be (lower, upper) with lower < upper, got {self.exp_bounds}")
        T = self.uvs.shape[0]
        if self.uvs.ndim != 2 or self.uvs.shape[1] != 2:
            fail(f"uvs has shape {self.uvs.shape}, expected (T, 2)")
        for key, count in (("faces", V), ("faces_uv", T), ("head_faces", V), ("head_faces_uv", T)):
            tri = getattr(self, key)
            if tri.ndim != 2 or tri.shape[1] != 3:
                fail(f"{key} has shape {tri.shape}, expected (F, 3)")
            if tri.size and (tri.min() < 0 or tri.max() >= count):
                fail(f"{key} indexes outside 0..{count - 1}")
        if self.faces.shape != self.faces_uv.shape or self.head_faces.shape != self.head_faces_uv.shape:
            fail("faces and faces_uv (and head_faces and head_faces_uv) must have the same shape")
        if self.landmark_indices.shape != (68,):
            fail(f"landmark_indices has shape {self.landmark_indices.shape}, expected (68,)")
        if self.landmark_indices.min() < 0 or self.landmark_indices.max() >= V:
            fail("landmark_indices index outside the vertices")
        for key in ("face_vertex_mask", "skin_vertex_mask"):
            if getattr(self, key).shape != (V,):
                fail(f"{key} has shape {getattr(self, key).shape}, expected ({V},)")
        if not np.isfinite(self.mean_shape).all() or not np.isfinite(self.id_basis).all():
            fail("mean_shape or id_basis holds NaN or Inf")
        self._validate_parts(fail)

    def _validate_parts(self, fail) -> None:
        given = [getattr(self, key) is not None for key in PART_KEYS]
        if not any(given):
            return
        if not all(given):
            fail(f"the part keys {', '.join(PART_KEYS)} must be given together")
        V, Vp = self.mean_shape.shape[0], self.part_shape.shape[0] if self.part_shape.ndim == 2 else -1
        if self.part_shape.shape != (Vp, 3) or Vp <= 0:
            fail(f"part_shape has shape {self.part_shape.shape}, expected (Vp, 3)")
        for key, like in (("part_id_basis", self.id_basis), ("part_exp_basis", self.exp_basis)):
            if getattr(self, key).shape != (Vp, 3, like.shape[2]):
                fail(f"{key} has shape {getattr(self, key).shape}, expected ({Vp}, 3, {like.shape[2]})")
        if self.part_uvs.ndim != 2 or self.part_uvs.shape[1] != 2:
            fail(f"part_uvs has shape {self.part_uvs.shape}, expected (Tp, 2)")
        Fp = self.part_faces.shape[0]
        for key, count in (("part_faces", V + Vp), ("part_faces_uv", self.part_uvs.shape[0])):
            tri = getattr(self, key)
            if tri.shape != (Fp, 3):
                fail(f"{key} has shape {tri.shape}, expected ({Fp}, 3)")
            if tri.size and (tri.min() < 0 or tri.max() >= count):
                fail(f"{key} indexes outside 0..{count - 1}")
        if self.part_labels.shape != (Fp,) or (Fp and not 0 <= self.part_labels.min() <= self.part_labels.max()
                                               < len(self.part_names)):
            fail(f"part_labels must be ({Fp},) indices into the {len(self.part_names)} part_names")
        if not np.isfinite(self.part_shape).all() or not np.isfinite(self.part_uvs).all():
            fail("part_shape or part_uvs holds NaN or Inf")


def save_face_model(path: str | os.PathLike, data: FaceModelData) -> None:
    """Validate ``data`` and write it atomically as a canonical ``.npz``."""
    data.validate(path)
    arrays = {"format_version": np.array(FORMAT_VERSION)}
    for field in fields(data):
        value = getattr(data, field.name)
        if value is None:
            continue
        if field.name in ("name", "units", "uv_layout_id"):
            value = np.array(str(value))
        elif field.name == "metres_per_unit":
            value = np.array(value, np.float32)
        elif field.name in ("exp_names", "part_names"):
            value = np.asarray(value, dtype=str)
        arrays[field.name] = value
    save_npz(path, arrays)


_DTYPES = {
    "mean_shape": np.float32, "id_basis": np.float32, "exp_basis": np.float32,
    "exp_bounds": np.float32, "albedo_mean": np.float32, "albedo_basis": np.float32,
    "uvs": np.float32, "faces": np.int64, "faces_uv": np.int64, "head_faces": np.int64,
    "head_faces_uv": np.int64, "landmark_indices": np.int64,
    "face_vertex_mask": bool, "skin_vertex_mask": bool,
    "part_shape": np.float32, "part_id_basis": np.float32, "part_exp_basis": np.float32, "part_faces": np.int64,
    "part_faces_uv": np.int64, "part_uvs": np.float32, "part_labels": np.int64,
}


def load_face_model(path: str | os.PathLike) -> FaceModelData:
    """Load and validate a canonical face-model ``.npz``."""
    path = Path(path)
    required = [f.name for f in fields(FaceModelData) if f.name not in ("albedo_mean", "albedo_basis", *PART_KEYS)]
    arrays = load_npz(path, required=["format_version", *required])
    version = int(arrays.pop("format_version"))
    if version > FORMAT_VERSION:
        raise FileFormatError(
            path, f"format version {version} is newer than this toolkit supports ({FORMAT_VERSION}); update the toolkit"
        )
    kwargs = {}
    for field in fields(FaceModelData):
        if field.name not in arrays:
            continue
        value = arrays[field.name]
        if field.name in ("name", "units", "uv_layout_id"):
            value = str(value)
        elif field.name == "metres_per_unit":
            value = float(value)
        elif field.name in _DTYPES:
            value = value.astype(_DTYPES[field.name], copy=False)
        kwargs[field.name] = value
    data = FaceModelData(**kwargs)
    data.validate(path)
    stored_id = data.uv_layout_id
    if stored_id != uv_layout_id(data.uvs, data.faces_uv):
        raise FileFormatError(path, "uv_layout_id does not match the stored UV layout (file modified?)")
    return data
