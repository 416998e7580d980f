"""Points fixed on a face model's surface: three vertices and barycentric weights each.

A landmark that is not a vertex of the mesh (a FaceMesh point registered to
the ICT surface, :mod:`scripts.register_facemesh`) is stored as the corners
of the triangle it lies in and its barycentric coordinates there; a vertex
landmark is the same with weights (1, 0, 0). Such points move with the shape
exactly as the surface does, so a landmark fit's Jacobian stays linear in the
model's bases.

File (``.npz``, loaded with ``allow_pickle=False``):

===================  ===========  =====================================================
key                  shape        meaning
===================  ===========  =====================================================
``vertex_index``     (L, 3) int   the triangle's corners (vertex indices of the face model)
``barycentric``      (L, 3) f32   weights of the corners, non-negative, summing to 1
``trust``            (L,) f32     relative weight of each point in a fit (0: not used)
``num_vertices``     ()           the face model's vertex count (checked on load)
``face_model``       () str       the face model's name
``source``           () str       what the points are (``facemesh-478``)
===================  ===========  =====================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from utils.atomic import save_npz
from utils.errors import FileFormatError
from utils.safe_load import load_npz

__all__ = ["SurfacePoints", "load_surface_points", "save_surface_points"]


@dataclass
class SurfacePoints:
    """L points on a mesh surface.

    Attributes:
        vertex_index: (L, 3) long, the corners of each point's triangle.
        barycentric: (L, 3) float32 weights of the corners.
        trust: (L,) float32 relative weight in a fit (0 for points not to use).
        face_model: name of the face model the indices refer to.
        source: what the points are.
    """

    vertex_index: torch.Tensor
    barycentric: torch.Tensor
    trust: torch.Tensor
    face_model: str = ""
    source: str = ""

    def __len__(self) -> int:
        return self.vertex_index.shape[0]

    @classmethod
    def from_vertices(cls, indices: torch.Tensor, face_model: str = "", source: str = "") -> SurfacePoints:
        """Points at vertices ``indices`` (L,)."""
        indices = torch.as_tensor(indices, dtype=torch.long)
        weights = torch.zeros(len(indices), 3)
        weights[:, 0] = 1.0
        return cls(indices[:, None].expand(-1, 3).clone(), weights, torch.ones(len(indices)), face_model, source)

    def to(self, device) -> SurfacePoints:
        return SurfacePoints(self.vertex_index.to(device), self.barycentric.to(device), self.trust.to(device),
                             self.face_model, self.source)

    def locate(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, C) per-vertex values (positions, normals) -> (B, L, C) at the points."""
        return (vertices[:, self.vertex_index] * self.barycentric[None, :, :, None]).sum(2)


def save_surface_points(path: str | os.PathLike, points: SurfacePoints, num_vertices: int) -> None:
    """Write ``points`` atomically (see the module docstring)."""
    save_npz(path, {
        "vertex_index": points.vertex_index.cpu().numpy().astype(np.int64),
        "barycentric": points.barycentric.cpu().numpy().astype(np.float32),
        "trust": points.trust.cpu().numpy().astype(np.float32),
        "num_vertices": np.array(num_vertices),
        "face_model": np.array(points.face_model),
        "source": np.array(points.source),
    })


def load_surface_points(path: str | os.PathLike, num_vertices: int | None = None) -> SurfacePoints:
    """Read and check a surface-points file.

    Args:
        num_vertices: the face model's vertex count the file must match (None: not checked).

    Raises:
        FileFormatError: unreadable, missing keys, wrong shapes, weights out of range, or another face model.
    """
    data = load_npz(path)
    missing = [k for k in ("vertex_index", "barycentric", "trust", "num_vertices", "face_model", "source")
               if k not in data]
    if missing:
        raise FileFormatError(path, f"not a surface-points file: missing keys {missing}")
    index, bary, trust = data["vertex_index"], data["barycentric"], data["trust"]
    L = index.shape[0] if index.ndim == 2 else -1
    if index.shape != (L, 3) or bary.shape != (L, 3) or trust.shape != (L,) or L < 1:
        raise FileFormatError(path, f"vertex_index {index.shape}, barycentric {bary.shape} and trust {trust.shape} "
                                    "must be (L, 3), (L, 3) and (L,)")
    if not np.issubdtype(index.dtype, np.integer) or not (np.isfinite(bary).all() and np.isfinite(trust).all()):
        raise FileFormatError(path, "vertex_index must be integers and the weights finite")
    if (bary < -1e-6).any() or np.abs(bary.sum(1) - 1).max() > 1e-4 or (trust < 0).any():
        raise FileFormatError(path, "barycentric weights must be non-negative and sum to 1, trust non-negative")
    stored = int(data["num_vertices"])
    if num_vertices is not None and stored != num_vertices:
        raise FileFormatError(path, f"made for a face model of {stored} vertices, this one has {num_vertices}")
    if index.min() < 0 or index.max() >= stored:
        raise FileFormatError(path, f"vertex indices outside [0, {stored})")
    return SurfacePoints(torch.from_numpy(index.astype(np.int64)), torch.from_numpy(bary.astype(np.float32)),
                         torch.from_numpy(trust.astype(np.float32)), str(data["face_model"]), str(data["source"]))


def closest_points_on_triangles(points: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray
                                ) -> tuple[np.ndarray, np.ndarray]:
    """Closest point of each triangle (a, b, c) to each point, and its barycentric coordinates.

    The region test of Ericson, *Real-Time Collision Detection*, 5.1.5, vectorised.

    Args:
        points, a, b, c: (N, 3).

    Returns:
        (N, 3) closest points and (N, 3) barycentric weights of (a, b, c).
    """
    ab, ac, ap = b - a, c - a, points - a
    d1, d2 = (ab * ap).sum(1), (ac * ap).sum(1)
    bp = points - b
    d3, d4 = (ab * bp).sum(1), (ac * bp).sum(1)
    cp = points - c
    d5, d6 = (ab * cp).sum(1), (ac * cp).sum(1)
    va, vb, vc = d3 * d6 - d5 * d4, d5 * d2 - d1 * d6, d1 * d4 - d3 * d2
    denom = va + vb + vc
    safe = lambda x: np.where(np.abs(x) > 1e-20, x, 1e-20)  # noqa: E731
    # inside the face region
    v, w = vb / safe(denom), vc / safe(denom)
    bary = np.stack([1 - v - w, v, w], 1)
    corners = [((d1 <= 0) & (d2 <= 0), (1.0, 0.0, 0.0)),  # nearest to vertex a
               ((d3 >= 0) & (d4 <= d3), (0.0, 1.0, 0.0)),  # vertex b
               ((d6 >= 0) & (d5 <= d6), (0.0, 0.0, 1.0))]  # vertex c
    t_ab = d1 / safe(d1 - d3)
    t_ac = d2 / safe(d2 - d6)
    t_bc = (d4 - d3) / safe((d4 - d3) + (d5 - d6))
    edge_ab = (vc <= 0) & (d1 >= 0) & (d3 <= 0)
    edge_ac = (vb <= 0) & (d2 >= 0) & (d6 <= 0)
    edge_bc = (va <= 0) & ((d4 - d3) >= 0) & ((d5 - d6) >= 0)
    bary = np.where(edge_bc[:, None], np.stack([np.zeros_like(t_bc), 1 - t_bc, t_bc], 1), bary)
    bary = np.where(edge_ac[:, None], np.stack([1 - t_ac, np.zeros_like(t_ac), t_ac], 1), bary)
    bary = np.where(edge_ab[:, None], np.stack([1 - t_ab, t_ab, np.zeros_like(t_ab)], 1), bary)
    for region, weights in corners:
        bary = np.where(region[:, None], np.array(weights)[None], bary)
    closest = bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c
    return closest, bary


def project_to_surface(points: np.ndarray, vertices: np.ndarray, faces: np.ndarray, neighbours: int = 8
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The closest surface point of a triangle mesh to each point.

    Searches the triangles around each point's ``neighbours`` nearest vertices.

    Args:
        points: (N, 3).
        vertices: (V, 3); faces: (F, 3) vertex indices.

    Returns:
        Triangle corners (N, 3) vertex indices, barycentric weights (N, 3) and distances (N,).
    """
    from scipy.spatial import cKDTree

    used = np.unique(faces)
    tree = cKDTree(vertices[used])
    _, nearest = tree.query(points, k=min(neighbours, len(used)))
    nearest = used[np.atleast_2d(nearest).reshape(len(points), -1)]
    incident: dict[int, list[int]] = {}
    for f, corners in enumerate(faces):
        for v in corners:
            incident.setdefault(int(v), []).append(f)
    best_faces = np.zeros(len(points), np.int64)
    best_bary = np.zeros((len(points), 3))
    best_dist = np.full(len(points), np.inf)
    for i, point in enumerate(points):
        candidates = np.unique(np.concatenate([incident[int(v)] for v in nearest[i]]))
        tri = vertices[faces[candidates]]
        closest, bary = closest_points_on_triangles(np.repeat(point[None], len(candidates), 0), tri[:, 0],
                                                     tri[:, 1], tri[:, 2])
        dist = np.linalg.norm(closest - point, axis=1)
        k = int(dist.argmin())
        best_faces[i], best_bary[i], best_dist[i] = candidates[k], bary[k], dist[k]
    return faces[best_faces], best_bary, best_dist
