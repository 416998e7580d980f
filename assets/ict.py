"""ICT-FaceKit (MIT) to the canonical face-model format.

Source facts (ICT-FaceKit ``FaceXModel/``, commit da5f95a):

* ``generic_neutral_mesh.obj``: 26,719 vertices, mostly quads. Polygons
  0..9229 (material ``M_Face``, vertices 0..9408) are the face, whose UVs fill
  the [0, 1]^2 tile; polygons 9230..11143 are head and neck (vertices
  9409..11247, UV tile [1, 2] x [0, 1]). Units are centimetres.
* ``identityNNN.obj`` (100) and the 53 expression meshes named in
  ``vertex_indices.json`` share that topology; each mode is the mesh minus the
  neutral mesh. Identity weights have a N(0, 1) prior, expression weights lie
  in [0, 1].
* ``vertex_indices.json`` ``idx_to_landmark_verts``: the 68 landmarks in
  iBUG order.

We keep vertices 0..11247 (face + head/neck): the face region is used for
fitting and textures, the head/neck for display.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from models.face_model_format import FaceModelData
from utils.errors import FileFormatError
from utils.mesh_io import read_obj, read_obj_vertices, triangulate

__all__ = ["ICT_URL", "ICT_ARCHIVE_SHA256", "ICT_CONTENT_SHA256", "wanted_member", "convert"]

ICT_URL = "https://github.com/ICT-VGL/ICT-FaceKit/archive/da5f95a607f5e6b37755b38d3385d7f2853732e5.zip"
#: sha256 of ``ict_facexmodel.tar.xz`` (the FaceXModel folder of commit da5f95a).
ICT_ARCHIVE_SHA256 = "cbcc395a7b9f3732a415f220d7dad7f3b41c51c6d4247d309a9363aa0d81873b"
#: :func:`assets.sources.content_digest` of the files the conversion reads.
ICT_CONTENT_SHA256 = "8949801bc64d28b65a8a1699d43cbb7a56815b4a9ca7b226ce1a0ae9c4d37184"

NUM_FACE_VERTICES = 9409
NUM_KEPT_VERTICES = 11248
NUM_FACE_POLYGONS = 9230
NUM_HEAD_POLYGONS = 11144
NUM_IDENTITIES = 100


def wanted_member(path: str) -> str | None:
    """Key of an archive member the conversion needs (``FaceXModel/<file>``), else None."""
    parts = path.split("/")
    if len(parts) < 2 or parts[-2] != "FaceXModel":
        return None
    name = parts[-1]
    if name.endswith(".obj") or name == "vertex_indices.json":
        return name
    return None


def _required_names(expressions: Iterable[str]) -> list[str]:
    names = ["generic_neutral_mesh.obj", "vertex_indices.json"]
    names += [f"identity{k:03d}.obj" for k in range(NUM_IDENTITIES)]
    names += [f"{e}.obj" for e in expressions]
    return names


def used_files(files: dict[str, bytes], source) -> dict[str, bytes]:
    """The subset of ``files`` the conversion reads; raises if one is missing."""
    if "vertex_indices.json" not in files:
        raise FileFormatError(source, "no FaceXModel/vertex_indices.json found: not an ICT-FaceKit archive or folder")
    try:
        expressions = json.loads(files["vertex_indices.json"])["expressions"]
    except (ValueError, KeyError, TypeError) as err:
        raise FileFormatError(source, f"FaceXModel/vertex_indices.json is not valid ({err})") from None
    names = _required_names(expressions)
    missing = [n for n in names if n not in files]
    if missing:
        raise FileFormatError(source, f"{len(missing)} ICT-FaceKit files missing, e.g. FaceXModel/{missing[0]}")
    return {n: files[n] for n in names}


def _modes(files: dict[str, bytes], names: list[str], neutral: np.ndarray, source) -> np.ndarray:
    modes = np.empty((NUM_KEPT_VERTICES, 3, len(names)), np.float32)
    for k, name in enumerate(names):
        verts = read_obj_vertices(files[name], f"{source}:FaceXModel/{name}")
        if verts.shape[0] < NUM_KEPT_VERTICES:
            raise FileFormatError(source, f"FaceXModel/{name} has {verts.shape[0]} vertices, expected 26719")
        modes[:, :, k] = verts[:NUM_KEPT_VERTICES] - neutral
    return modes


def convert(files: dict[str, bytes], source) -> FaceModelData:
    """Build the canonical ICT face model from the FaceXModel files."""
    indices = json.loads(files["vertex_indices.json"])
    mesh = read_obj(files["generic_neutral_mesh.obj"], f"{source}:FaceXModel/generic_neutral_mesh.obj")
    if mesh.vertices.shape[0] != 26719 or len(mesh.polygons) < NUM_HEAD_POLYGONS:
        raise FileFormatError(source, "generic_neutral_mesh.obj does not have the ICT-FaceKit topology")
    neutral = mesh.vertices[:NUM_KEPT_VERTICES]

    head_faces, head_faces_uv, origin = triangulate(
        mesh.polygons[:NUM_HEAD_POLYGONS], mesh.polygon_uvs[:NUM_HEAD_POLYGONS]
    )
    # Keep only the UV vertices used by the kept polygons, renumbered.
    used_uv, head_faces_uv = np.unique(head_faces_uv, return_inverse=True)
    head_faces_uv = head_faces_uv.reshape(-1, 3)
    is_face = origin < NUM_FACE_POLYGONS

    identity_names = [f"identity{k:03d}.obj" for k in range(NUM_IDENTITIES)]
    expression_names = list(indices["expressions"])
    face_mask = np.zeros(NUM_KEPT_VERTICES, bool)
    face_mask[:NUM_FACE_VERTICES] = True
    return FaceModelData(
        name="ict",
        units="cm",
        metres_per_unit=0.01,
        mean_shape=neutral.astype(np.float32),
        id_basis=_modes(files, identity_names, neutral, source),
        exp_basis=_modes(files, [f"{e}.obj" for e in expression_names], neutral, source),
        exp_names=np.array(expression_names, dtype=str),
        exp_bounds=np.array([0.0, 1.0], np.float32),
        faces=head_faces[is_face].astype(np.int64),
        faces_uv=head_faces_uv[is_face].astype(np.int64),
        head_faces=head_faces.astype(np.int64),
        head_faces_uv=head_faces_uv.astype(np.int64),
        uvs=mesh.uvs[used_uv].astype(np.float32),
        landmark_indices=np.array(indices["idx_to_landmark_verts"], np.int64),
        face_vertex_mask=face_mask,
        skin_vertex_mask=face_mask.copy(),
    )
