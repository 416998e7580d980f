"""Wavefront OBJ/MTL reading and writing.

Reading covers what face-model assets use: ``v``, ``vt``, polygonal ``f``
(``v``, ``v/vt``, ``v/vt/vn``, ``v//vn``) and ``usemtl``. Writing produces
meshes that open textured in Blender and MeshLab: ``mtllib`` + ``usemtl``,
``vt`` in [0, 1] with v up, 1-based indices, and an MTL whose ``map_Kd``
names the texture relative to the OBJ.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_text
from .errors import FileFormatError

__all__ = ["ObjMesh", "read_obj", "read_obj_vertices", "triangulate", "write_obj", "write_mtl"]


@dataclass
class ObjMesh:
    """A polygon mesh as read from an OBJ file.

    Attributes:
        vertices: (V, 3) float32.
        uvs: (T, 2) float32 (empty when the file has no ``vt``).
        polygons: list of (n_i,) int64 arrays of 0-based vertex indices.
        polygon_uvs: list of (n_i,) int64 arrays of 0-based ``vt`` indices (-1 when absent).
        materials: (P,) array of the ``usemtl`` name active for each polygon.
    """

    vertices: np.ndarray
    uvs: np.ndarray
    polygons: list
    polygon_uvs: list
    materials: np.ndarray


def _floats(lines: list[bytes], width: int, source) -> np.ndarray:
    if not lines:
        return np.zeros((0, width), np.float32)
    try:
        rows = [line.split()[1 : 1 + width] for line in lines]
        return np.array(rows, dtype=np.float64).astype(np.float32)
    except ValueError as err:
        raise FileFormatError(source, f"malformed OBJ coordinates ({err})") from None


def read_obj_vertices(data: bytes, source: str | os.PathLike = "<obj>") -> np.ndarray:
    """Only the ``v`` lines of an OBJ given as bytes, as (V, 3) float32."""
    return _floats([line for line in data.splitlines() if line.startswith(b"v ")], 3, source)


def read_obj(path_or_bytes: str | os.PathLike | bytes, source: str | os.PathLike | None = None) -> ObjMesh:
    """Read an OBJ file (or its bytes) into an :class:`ObjMesh`."""
    if isinstance(path_or_bytes, bytes):
        data, source = path_or_bytes, source or "<obj>"
    else:
        source = source or path_or_bytes
        data = Path(path_or_bytes).read_bytes()
    v_lines, vt_lines = [], []
    polygons, polygon_uvs, materials = [], [], []
    material = ""
    for line in data.splitlines():
        if line.startswith(b"v "):
            v_lines.append(line)
        elif line.startswith(b"vt "):
            vt_lines.append(line)
        elif line.startswith(b"f "):
            tokens = line.split()[1:]
            try:
                parts = [token.split(b"/") for token in tokens]
                vids = np.array([int(p[0]) for p in parts], np.int64)
                tids = np.array([int(p[1]) if len(p) > 1 and p[1] else 0 for p in parts], np.int64)
            except ValueError as err:
                raise FileFormatError(source, f"malformed OBJ face line ({err})") from None
            polygons.append(vids)
            polygon_uvs.append(tids)
            materials.append(material)
        elif line.startswith(b"usemtl"):
            material = line.split(maxsplit=1)[1].decode("utf-8", "replace").strip() if len(line.split()) > 1 else ""
    vertices = _floats(v_lines, 3, source)
    uvs = _floats(vt_lines, 2, source)
    # OBJ indices are 1-based; negative ones count back from the end.
    V, T = len(vertices), len(uvs)
    polygons = [np.where(p < 0, p + V, p - 1) for p in polygons]
    polygon_uvs = [np.where(t < 0, t + T, t - 1) for t in polygon_uvs]
    for p in polygons:
        if p.size < 3 or p.min() < 0 or p.max() >= V:
            raise FileFormatError(source, "OBJ face references a missing vertex")
    for t in polygon_uvs:  # -1: no texture coordinate given
        if t.size and (t.min() < -1 or t.max() >= T):
            raise FileFormatError(source, "OBJ face references a missing texture coordinate (vt)")
    return ObjMesh(vertices, uvs, polygons, polygon_uvs, np.array(materials, dtype=str))


def triangulate(polygons: list, polygon_uvs: list | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Fan-triangulate polygons.

    Returns:
        faces (F, 3) int64, faces_uv (F, 3) int64 or None, and the index of the
        source polygon of each triangle (F,).
    """
    faces, faces_uv, origin = [], [], []
    for k, poly in enumerate(polygons):
        for j in range(1, len(poly) - 1):
            faces.append((poly[0], poly[j], poly[j + 1]))
            if polygon_uvs is not None:
                t = polygon_uvs[k]
                faces_uv.append((t[0], t[j], t[j + 1]))
            origin.append(k)
    faces = np.array(faces, np.int64).reshape(-1, 3)
    faces_uv = np.array(faces_uv, np.int64).reshape(-1, 3) if polygon_uvs is not None else None
    return faces, faces_uv, np.array(origin, np.int64)


def write_obj(
    path: str | os.PathLike,
    vertices: np.ndarray,
    faces: np.ndarray,
    uvs: np.ndarray | None = None,
    faces_uv: np.ndarray | None = None,
    mtl_file: str | None = None,
    material: str = "face",
    vertex_colors: np.ndarray | None = None,
    extra_groups: tuple = (),
) -> None:
    """Write a triangle mesh as OBJ, atomically.

    Args:
        vertices: (V, 3).
        faces: (F, 3) 0-based vertex indices.
        uvs: (T, 2) texture coordinates in [0, 1], v up.
        faces_uv: (F, 3) 0-based indices into ``uvs``.
        mtl_file: name of the MTL file (relative to the OBJ) to reference.
        material: material name used with ``usemtl``.
        vertex_colors: (V, 3) in [0, 1], written as ``v x y z r g b``.
        extra_groups: more ``(material, faces, faces_uv)`` groups, written after
            the first with their own ``usemtl`` (needs ``uvs``).
    """
    out = io.StringIO()
    out.write("# written by the UVAPM toolkit\n")
    if mtl_file:
        out.write(f"mtllib {mtl_file}\n")
    vertices = np.asarray(vertices, np.float64)
    if vertex_colors is not None:
        rows = np.hstack([vertices, np.asarray(vertex_colors, np.float64)])
        np.savetxt(out, rows, fmt="v %.6f %.6f %.6f %.4f %.4f %.4f")
    else:
        np.savetxt(out, vertices, fmt="v %.6f %.6f %.6f")
    if uvs is not None and faces_uv is not None:
        np.savetxt(out, np.asarray(uvs, np.float64), fmt="vt %.6f %.6f")
        for name, group_faces, group_uv in ((material, faces, faces_uv), *extra_groups):
            out.write(f"g {name}\n")
            if mtl_file:
                out.write(f"usemtl {name}\n")
            f, ft = np.asarray(group_faces, np.int64) + 1, np.asarray(group_uv, np.int64) + 1
            np.savetxt(out, np.stack([f, ft], axis=2).reshape(-1, 6), fmt="f %d/%d %d/%d %d/%d")
    else:
        if mtl_file:
            out.write(f"usemtl {material}\n")
        np.savetxt(out, np.asarray(faces, np.int64) + 1, fmt="f %d %d %d")
    write_text(path, out.getvalue())


def write_mtl(path: str | os.PathLike, materials: list[tuple[str, str | None, tuple[float, float, float]]]) -> None:
    """Write an MTL file atomically.

    Args:
        materials: (name, texture file relative to the MTL or None, diffuse RGB)
            per material; a textured material's ``Kd`` multiplies its texture.
    """
    blocks = []
    for name, texture, (r, g, b) in materials:
        block = (f"newmtl {name}\nKa 1.000 1.000 1.000\nKd {r:.4f} {g:.4f} {b:.4f}\nKs 0.000 0.000 0.000\n"
                 "d 1.0\nillum 1\n")
        if texture:
            block += f"map_Kd {texture}\n"
        blocks.append(block)
    write_text(path, "\n".join(blocks))
