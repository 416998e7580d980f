"""Where the eyes look: each eyeball's turn from FaceMesh's iris centres.

A face model with eyeballs (:meth:`models.face_model.FaceModel.turn_eyeballs`)
looks straight ahead at rest. For each eye the gaze (pitch, yaw) is the turn
about the eyeball's centre that brings the cornea's apex, posed and
projected, onto the photo's iris centre, moved by the fit's own error at
that eye (the fitted eye's centre, iBUG points 36-41 or 42-47, minus the
detected one), so that a fit that misplaces the eye does not turn it. The
two unknowns per eye are solved by a few Gauss-Newton steps (the projection
is nearly linear in them; central-difference Jacobians), with a weak pull to straight ahead, within
:data:`MAX_GAZE`. Faces without FaceMesh points, or whose irises were not
measured (closed or hidden eyes, :func:`fitting.eye_probe.iris_colour`),
look straight ahead.
"""

from __future__ import annotations

import math

import torch

from models.camera import PinholeCamera
from models.face_model import FaceModel
from models.face_ops import apply_rigid

from .eye_probe import IRISES
from .params import FaceParams

__all__ = ["fit_gaze", "MAX_GAZE"]

#: Largest turn of an eye from straight ahead, radians, in pitch and in yaw.
MAX_GAZE = math.radians(35)
#: Weight of the pull to straight ahead, pixels squared per radian squared.
STRAIGHT_PRIOR = 1.0
#: iBUG-68 points of the image-left and image-right eye.
IBUG_EYES = (tuple(range(36, 42)), tuple(range(42, 48)))
GAUSS_NEWTON_STEPS = 6
#: Step of the central differences of the Jacobian, radians.
DIFFERENCE = 1e-3


def _iris_targets(dense: torch.Tensor, detected: torch.Tensor) -> torch.Tensor:
    """(B, 2, 2) FaceMesh's iris centre nearest each iBUG eye (image-left, image-right) (FaceMesh's own order
    follows the image, not the subject)."""
    centres = torch.stack([dense[:, IRISES[0][0], :2], dense[:, IRISES[1][0], :2]], 1)  # (B, 2, 2)
    eyes = torch.stack([detected[:, list(points)].mean(1) for points in IBUG_EYES], 1)  # (B, 2, 2)
    swap = (centres[:, 0] - eyes[:, 0]).norm(dim=-1) > (centres[:, 1] - eyes[:, 0]).norm(dim=-1)
    return torch.where(swap[:, None, None], centres.flip(1), centres)


def fit_gaze(model: FaceModel, params: FaceParams, camera: PinholeCamera, dense_landmarks: torch.Tensor,
             dense_valid: torch.Tensor, iris_observed: torch.Tensor, detected: torch.Tensor,
             fitted: torch.Tensor) -> torch.Tensor | None:
    """The gaze (B, 2, 2) of fitted faces (see the module docstring); None for a model without eyeballs.

    Args:
        model: the face model; params: the fitted shape and pose; camera: the fit's camera.
        dense_landmarks: (B, 478, 3) FaceMesh points in the crop's pixels; dense_valid: (B,) 1 where valid.
        iris_observed: (B,) bool, the irises were measured in the photo.
        detected, fitted: (B, 68, 2) the detected and the fitted iBUG-68 points in the crop's pixels.
    """
    if model.eyeballs is None:
        return None
    B = params.identity.shape[0]
    with torch.no_grad():
        vertices = model.display_shape(params.identity, params.expression)
        eyes = vertices[:, model.eyeballs]  # (B, 2, Ne, 3)
        centre = eyes.mean(2)  # (B, 2, 3)
        apex = eyes[:, torch.arange(2), model.eyeball_apex] - centre  # (B, 2, 3)
        error = torch.stack([(fitted[:, list(p)] - detected[:, list(p)]).mean(1) for p in IBUG_EYES], 1)
        target = _iris_targets(dense_landmarks.to(fitted), detected) + error  # (B, 2, 2)
    rotation, translation = params.rotation.detach(), params.translation.detach()

    def residual(gaze: torch.Tensor) -> torch.Tensor:  # (B, 2, 2) -> (B, 2, 4)
        pitch, yaw = gaze[..., 0], gaze[..., 1]
        cp, sp, cy, sy = pitch.cos(), pitch.sin(), yaw.cos(), yaw.sin()
        x, y, z = apex.unbind(-1)
        # R = Ry(yaw) Rx(pitch), as euler_angles_to_matrix((pitch, yaw, 0))
        y1, z1 = cp * y - sp * z, sp * y + cp * z
        turned = torch.stack([cy * x + sy * z1, y1, -sy * x + cy * z1], -1) + centre
        pixels = camera.project(apply_rigid(turned.reshape(B, 2, 3), rotation, translation)).view(B, 2, 2)
        return torch.cat([pixels - target, gaze * STRAIGHT_PRIOR**0.5], -1)

    gaze = torch.zeros(B, 2, 2, device=vertices.device)
    for _ in range(GAUSS_NEWTON_STEPS):
        # each face's and eye's residual depends on its own gaze only: central differences in pitch and in yaw
        # move every eye at once
        J = torch.stack([(residual(gaze + DIFFERENCE * e) - residual(gaze - DIFFERENCE * e)) / (2 * DIFFERENCE)
                         for e in torch.eye(2, device=gaze.device)], -1)  # (B, 2, 4, 2)
        r = residual(gaze)
        step = torch.linalg.solve(J.transpose(-1, -2) @ J + 1e-6 * torch.eye(2, device=J.device),
                                  -(J.transpose(-1, -2) @ r[..., None]))[..., 0]
        gaze = (gaze + step).clamp(-MAX_GAZE, MAX_GAZE)
    seen = (dense_valid.to(gaze.device) > 0) & iris_observed.to(gaze.device).bool()
    return torch.where(seen[:, None, None], gaze, torch.zeros_like(gaze))
