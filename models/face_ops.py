"""Pure geometric functions of the face model (no state).

Conventions (see :mod:`models`): model space is x right, y up, z toward the
viewer; rotations are (B, 3, 3) matrices acting on column vectors.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "blend_shapes",
    "euler_angles_to_matrix",
    "matrix_to_euler_angles",
    "apply_rigid",
    "face_normals",
    "vertex_normals",
]


def blend_shapes(coeffs: torch.Tensor, basis: torch.Tensor) -> torch.Tensor:
    """Linear combination of modes.

    Args:
        coeffs: (B, K).
        basis: (V, 3, K).

    Returns:
        (B, V, 3) offsets, ``sum_k coeffs[b, k] * basis[:, :, k]``.
    """
    # (B, K) x (V, 3, K) -> (B, V, 3)
    return torch.einsum("bk,vck->bvc", coeffs, basis)


def euler_angles_to_matrix(angles: torch.Tensor) -> torch.Tensor:
    """Rotation R = Rz(z) Ry(y) Rx(x) from angles (x, y, z) in radians.

    This is the convention of the Deep3D/FFHQ-UV coefficient vector (x
    applied first, column vectors).

    Args:
        angles: (B, 3) as (pitch x, yaw y, roll z).

    Returns:
        (B, 3, 3).
    """
    x, y, z = angles.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rx = torch.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).view(-1, 3, 3)
    ry = torch.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).view(-1, 3, 3)
    rz = torch.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).view(-1, 3, 3)
    return rz @ ry @ rx


def matrix_to_euler_angles(matrix: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`euler_angles_to_matrix` for |y| < pi/2.

    Args:
        matrix: (B, 3, 3).

    Returns:
        (B, 3) angles (x, y, z).
    """
    y = torch.asin((-matrix[:, 2, 0]).clamp(-1.0, 1.0))
    x = torch.atan2(matrix[:, 2, 1], matrix[:, 2, 2])
    z = torch.atan2(matrix[:, 1, 0], matrix[:, 0, 0])
    return torch.stack([x, y, z], -1)


def apply_rigid(points: torch.Tensor, rotation: torch.Tensor, translation: torch.Tensor) -> torch.Tensor:
    """``R p + t`` for every point.

    Args:
        points: (B, N, 3).
        rotation: (B, 3, 3).
        translation: (B, 3).

    Returns:
        (B, N, 3).
    """
    return points @ rotation.transpose(1, 2) + translation[:, None, :]


def face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unnormalised face normals (area-weighted), counter-clockwise front.

    Args:
        vertices: (B, V, 3).
        faces: (F, 3) long.

    Returns:
        (B, F, 3).
    """
    v0, v1, v2 = (vertices[:, faces[:, i]] for i in range(3))
    return torch.cross(v1 - v0, v2 - v0, dim=-1)


def vertex_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Unit vertex normals: the area-weighted sum of adjacent face normals.

    Args:
        vertices: (B, V, 3).
        faces: (F, 3) long.

    Returns:
        (B, V, 3); vertices in no face get a zero normal.
    """
    fn = face_normals(vertices, faces)
    normals = torch.zeros_like(vertices)
    for i in range(3):
        normals = normals.index_add(1, faces[:, i], fn)
    return F.normalize(normals, dim=-1, eps=1e-12)
