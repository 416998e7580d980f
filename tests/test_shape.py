"""Stage 1 on synthetic faces with known truth, and the landmark fitter's parts."""

from __future__ import annotations

import numpy as np
import torch

from fitting.config import LandmarkFitConfig, ShapeFitConfig
from fitting.landmark_fit import (
    LandmarkFitter,
    LandmarkTargets,
    contour_candidates,
    landmark_weights,
    visibility_weights,
)
from fitting.params import FaceParams
from fitting.shape import ShapeFitter
from fitting.structures import FaceBatch, FitState
from models.camera import PinholeCamera
from models.face_ops import euler_angles_to_matrix
from models.surface_points import SurfacePoints
from testing.synthetic import make_synthetic_faces, rigid_align, vertex_error_mm


def test_landmark_fit_recovers_pose_and_shape(ict_model):
    truth = make_synthetic_faces(ict_model, 3, seed=1, max_yaw_deg=35)
    fitter = LandmarkFitter(ict_model, PinholeCamera(ict_model.camera_distance))
    params, log = fitter.fit(truth.landmarks)
    assert (log["error"] < 0.012).all(), log["error"]
    angle_error_deg = (params.angles - truth.params.angles).abs().max(1).values * 180 / torch.pi
    assert (angle_error_deg < 3.0).all(), angle_error_deg
    fitted = params.posed(ict_model).vertices
    error = vertex_error_mm(ict_model, fitted, truth.vertices)
    mean_face = ict_model(rotation=truth.params.rotation, translation=truth.params.translation).vertices
    baseline = vertex_error_mm(ict_model, mean_face, truth.vertices)
    assert (error < 0.8 * baseline).all() and error.mean() < 4.0, (error, baseline)
    assert ((params.expression >= 0) & (params.expression <= 1)).all()


def test_sliding_contour_follows_the_silhouette(ict_model):
    """Turning the head moves the far-side jaw landmarks to the silhouette; the near side keeps its vertices."""
    fitter = LandmarkFitter(ict_model, PinholeCamera(ict_model.camera_distance))
    params = FaceParams.zeros(1, ict_model.num_identity, ict_model.num_expression)
    frontal = fitter.select_contour(params)[0]
    assert (frontal[:17] == ict_model.landmark_indices[:17]).sum() >= 15
    for yaw_deg, far_side in ((40, range(9, 17)), (-40, range(0, 8))):
        params.angles[0, 1] = yaw_deg * torch.pi / 180  # +yaw turns the image-right side (landmarks 9..16) away
        turned = fitter.select_contour(params)[0]
        moved = set((turned[:17] != frontal[:17]).nonzero()[:, 0].tolist())
        assert len(moved & set(far_side)) >= 5 and moved <= set(far_side), (yaw_deg, moved)
        # the chosen far-side vertices project inside the fixed ones (toward the face centre)
        camera = fitter.camera
        posed = ict_model(rotation=euler_angles_to_matrix(params.angles)).vertices
        x_fixed = camera.project(posed[:, ict_model.landmark_indices[list(far_side)]])[0, :, 0]
        x_slid = camera.project(posed[:, turned[list(far_side)]])[0, :, 0]
        side = 1 if yaw_deg > 0 else -1
        assert (x_slid * side >= x_fixed * side - 1e-4).all()


def test_contour_candidates_and_weights(ict_model):
    cand = contour_candidates(ict_model, 0.35)
    assert cand.shape[0] == 17
    torch.testing.assert_close(cand[:, 0], ict_model.landmark_indices[:17])
    assert (cand[8] == ict_model.landmark_indices[8]).all()  # the chin does not slide
    w = landmark_weights({"jaw": 0.5, "eyes": 3.0})
    assert w[0] == 0.5 and w[40] == 3.0 and w[30] == 1.0


def test_photometric_refinement_lowers_the_photo_loss_and_keeps_landmarks(ict_model):
    truth = make_synthetic_faces(ict_model, 2, seed=2, max_yaw_deg=25)
    config = ShapeFitConfig()
    config.refine.optim.steps = 25
    batch = FaceBatch.from_tensors(truth.image, truth.landmarks, truth.mask, detail_size=64)
    state = ShapeFitter(ict_model, config)(batch, FitState())
    history = state.histories["stage1"]
    assert sum(history[-1]["photo"]) < 0.7 * sum(history[0]["photo"])
    assert (state.landmark_residual < 0.015).all()
    fitted = state.params.posed(ict_model).vertices
    assert vertex_error_mm(ict_model, fitted, truth.vertices).mean() < 4.0


def test_rigid_align_undoes_a_rigid_motion():
    points = torch.randn(2, 50, 3)
    R = euler_angles_to_matrix(torch.tensor([[0.3, -0.2, 0.5], [1.0, 0.1, -0.4]]))
    moved = points @ R.transpose(1, 2) + torch.tensor([[1.0, 2.0, 3.0]])[:, None]
    torch.testing.assert_close(rigid_align(moved, points), points, atol=1e-5, rtol=1e-5)


def test_landmark_fit_config_is_respected(ict_model):
    truth = make_synthetic_faces(ict_model, 1, seed=3)
    rigid_only = LandmarkFitConfig(iterations=0)
    params, _ = LandmarkFitter(ict_model, PinholeCamera(ict_model.camera_distance), rigid_only).fit(truth.landmarks)
    assert params.identity.abs().max() == 0 and params.expression.abs().max() == 0


def test_light_scale_normalisation_keeps_the_image_and_fixes_the_mean_visible_shading():
    from fitting.shape import normalize_light_scale
    from models.shading import sh_shading

    gamma = torch.randn(3, 27) * 0.2
    normals = torch.nn.functional.normalize(torch.randn(3, 500, 3), dim=-1)
    new_gamma, scale = normalize_light_scale(gamma, normals)
    # albedo * shading is unchanged when the albedo is multiplied by the scale
    torch.testing.assert_close(sh_shading(normals, new_gamma) * scale[:, None, None], sh_shading(normals, gamma))
    weight = normals[..., 2].clamp_min(0)
    mean = (sh_shading(normals, new_gamma).mean(-1) * weight).sum(1) / weight.sum(1)
    torch.testing.assert_close(mean, torch.ones(3))


def _random_surface_points(face_model, count: int, seed: int) -> SurfacePoints:
    rng = np.random.default_rng(seed)
    face = face_model.faces.numpy()
    corners = face[rng.choice(len(face), count, replace=False)]
    return SurfacePoints(torch.from_numpy(corners), torch.from_numpy(rng.dirichlet(np.ones(3), count)).float(),
                         torch.ones(count))


def test_dense_points_fit_the_shape_better_than_68_points(ict_model):
    """Exact targets: 300 surface points carry more of the shape than the 68 landmarks do."""
    points = _random_surface_points(ict_model, 300, seed=0)
    truth = make_synthetic_faces(ict_model, 3, seed=4, max_yaw_deg=20)
    camera = PinholeCamera(ict_model.camera_distance)
    dense = camera.project(points.locate(truth.vertices))
    sparse = truth.landmarks
    fitter = LandmarkFitter(ict_model, camera, dense_points=points)
    with_dense, log = fitter.fit(LandmarkTargets(sparse, dense, torch.ones(3)))
    sparse_only, _ = fitter.fit(LandmarkTargets(sparse, dense, torch.zeros(3)))
    error_dense = vertex_error_mm(ict_model, with_dense.posed(ict_model).vertices, truth.vertices)
    error_sparse = vertex_error_mm(ict_model, sparse_only.posed(ict_model).vertices, truth.vertices)
    assert error_dense.mean() < 0.8 * error_sparse.mean(), (error_dense, error_sparse)
    # faces fitted to their dense points put no weight on their 68 sparse points, and the reverse
    assert (log["weights"][:, :68] == 0).all() and (log["weights"][:, 68:] > 0).any()


def test_points_facing_away_lose_their_weight(ict_model):
    points = _random_surface_points(ict_model, 400, seed=1)
    camera = PinholeCamera(ict_model.camera_distance)
    params = FaceParams.zeros(1, ict_model.num_identity, ict_model.num_expression)
    params.angles[0, 1] = 1.2  # about 70 degrees: one cheek turns away
    vertices = params.posed(ict_model).vertices
    normals = ict_model.vertex_normals(vertices)
    weights = visibility_weights(points.locate(normals), points.locate(vertices), camera.distance, 0.3)[0]
    side = points.locate(ict_model.mean_shape[None])[0, :, 0]
    far, near = side > 3.0, side < -3.0  # +x cheek turns away for positive yaw
    assert far.any() and near.any()
    assert weights[far].mean() < 0.3 * weights[near].mean(), (weights[far].mean(), weights[near].mean())
    assert ((weights >= 0) & (weights <= 1)).all()


def test_symmetric_proxy_gives_a_side_light_to_the_lighting(ict_model):
    """A frontal face of uniform colour lit from its side: with the mirror-tied proxy the fitted light keeps the
    left-right ratio of the true shading; a free proxy paints part of the gradient into the albedo."""
    from models.shading import sh_shading

    light = torch.zeros(1, 27)
    light.view(1, 3, 9)[:, :, 3] = -0.35  # band 3 is -x: light from the subject's left (+x)
    albedo = torch.full((1, 3, 64, 64), 0.6)
    truth = make_synthetic_faces(ict_model, 1, seed=3, max_yaw_deg=0, max_pitch_deg=0, light=light,
                                 albedo_map=albedo)
    batch = FaceBatch.from_tensors(truth.image, truth.landmarks, truth.mask, detail_size=64)
    sides = torch.tensor([[[1.0, 0.0, 0.5], [-1.0, 0.0, 0.5]]])
    sides = sides / sides.norm(dim=-1, keepdim=True)

    def side_ratio(gamma):
        shading = sh_shading(sides, gamma).mean(-1)[0]
        return float(shading[0] / shading[1])

    true_ratio = side_ratio(light)
    errors, maps = {}, {}
    for symmetric in (True, False):
        config = ShapeFitConfig()
        config.refine.symmetric_proxy = symmetric
        fitter = ShapeFitter(ict_model, config)
        state = fitter(batch, FitState())
        errors[symmetric] = abs(side_ratio(state.params.gamma) - true_ratio)
        maps[symmetric] = (fitter, state.albedo_maps["stage1"])
    assert true_ratio > 1.5
    assert errors[True] < 0.5 * errors[False], errors
    fitter, proxy_map = maps[True]
    torch.testing.assert_close(fitter.proxy_layout.mirrored(proxy_map), proxy_map, atol=0.02, rtol=0)


def test_light_prior_moves_a_scene_cast_from_the_proxy_to_the_light_and_keeps_the_render(ict_model):
    """Skin of the prior's mean colour under a green-blue light: without the prior the cast is painted into the
    stage-1 albedo; with it most of the cast moves to the light, and albedo x shading is the same."""
    from models.light_prior import LightSkinPrior
    from models.shading import sh_light_colour, sh_shading

    axis = np.array([0.3, 0.45, 0.84]) / np.linalg.norm([0.3, 0.45, 0.84])
    level = np.full((3, 3), 1 / 3)
    prior = LightSkinPrior(skin_mean=np.log(np.array([0.62, 0.45, 0.36], np.float32)),
                           sclera_mean=np.log(np.array([0.6, 0.56, 0.54], np.float32)),
                           skin_cov=0.3**2 * np.outer(axis, axis) + 0.02**2 * np.eye(3),
                           sclera_cov=0.3**2 * level + 0.03**2 * (np.eye(3) - level),
                           light_cov=0.25**2 * level + 0.12**2 * (np.eye(3) - level))
    skin = torch.tensor(np.exp(prior.skin_mean), dtype=torch.float32)
    cast = torch.tensor([0.8, 1.1, 1.1])
    albedo = (skin * cast)[None, :, None, None].expand(1, 3, 64, 64).contiguous()  # the cast, seen as albedo
    truth = make_synthetic_faces(ict_model, 1, seed=3, max_yaw_deg=10, albedo_map=albedo)
    batch = FaceBatch.from_tensors(truth.image, truth.landmarks, truth.mask, detail_size=64)
    config = ShapeFitConfig()
    config.refine.optim.steps = 20
    plain_fitter = ShapeFitter(ict_model, config)
    plain = plain_fitter(batch, FitState())
    split = ShapeFitter(ict_model, config, light_prior=prior)(batch, FitState())
    mask = plain_fitter.proxy_layout.mask
    normals = torch.nn.functional.normalize(torch.randn(1, 200, 3), dim=-1)

    def mean_albedo(state):
        return (state.albedo_maps["stage1"] * mask).flatten(2).sum(-1)[0] / mask.sum()

    def chroma(colour):
        return colour / colour.mean()

    # The render is unchanged: per channel, mean albedo x shading.
    before = mean_albedo(plain)[:, None] * sh_shading(normals, plain.params.gamma)[0].T
    after = mean_albedo(split)[:, None] * sh_shading(normals, split.params.gamma)[0].T
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)
    # The cast moved: the albedo's chromaticity is closer to the skin's, the light has the cast's colour.
    error_plain = (chroma(mean_albedo(plain)) - chroma(skin)).abs().max()
    error_split = (chroma(mean_albedo(split)) - chroma(skin)).abs().max()
    assert error_split < 0.5 * error_plain, (error_plain, error_split)
    light = sh_light_colour(split.params.gamma)[0]
    assert light[0] < light[1] and light[0] < light[2]
    assert split.metrics["light_gain_r"][0] < split.metrics["light_gain_g"][0]
    for c in "rgb":
        torch.testing.assert_close(split.metrics[f"face_colour_{c}"], plain.metrics[f"face_colour_{c}"])
