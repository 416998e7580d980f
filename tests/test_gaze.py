"""Where the eyes look: the gaze fit against known eyeball turns."""

from __future__ import annotations

import torch

from fitting.eye_probe import IRISES
from fitting.gaze import fit_gaze
from models.camera import PinholeCamera
from models.face_ops import apply_rigid
from testing.synthetic import make_synthetic_faces


def _setup(ict_model, gaze: torch.Tensor, seed: int = 3):
    """Synthetic faces (no photo needed) whose FaceMesh iris centres are the turned eyeballs' projected
    cornea apices, with the 68 points they were fitted to."""
    truth = make_synthetic_faces(ict_model, len(gaze), seed=seed, max_yaw_deg=30)
    camera = PinholeCamera(ict_model.camera_distance)
    params = truth.params
    turned = ict_model.display_shape(params.identity, params.expression, gaze)
    apex = turned[:, ict_model.eyeballs[torch.arange(2), ict_model.eyeball_apex]]  # (B, 2, 3)
    irises = camera.project(apply_rigid(apex, params.rotation, params.translation))
    dense = torch.zeros(len(gaze), 478, 3)
    # FaceMesh's iris order follows the image: put the image-right eye's iris first, the fit must pair them
    dense[:, IRISES[0][0], :2], dense[:, IRISES[1][0], :2] = irises[:, 1], irises[:, 0]
    landmarks = camera.project(params.posed(ict_model).landmarks)
    return params, camera, dense, landmarks


def test_the_gaze_fit_recovers_the_eyeballs_turn(ict_model):
    gaze = torch.tensor([[[0.0, 0.0], [0.0, 0.0]], [[0.2, -0.3], [0.2, -0.25]], [[-0.15, 0.35], [-0.1, 0.3]]])
    params, camera, dense, landmarks = _setup(ict_model, gaze)
    seen = torch.ones(3, dtype=torch.bool)
    fitted = fit_gaze(ict_model, params, camera, dense, torch.ones(3), seen, landmarks, landmarks)
    torch.testing.assert_close(fitted, gaze, atol=0.03, rtol=0)  # the straight-ahead pull costs little
    # a fit that places the eyes 3 px off the detected ones moves the target with them: the same turn
    shifted = landmarks + torch.tensor([3.0, -2.0])
    moved = dense.clone()
    moved[..., :2] += torch.tensor([3.0, -2.0])
    again = fit_gaze(ict_model, params, camera, moved, torch.ones(3), seen, shifted, landmarks)
    torch.testing.assert_close(again, gaze, atol=0.03, rtol=0)
    # no FaceMesh points, or irises not measured (closed eyes): straight ahead
    unseen = fit_gaze(ict_model, params, camera, dense, torch.tensor([0.0, 1.0, 1.0]),
                      torch.tensor([True, False, True]), landmarks, landmarks)
    assert unseen[:2].abs().max() == 0 and unseen[2].abs().max() > 0.2
