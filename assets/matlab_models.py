"""HiFi3D++ (FFHQ-UV ``topo_assets/hifi3dpp_model_info.mat``) and BFM
(Deep3DFaceRecon ``BFM_model_front.mat``) to the canonical face-model format.

Both store geometry interleaved per vertex (``x0 y0 z0 x1 ...``) with bases as
(3N, K) columns and 1-based MATLAB triangle and landmark indices. Albedo is in
0..255 and is divided by 255 here. Key names and shapes follow
``official_formats.md`` §1.1 (HiFi3D++) and the Deep3DFaceRecon release (BFM);
sizes are checked for consistency rather than fixed, so reduced fixtures with
the same schema load too.
"""

from __future__ import annotations

import os

import numpy as np

from models.face_model_format import FaceModelData
from utils.errors import FileFormatError
from utils.safe_load import load_mat

__all__ = ["HIFI3DPP_SCHEMA", "BFM_SCHEMA", "convert_hifi3dpp", "convert_bfm"]

HIFI3DPP_SCHEMA = {
    "meanshape": (1, None),
    "meantex": (1, None),
    "idBase": (None, None),
    "exBase": (None, None),
    "texBase": (None, None),
    "vt_list": (None, 2),
    "tri": (None, 3),
    "tri_vt": (None, 3),
    "head_tri": (None, 3),
    "head_tri_vt": (None, 3),
    "keypoints": None,
    "skinmask": None,
}

BFM_SCHEMA = {
    "meanshape": (1, None),
    "meantex": (1, None),
    "idBase": (None, None),
    "exBase": (None, None),
    "texBase": (None, None),
    "tri": (None, 3),
    "keypoints": None,
    "skinmask": None,
}


def _per_vertex(mat: dict, key: str, num_vertices: int, path) -> np.ndarray:
    """(1, 3N) -> (N, 3) or (3N, K) -> (N, 3, K)."""
    value = mat[key].astype(np.float32)
    if key.startswith("mean"):
        if value.size != 3 * num_vertices:
            raise FileFormatError(path, f"key {key!r} has {value.size} values, expected 3 x {num_vertices}")
        return value.reshape(num_vertices, 3)
    if value.shape[0] != 3 * num_vertices:
        raise FileFormatError(path, f"key {key!r} has shape {value.shape}, expected ({3 * num_vertices}, K)")
    return value.reshape(num_vertices, 3, value.shape[1])


def _indices(mat: dict, key: str, upper: int, path) -> np.ndarray:
    """1-based MATLAB indices -> 0-based int64, range-checked."""
    value = np.asarray(mat[key]).astype(np.int64) - 1
    if value.size == 0 or value.min() < 0 or value.max() >= upper:
        raise FileFormatError(path, f"key {key!r} holds indices outside 1..{upper}")
    return value


def _landmarks(mat: dict, num_vertices: int, path) -> np.ndarray:
    keypoints = _indices(mat, "keypoints", num_vertices, path).reshape(-1)
    if keypoints.shape != (68,):
        raise FileFormatError(path, f"key 'keypoints' has {keypoints.size} entries, expected 68")
    return keypoints


def _vertex_mask(mat: dict, key: str, num_vertices: int, path) -> np.ndarray:
    """A vertex selection stored either as a 0/1 vector of length N or as 1-based indices (inferred)."""
    value = np.asarray(mat[key]).reshape(-1)
    if value.size == num_vertices and set(np.unique(value)).issubset({0, 1}):
        return value.astype(bool)
    mask = np.zeros(num_vertices, bool)
    mask[_indices({key: value}, key, num_vertices, path)] = True
    return mask


def _mask_from_faces(faces: np.ndarray, num_vertices: int) -> np.ndarray:
    mask = np.zeros(num_vertices, bool)
    mask[np.unique(faces)] = True
    return mask


def convert_hifi3dpp(path: str | os.PathLike) -> FaceModelData:
    """Convert ``hifi3dpp_model_info.mat`` (HiFi3D++, 20481 vertices in the release)."""
    mat = load_mat(path, HIFI3DPP_SCHEMA)
    N = mat["meanshape"].size // 3
    uvs = mat["vt_list"].astype(np.float32)
    faces = _indices(mat, "tri", N, path)
    head_faces = _indices(mat, "head_tri", N, path)
    faces_uv = _indices(mat, "tri_vt", len(uvs), path)
    head_faces_uv = _indices(mat, "head_tri_vt", len(uvs), path)
    if faces.shape != faces_uv.shape or head_faces.shape != head_faces_uv.shape:
        raise FileFormatError(path, "tri/tri_vt or head_tri/head_tri_vt have different shapes")
    exp_basis = _per_vertex(mat, "exBase", N, path)
    return FaceModelData(
        name="hifi3dpp",
        units="dm (inferred from the reference camera: distance 10 at focal 1015)",
        metres_per_unit=0.1,
        mean_shape=_per_vertex(mat, "meanshape", N, path),
        id_basis=_per_vertex(mat, "idBase", N, path),
        exp_basis=exp_basis,
        exp_names=np.array([""] * exp_basis.shape[2], dtype=str),
        # Deep3D predicts expressions through a ReLU.
        exp_bounds=np.array([0.0, np.inf], np.float32),
        faces=faces,
        faces_uv=faces_uv,
        head_faces=head_faces,
        head_faces_uv=head_faces_uv,
        uvs=uvs,
        landmark_indices=_landmarks(mat, N, path),
        face_vertex_mask=_mask_from_faces(faces, N),
        skin_vertex_mask=_vertex_mask(mat, "skinmask", N, path),
        albedo_mean=_per_vertex(mat, "meantex", N, path) / 255.0,
        albedo_basis=_per_vertex(mat, "texBase", N, path) / 255.0,
    )


def _planar_uvs(mean_shape: np.ndarray) -> np.ndarray:
    """UVs for a front-facing mesh: orthographic projection onto the x-y plane,
    scaled uniformly into [0.02, 0.98]^2 (BFM has no UV layout of its own)."""
    xy = mean_shape[:, :2].astype(np.float64)
    lo, hi = xy.min(0), xy.max(0)
    scale = 0.96 / (hi - lo).max()
    centre = (lo + hi) / 2
    return ((xy - centre) * scale + 0.5).astype(np.float32)


def convert_bfm(path: str | os.PathLike) -> FaceModelData:
    """Convert Deep3DFaceRecon's ``BFM_model_front.mat`` (35709 vertices in the release).

    BFM has no UV layout: texture coordinates are an orthographic projection
    of the mean shape, so UV maps for BFM are frontal face images.
    """
    mat = load_mat(path, BFM_SCHEMA)
    N = mat["meanshape"].size // 3
    mean_shape = _per_vertex(mat, "meanshape", N, path)
    faces = _indices(mat, "tri", N, path)
    exp_basis = _per_vertex(mat, "exBase", N, path)
    return FaceModelData(
        name="bfm",
        units="dm (Deep3DFaceRecon scaling)",
        metres_per_unit=0.1,
        mean_shape=mean_shape,
        id_basis=_per_vertex(mat, "idBase", N, path),
        exp_basis=exp_basis,
        exp_names=np.array([""] * exp_basis.shape[2], dtype=str),
        exp_bounds=np.array([-np.inf, np.inf], np.float32),
        faces=faces,
        faces_uv=faces.copy(),
        head_faces=faces.copy(),
        head_faces_uv=faces.copy(),
        uvs=_planar_uvs(mean_shape),
        landmark_indices=_landmarks(mat, N, path),
        face_vertex_mask=np.ones(N, bool),
        skin_vertex_mask=_vertex_mask(mat, "skinmask", N, path),
        albedo_mean=_per_vertex(mat, "meantex", N, path) / 255.0,
        albedo_basis=_per_vertex(mat, "texBase", N, path) / 255.0,
    )
