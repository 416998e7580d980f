"""FaceModel and the pure face operations."""

from __future__ import annotations

import math

import pytest
import torch

from models.face_ops import euler_angles_to_matrix, matrix_to_euler_angles, vertex_normals


def test_euler_matches_composition_and_round_trips():
    angles = torch.tensor([[0.3, -0.5, 0.2], [-0.1, 0.7, -1.0]])
    R = euler_angles_to_matrix(angles)
    x, y, z = 0.3, -0.5, 0.2
    rx = torch.tensor([[1, 0, 0], [0, math.cos(x), -math.sin(x)], [0, math.sin(x), math.cos(x)]])
    ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rz = torch.tensor([[math.cos(z), -math.sin(z), 0], [math.sin(z), math.cos(z), 0], [0, 0, 1]])
    torch.testing.assert_close(R[0], rz @ ry @ rx)
    torch.testing.assert_close(matrix_to_euler_angles(R), angles)
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-6, rtol=0)


def test_vertex_normals_of_a_tetrahedron_point_outward():
    v = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]]])
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    n = vertex_normals(v, faces)
    centroid = v.mean(1, keepdim=True)
    assert ((n * (v - centroid)).sum(-1) > 0).all()
    torch.testing.assert_close(n.norm(dim=-1), torch.ones(1, 4))


def test_face_model_pose_batching_and_errors(ict_model):
    B = 3
    identity = torch.randn(B, 100)
    expression = torch.rand(B, 53)
    rotation = euler_angles_to_matrix(torch.randn(B, 3) * 0.3)
    translation = torch.randn(B, 3)
    out = ict_model(identity, expression, rotation, translation)
    assert out.vertices.shape == (B, 11248, 3) and out.landmarks.shape == (B, 68, 3)
    # batched equals per item
    for b in range(B):
        single = ict_model(identity[b : b + 1], expression[b : b + 1], rotation[b : b + 1], translation[b : b + 1])
        torch.testing.assert_close(single.vertices[0], out.vertices[b], atol=1e-4, rtol=1e-5)
    # fewer coefficients use the leading modes
    torch.testing.assert_close(
        ict_model.shape(identity[:, :10]), ict_model.shape(torch.cat([identity[:, :10], torch.zeros(B, 90)], 1))
    )
    with pytest.raises(ValueError, match=r"identity: expected \(B, K\) with K <= 100, got \(3, 101\)"):
        ict_model.shape(torch.zeros(3, 101))
    with pytest.raises(ValueError, match="has no per-vertex albedo"):
        ict_model.albedo()


def test_ict_normals_face_the_camera_and_landmarks_are_ibug_ordered(ict_model):
    out = ict_model()
    normals = ict_model.vertex_normals(out.vertices)[0]
    nose_tip = ict_model.landmark_indices[30]
    assert normals[nose_tip, 2] > 0.9
    lmk = out.landmarks[0]
    # iBUG: 36 is the outer corner of the eye on the image's left (x < 0), 45 on the right
    assert lmk[36, 0] < 0 < lmk[45, 0]
    # jaw runs from image left (0) to right (16); chin (8) is the lowest point of the jaw
    assert lmk[0, 0] < lmk[8, 0] < lmk[16, 0] and lmk[8, 1] == lmk[:17, 1].min()
