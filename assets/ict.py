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

* The inner parts (README table): mouth socket (polygons 11144..13225), eye
  sockets (13226..14033), gums and tongue (14034..17005), teeth
  (17006..21495), the sclera shells (left 21496..22295, right 23094..23893:
  the outer surface of each eyeball, cornea included, in front of the iris
  meshes), then the iris meshes, lacrimal fluid, eye blends, occlusion meshes
  and eyelashes (transparent layers and shader effects of Unreal's digital
  humans).

We keep vertices 0..11247 (face + head/neck) as the model's vertices: the
face region is used for fitting and textures, the head/neck for display. The
mouth and eye sockets, gums and tongue, teeth and sclera shells are the
model's display parts (``part_*``, vertices after 11247, with their identity
and expression modes: the jaw opens the teeth; ICT's eyeLook shapes move the
lids only, the eyeballs look straight ahead). The iris meshes are left out: the sclera shell covers them, so the
iris is painted on its front (:mod:`models.part_texture`). Each part's UVs are
its own square: the sockets', gums' and teeth's source UVs scaled into it,
the eyeballs' an orthographic projection along each eye's axis (centre to
cornea apex), so that a round iris painted in the texture is round on the
eye.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np

from models.face_model_format import FaceModelData
from models.part_texture import IRIS_RADIUS_M, IRIS_UV_RADIUS
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
METRES_PER_UNIT = 0.01
#: The display parts: (name, ((first polygon, last polygon + 1), ...)).
PARTS = (
    ("mouth_socket", ((11144, 13226),)),
    ("eye_sockets", ((13226, 14034),)),
    ("gums_tongue", ((14034, 17006),)),
    ("teeth", ((17006, 21496),)),
    ("eyeballs", ((21496, 22296), (23094, 23894))),
)
#: Margin of each part's UVs inside its square.
PART_UV_MARGIN = 0.02


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
    """(26719, 3, K) each named mesh minus the neutral mesh."""
    modes = np.empty((len(neutral), 3, len(names)), np.float32)
    for k, name in enumerate(names):
        verts = read_obj_vertices(files[name], f"{source}:FaceXModel/{name}")
        if verts.shape[0] != len(neutral):
            raise FileFormatError(source, f"FaceXModel/{name} has {verts.shape[0]} vertices, expected 26719")
        modes[:, :, k] = verts - neutral
    return modes


def _scaled_uvs(uvs: np.ndarray) -> np.ndarray:
    """(T, 2) UVs scaled into [m, 1 - m]^2 (their aspect kept), m = :data:`PART_UV_MARGIN`."""
    low, high = uvs.min(0), uvs.max(0)
    scale = (1 - 2 * PART_UV_MARGIN) / max(float((high - low).max()), 1e-9)
    return PART_UV_MARGIN + (uvs - low) * scale + ((1 - 2 * PART_UV_MARGIN) - (high - low) * scale) / 2


def _eyeball_uvs(points: np.ndarray) -> np.ndarray:
    """(N, 2) one sclera shell's orthographic projection along its axis (the centroid to the front-most
    vertex, the cornea's apex) into [0, 1]^2: the axis at the centre, a human iris's radius
    (:data:`~models.part_texture.IRIS_RADIUS_M`) at :data:`~models.part_texture.IRIS_UV_RADIUS`, what lies
    further out (the sides and back of the eyeball, all sclera) clamped to the margin; x (the model's left)
    to u, y (up) to v."""
    centre = points.mean(0)
    axis = points[np.argmax(points[:, 2])] - centre
    axis /= np.linalg.norm(axis)
    across = np.cross([0.0, 1.0, 0.0], axis)
    across /= np.linalg.norm(across)
    up = np.cross(axis, across)
    offsets = points - centre
    planar = np.stack([offsets @ across, offsets @ up], 1) * (IRIS_UV_RADIUS / (IRIS_RADIUS_M / METRES_PER_UNIT))
    radius = np.linalg.norm(planar, axis=1, keepdims=True)
    return 0.5 + planar * np.minimum(1.0, (0.5 - PART_UV_MARGIN) / np.maximum(radius, 1e-9))


def _parts(mesh, source) -> dict[str, np.ndarray]:
    """The display parts' triangles, UVs and labels (see the module docstring), vertices after the kept
    ones renumbered from :data:`NUM_KEPT_VERTICES` in source order. Returns the ``part_*`` arrays and
    ``vertices`` (Vp,), the source index of each part vertex."""
    faces, faces_uv, uvs, labels = [], [], [], []
    for label, (name, ranges) in enumerate(PARTS):
        for first, end in ranges:
            tris, _, _ = triangulate(mesh.polygons[first:end])
            used, local = np.unique(tris, return_inverse=True)
            local = local.reshape(-1)
            if name == "eyeballs":
                part_uvs = _eyeball_uvs(mesh.vertices[used].astype(np.float64))
            else:
                tris_uv = triangulate(mesh.polygons[first:end], mesh.polygon_uvs[first:end])[1]
                if (tris_uv < 0).any():
                    raise FileFormatError(source, f"generic_neutral_mesh.obj: the {name} has faces without UVs")
                # one UV per vertex of the part (the source's seams are not needed in a flat-coloured part)
                per_vertex = np.zeros((len(used), 2))
                per_vertex[local] = mesh.uvs[tris_uv.reshape(-1)]
                part_uvs = _scaled_uvs(per_vertex)
            faces.append(used[local.reshape(-1, 3)])
            faces_uv.append(local.reshape(-1, 3) + sum(len(u) for u in uvs))
            uvs.append(part_uvs)
            labels.append(np.full(len(tris), label))
    faces = np.concatenate(faces)
    extra = np.unique(faces[faces >= NUM_KEPT_VERTICES])
    renumber = np.arange(len(mesh.vertices))
    renumber[extra] = NUM_KEPT_VERTICES + np.arange(len(extra))
    return {"part_faces": renumber[faces].astype(np.int64), "part_faces_uv": np.concatenate(faces_uv).astype(np.int64),
            "part_uvs": np.concatenate(uvs).astype(np.float32), "part_labels": np.concatenate(labels).astype(np.int64),
            "part_names": np.array([name for name, _ in PARTS], dtype=str), "vertices": extra}


def convert(files: dict[str, bytes], source) -> FaceModelData:
    """Build the canonical ICT face model from the FaceXModel files."""
    indices = json.loads(files["vertex_indices.json"])
    mesh = read_obj(files["generic_neutral_mesh.obj"], f"{source}:FaceXModel/generic_neutral_mesh.obj")
    if mesh.vertices.shape[0] != 26719 or len(mesh.polygons) < NUM_HEAD_POLYGONS:
        raise FileFormatError(source, "generic_neutral_mesh.obj does not have the ICT-FaceKit topology")
    neutral = mesh.vertices[:NUM_KEPT_VERTICES]
    parts = _parts(mesh, source)
    extra = parts.pop("vertices")

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
    id_modes = _modes(files, identity_names, mesh.vertices, source)
    exp_modes = _modes(files, [f"{e}.obj" for e in expression_names], mesh.vertices, source)
    return FaceModelData(
        name="ict",
        units="cm",
        metres_per_unit=METRES_PER_UNIT,
        mean_shape=neutral.astype(np.float32),
        id_basis=id_modes[:NUM_KEPT_VERTICES],
        exp_basis=exp_modes[:NUM_KEPT_VERTICES],
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
        part_shape=mesh.vertices[extra].astype(np.float32),
        part_id_basis=id_modes[extra],
        part_exp_basis=exp_modes[extra],
        **parts,
    )
