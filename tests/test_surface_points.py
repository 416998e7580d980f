"""Points on a mesh surface: closest points, location, the file format."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from models.surface_points import (
    SurfacePoints,
    closest_points_on_triangles,
    load_surface_points,
    project_to_surface,
    save_surface_points,
)
from utils.atomic import save_npz
from utils.errors import FileFormatError


def test_closest_point_on_a_triangle_beats_a_dense_search():
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=(3, 300, 3))
    points = 2 * rng.normal(size=(300, 3))
    closest, bary = closest_points_on_triangles(points, a, b, c)
    assert (bary >= -1e-9).all() and np.allclose(bary.sum(1), 1)
    np.testing.assert_allclose(closest, bary[:, :1] * a + bary[:, 1:2] * b + bary[:, 2:] * c, atol=1e-12)
    grid = np.linspace(0, 1, 61)
    best = np.full(300, np.inf)
    for u in grid:
        for v in grid[grid <= 1 - u + 1e-12]:
            best = np.minimum(best, np.linalg.norm((1 - u - v) * a + u * b + v * c - points, axis=1))
    distance = np.linalg.norm(closest - points, axis=1)
    assert (distance <= best + 1e-9).all()
    # a point above the triangle's interior projects straight down
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    closest, bary = closest_points_on_triangles(np.array([[0.2, 0.3, 5.0]]), *tri[:, None])
    np.testing.assert_allclose(closest, [[0.2, 0.3, 0.0]])
    np.testing.assert_allclose(bary, [[0.5, 0.2, 0.3]])


def test_points_on_the_mesh_are_found_again_and_move_with_it(ict_model):
    rng = np.random.default_rng(1)
    vertices = ict_model.mean_shape.numpy()
    faces = ict_model.faces.numpy()
    chosen = faces[rng.choice(len(faces), 40, replace=False)]
    weights = rng.dirichlet(np.ones(3), 40)
    targets = (vertices[chosen] * weights[..., None]).sum(1)
    corners, bary, distance = project_to_surface(targets + 1e-4, vertices, faces)
    assert distance.max() < 1e-3
    found = (vertices[corners] * bary[..., None]).sum(1)
    np.testing.assert_allclose(found, targets, atol=1e-3)
    points = SurfacePoints(torch.from_numpy(corners), torch.from_numpy(bary).float(), torch.ones(40))
    moved = ict_model.mean_shape[None] * 2.0 + 1.0
    torch.testing.assert_close(points.locate(moved)[0], torch.from_numpy(found).float() * 2 + 1, atol=1e-3,
                               rtol=1e-4)
    vertex_points = SurfacePoints.from_vertices(torch.tensor([5, 7]))
    torch.testing.assert_close(vertex_points.locate(moved), moved[:, [5, 7]])


def test_file_round_trip_and_refusals(tmp_path):
    points = SurfacePoints(torch.tensor([[0, 1, 2], [2, 3, 4]]), torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]),
                           torch.tensor([1.0, 0.0]), "test", "unit")
    save_surface_points(tmp_path / "p.npz", points, num_vertices=10)
    loaded = load_surface_points(tmp_path / "p.npz", num_vertices=10)
    assert torch.equal(loaded.vertex_index, points.vertex_index) and loaded.source == "unit"
    with pytest.raises(FileFormatError, match="made for a face model of 10 vertices, this one has 11"):
        load_surface_points(tmp_path / "p.npz", num_vertices=11)
    base = {"vertex_index": np.array([[0, 1, 2]]), "barycentric": np.array([[0.5, 0.5, 0.0]], np.float32),
            "trust": np.ones(1, np.float32), "num_vertices": np.array(10), "face_model": np.array("t"),
            "source": np.array("s")}
    cases = {
        "weights.npz": ({"barycentric": np.array([[0.5, 0.7, 0.0]], np.float32)}, "sum to 1"),
        "index.npz": ({"vertex_index": np.array([[0, 1, 12]])}, r"vertex indices outside \[0, 10\)"),
        "shape.npz": ({"trust": np.ones(2, np.float32)}, "must be"),
    }
    for name, (change, message) in cases.items():
        save_npz(tmp_path / name, {**base, **change})
        with pytest.raises(FileFormatError, match=message):
            load_surface_points(tmp_path / name)
    save_npz(tmp_path / "missing.npz", {k: v for k, v in base.items() if k != "trust"})
    with pytest.raises(FileFormatError, match=r"missing keys \['trust'\]"):
        load_surface_points(tmp_path / "missing.npz")
