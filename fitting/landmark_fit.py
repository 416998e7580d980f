"""Fast landmark fit of pose, identity and expression (Levenberg-Marquardt).

Two kinds of landmarks, per face (:class:`LandmarkTargets`):

* **dense**: MediaPipe FaceMesh's points, each a fixed point of the face
  model's surface (:class:`~models.surface_points.SurfacePoints`, registered
  by ``scripts/register_facemesh.py``), weighted by their registration trust;
* **sparse**: the iBUG-68 points of dlib's predictor, the fallback when
  FaceMesh found no face; their jaw points follow the silhouette (below).

A face with dense points is fitted to them alone (its 68 points are taken
from the same FaceMesh output and would count it twice). The residuals are
the weighted 2D landmark errors (pixels) and Gaussian priors on the
coefficients; the Jacobian is written out exactly (the chain rule through
the projection, the rigid transform and the linear bases of only the
landmark points), so each iteration costs a few milliseconds and the fit
converges in 20-40 iterations.

* **Robust loss**: iteratively reweighted least squares with Cauchy weights,
  so a mislocated landmark pulls less.
* **Inner landmarks weigh more** than the jaw contour (weights per group in
  :class:`~fitting.config.LandmarkFitConfig`).
* **Visibility**: a dense point whose surface faces away from the camera (the
  far cheek of a turned head, where FaceMesh can only guess) loses its weight
  smoothly as its normal turns past ``visibility_cos`` toward the silhouette,
  recomputed every iteration; it is not pulled to the contour.
* **Sliding contour**: dlib's jaw landmarks follow the visible outline of the
  face, which on a turned head is not a fixed vertex. Each jaw landmark
  (except the chin) has a line of candidate vertices running from its own
  vertex toward the face centre at the same height; at every iteration it
  takes the candidate that lies outermost in the image on its side
  (the silhouette). On the near side of a turned head, or a frontal face, that
  is the landmark's own vertex.
* **Bounds**: expression coefficients are clamped to the model's bounds after
  every step (ICT blendshape weights lie in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from models.camera import PinholeCamera
from models.face_model import FaceModel
from models.face_ops import euler_angles_to_matrix
from models.surface_points import SurfacePoints

from .config import LandmarkFitConfig
from .params import FaceParams

__all__ = ["LandmarkTargets", "LandmarkFitter", "landmark_weights", "contour_candidates",
           "normalized_landmark_error", "visibility_weights"]

JAW = list(range(0, 17))
CHIN = 8


def landmark_weights(weights: dict) -> torch.Tensor:
    """(68,) weights from per-group values (iBUG groups)."""
    groups = {
        "jaw": range(0, 17), "brows": range(17, 27), "nose": range(27, 36), "eyes": range(36, 48),
        "mouth": range(48, 60), "inner_mouth": range(60, 68),
    }
    out = torch.ones(68)
    for name, idx in groups.items():
        out[list(idx)] = float(weights.get(name, 1.0))
    return out


def contour_candidates(face_model: FaceModel, band: float) -> torch.Tensor:
    """Candidate vertices for each jaw landmark, outermost first.

    Returns:
        (17, C) long; row k lists face vertices at the height of jaw landmark
        k (within ``band``) between it and the face's mid-line, in front of
        it, sorted from the landmark outward-in. Rows are padded by repeating
        the landmark's own vertex. The chin row holds only its own vertex.
    """
    mean = face_model.mean_shape
    face = face_model.face_vertex_mask.nonzero()[:, 0]
    rows = []
    for k in JAW:
        own = int(face_model.landmark_indices[k])
        p = mean[own]
        if k == CHIN:
            rows.append(torch.tensor([own]))
            continue
        q = mean[face]
        side = torch.sign(p[0])
        keep = ((q[:, 1] - p[1]).abs() < band) & (q[:, 0] * side > 0) & (q[:, 0] * side <= p[0] * side) & (
            q[:, 2] >= p[2] - band
        )
        cand = face[keep]
        order = torch.argsort(-(mean[cand, 0] * side))  # outermost first
        rows.append(torch.cat([torch.tensor([own]), cand[order]]))
    width = max(len(r) for r in rows)
    return torch.stack([torch.cat([r, r[:1].repeat(width - len(r))]) for r in rows])


def normalized_landmark_error(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean 2D landmark error divided by the outer-eye-corner distance.

    Args:
        predicted, target: (B, 68, 2).

    Returns:
        (B,).
    """
    inter_ocular = (target[:, 36] - target[:, 45]).norm(dim=-1)
    return (predicted - target).norm(dim=-1).mean(-1) / inter_ocular


@dataclass
class LandmarkTargets:
    """The detected landmarks of a batch, in crop pixels.

    Attributes:
        sparse: (B, 68, 2) iBUG-68 points.
        dense: (B, L, 2) dense (FaceMesh) points, or None.
        dense_valid: (B,) 1 where a face has dense points (its sparse points are then not fitted).
    """

    sparse: torch.Tensor
    dense: torch.Tensor | None = None
    dense_valid: torch.Tensor | None = None

    @classmethod
    def from_batch(cls, batch) -> LandmarkTargets:
        """The targets of a :class:`~fitting.structures.FaceBatch`."""
        return cls(batch.landmarks, batch.dense_landmarks[..., :2], batch.dense_valid)


def visibility_weights(normals: torch.Tensor, points: torch.Tensor, camera_distance: float,
                       cos_full: float) -> torch.Tensor:
    """(B, L) in [0, 1]: 1 where a surface point faces the camera by at least ``cos_full``, falling to 0 at
    the silhouette (cos 0) and beyond.

    Args:
        normals, points: (B, L, 3) unit normals and positions (world space).
    """
    to_camera = torch.nn.functional.normalize(points.new_tensor([0.0, 0.0, camera_distance]) - points, dim=-1)
    cos = (normals * to_camera).sum(-1)
    return (cos / cos_full).clamp(0, 1)


class LandmarkFitter:
    """Levenberg-Marquardt fit of a :class:`FaceModel` to 2D landmarks.

    Args:
        face_model: the face model.
        camera: the camera of the landmarks' image.
        config: fit settings.
        dense_points: where the dense targets lie on the surface (None: sparse landmarks only).
    """

    def __init__(self, face_model: FaceModel, camera: PinholeCamera, config: LandmarkFitConfig | None = None,
                 dense_points: SurfacePoints | None = None):
        self.model = face_model
        self.camera = camera
        self.config = config or LandmarkFitConfig()
        device = face_model.mean_shape.device
        self.weights = landmark_weights(self.config.weights).to(device)
        self.candidates = contour_candidates(face_model, self.config.contour_band).to(device)
        self.lower, self.upper = face_model.exp_bounds
        self.dense_points = dense_points.to(device) if dense_points is not None else None
        if self.dense_points is not None:
            trust = self.dense_points.trust
            # The dense points together weigh dense_weight times the 68 sparse points' total.
            self.dense_weights = trust * (self.config.dense_weight * self.weights.sum() / trust.sum())

    # ------------------------------------------------------------------ the landmark points of a shape

    def definition(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Corner vertices (B, L, 3) and barycentric weights (B, L, 3) of every fitted point: the 68 sparse
        points at vertices ``index`` (B, 68), then the dense points."""
        B = index.shape[0]
        corners = index[..., None].expand(-1, -1, 3)
        bary = torch.zeros(B, 68, 3, device=index.device)
        bary[..., 0] = 1.0
        if self.dense_points is not None:
            L = len(self.dense_points)
            corners = torch.cat([corners, self.dense_points.vertex_index.expand(B, L, 3)], 1)
            bary = torch.cat([bary, self.dense_points.barycentric.expand(B, L, 3)], 1)
        return corners, bary

    def _point_weights(self, targets: LandmarkTargets, theta: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """(B, L) weights before the robust reweighting: sparse for faces without dense points, dense (with
        their trust and visibility) for the others."""
        B = theta.shape[0]
        sparse = self.weights.expand(B, -1)
        if self.dense_points is None:
            return sparse
        valid = targets.dense_valid if targets.dense_valid is not None else theta.new_zeros(B)
        params = _params(theta, self.model.num_identity)
        vertices = params.posed(self.model).vertices
        normals = self.model.vertex_normals(vertices)
        visible = visibility_weights(self.dense_points.locate(normals), self.dense_points.locate(vertices),
                                     self.camera.distance, self.config.visibility_cos)
        dense = self.dense_weights * visible
        return torch.cat([sparse * (1 - valid[:, None]), dense * valid[:, None]], 1)

    def _targets(self, targets: LandmarkTargets) -> torch.Tensor:
        """(B, L, 2): the sparse targets, then the dense ones (zeros when there are none)."""
        if self.dense_points is None:
            return targets.sparse
        B = targets.sparse.shape[0]
        dense = targets.dense if targets.dense is not None else targets.sparse.new_zeros(B, len(self.dense_points), 2)
        return torch.cat([targets.sparse, dense], 1)

    def _residuals(self, theta, target, corners, bary, weight, free: int, with_jacobian: bool):
        """Residuals (B, R) and, optionally, their Jacobian (B, R, free) w.r.t. theta[:, :free].

        theta = [angles 3, translation 3, identity Ki, expression Ke]; the
        Jacobian is written out by hand (chain rule through the projection,
        the rigid transform and the linear bases).
        """
        model, cfg = self.model, self.config
        Ki = model.num_identity
        angles, trans = theta[:, :3], theta[:, 3:6]
        identity, expression = theta[:, 6 : 6 + Ki], theta[:, 6 + Ki :]
        w = bary[..., None, None]
        id_basis = (model.id_basis[corners] * w).sum(2)  # (B, L, 3, Ki)
        exp_basis = (model.exp_basis[corners] * w).sum(2)
        verts = (
            (model.mean_shape[corners] * bary[..., None]).sum(2)
            + torch.einsum("bnck,bk->bnc", id_basis, identity)
            + torch.einsum("bnck,bk->bnc", exp_basis, expression)
        )
        rotation, d_rotation = _rotation_and_derivatives(angles)
        posed = verts @ rotation.transpose(1, 2) + trans[:, None]
        px = self.camera.project(posed)
        L = px.shape[1]
        sw = weight.sqrt()[..., None]  # (B, L, 1)
        res = ((px - target) * sw).reshape(len(theta), -1)
        rigid_only = free == 6
        if not rigid_only:
            res = torch.cat([res, identity * cfg.identity_prior**0.5, expression * cfg.expression_prior**0.5], 1)
        if not with_jacobian:
            return res, None
        f, depth = self.camera.focal_px, self.camera.depth(posed)  # (B, L)
        zero = torch.zeros_like(depth)
        # d(pixel)/d(posed point): (B, L, 2, 3)
        d_px = torch.stack(
            [
                torch.stack([f / depth, zero, f * posed[..., 0] / depth**2], -1),
                torch.stack([zero, -f / depth, -f * posed[..., 1] / depth**2], -1),
            ],
            -2,
        )
        blocks = [
            torch.einsum("bnij,bajk,bnk->bnia", d_px, d_rotation, verts),  # angles (B, L, 2, 3)
            d_px,  # translation
        ]
        if not rigid_only:
            d_basis = torch.einsum("bnij,bjk->bnik", d_px, rotation)
            blocks += [torch.einsum("bnik,bnkm->bnim", d_basis, id_basis),
                       torch.einsum("bnik,bnkm->bnim", d_basis, exp_basis)]
        J = torch.cat(blocks, -1) * sw[..., None]  # (B, L, 2, P)
        J = J.reshape(len(theta), 2 * L, -1)
        if not rigid_only:
            prior = torch.diag_embed(
                torch.cat([torch.full((Ki,), cfg.identity_prior**0.5),
                           torch.full((model.num_expression,), cfg.expression_prior**0.5)]).to(J)
            ).expand(len(theta), -1, -1)
            J = torch.cat([J, torch.cat([J.new_zeros(len(theta), prior.shape[1], 6), prior], 2)], 1)
        return res, J

    def select_contour(self, params: FaceParams) -> torch.Tensor:
        """(B, 68) landmark vertex indices of ``params``, with the jaw landmarks on the silhouette."""
        return self._select_contour(_theta(params))

    def project(self, params: FaceParams, index: torch.Tensor) -> torch.Tensor:
        """(B, 68, 2) pixel positions of the landmark vertices ``index`` (B, 68) of ``params``."""
        out = params.posed(self.model)
        return self.camera.project(torch.gather(out.vertices, 1, index[..., None].expand(-1, -1, 3)))

    def _select_contour(self, theta: torch.Tensor) -> torch.Tensor:
        """(B, 68) landmark vertex indices with jaw landmarks on the silhouette."""
        B = theta.shape[0]
        index = self.model.landmark_indices.expand(B, -1).clone()
        if not self.config.sliding_contour:
            return index
        Ki = self.model.num_identity
        cand = self.candidates  # (17, C)
        flat = cand.reshape(-1)
        verts = (
            self.model.mean_shape[flat]
            + torch.einsum("nck,bk->bnc", self.model.id_basis[flat], theta[:, 6 : 6 + Ki])
            + torch.einsum("nck,bk->bnc", self.model.exp_basis[flat], theta[:, 6 + Ki :])
        )
        posed = verts @ euler_angles_to_matrix(theta[:, :3]).transpose(1, 2) + theta[:, None, 3:6]
        x = self.camera.project(posed)[..., 0].view(B, *cand.shape)  # (B, 17, C)
        side = torch.sign(self.model.mean_shape[cand[:, 0], 0])  # -1 image-left, +1 image-right
        pick = (x * side[None, :, None]).argmax(-1)  # outermost in the image
        index[:, JAW] = cand[torch.arange(len(JAW)), pick]
        return index

    def fit(self, targets: LandmarkTargets | torch.Tensor, init: FaceParams | None = None) -> tuple[FaceParams, dict]:
        """Fit landmarks (pixels): :class:`LandmarkTargets`, or (B, 68, 2) sparse points alone.

        Returns:
            The parameters and a log: ``error`` (B,) the final normalised error
            against the sparse points, ``landmarks`` (B, 68, 2) the fitted
            sparse landmarks (jaw on the silhouette), ``index`` (B, 68) their
            vertices and ``weights`` (B, L) the final per-point weights.
        """
        if isinstance(targets, torch.Tensor):
            targets = LandmarkTargets(targets)
        landmarks = targets.sparse
        B = landmarks.shape[0]
        model, cfg = self.model, self.config
        Ki, Ke = model.num_identity, model.num_expression
        if init is None:
            init = FaceParams.zeros(B, Ki, Ke, landmarks.device)
        theta = _theta(init).detach()
        target = self._targets(targets)
        damping = torch.full((B,), cfg.damping, device=landmarks.device)
        for it in range(cfg.rigid_iterations + cfg.iterations):
            rigid = it < cfg.rigid_iterations
            theta, damping = self._step(theta, targets, target, damping, rigid)
        index = self._select_contour(theta)
        params = FaceParams(
            identity=theta[:, 6 : 6 + Ki], expression=theta[:, 6 + Ki :], angles=theta[:, :3],
            translation=theta[:, 3:6], gamma=init.gamma.detach().clone(),
        )
        fitted = self.project(params, index)
        return params, {"error": normalized_landmark_error(fitted, landmarks), "landmarks": fitted, "index": index,
                        "weights": self._point_weights(targets, theta, index)}

    def all_targets(self, targets: LandmarkTargets) -> torch.Tensor:
        """(B, L, 2) targets in the order of :meth:`definition`: the sparse points, then the dense ones."""
        return self._targets(targets)

    def _step(self, theta, targets, target, damping, rigid: bool):
        index = self._select_contour(theta)
        corners, bary = self.definition(index)
        base = self._point_weights(targets, theta, index)
        free = 6 if rigid else theta.shape[1]
        L = target.shape[1]
        res0, _ = self._residuals(theta, target, corners, bary, torch.ones_like(base), free, with_jacobian=False)
        # Cauchy IRLS weights per landmark from the current pixel errors.
        err = res0[:, : 2 * L].view(-1, L, 2).norm(dim=-1)
        weight = base / (1.0 + (err / self.config.robust_scale) ** 2)
        res, J = self._residuals(theta, target, corners, bary, weight, free, with_jacobian=True)
        JtJ = J.transpose(1, 2) @ J
        Jtr = J.transpose(1, 2) @ res[..., None]
        diag = torch.diagonal(JtJ, dim1=1, dim2=2)
        cost = (res**2).sum(-1)
        # One damped Gauss-Newton step; rejected steps raise the damping instead.
        A = JtJ + torch.diag_embed(damping[:, None] * (diag + 1e-6))
        delta = -torch.cholesky_solve(Jtr, torch.linalg.cholesky(A))[..., 0]
        candidate = theta.clone()
        candidate[:, :free] = theta[:, :free] + delta
        if not rigid:
            candidate[:, 6 + self.model.num_identity :].clamp_(self.lower, self.upper)
        new, _ = self._residuals(candidate, target, corners, bary, weight, free, with_jacobian=False)
        better = (new**2).sum(-1) < cost
        theta = torch.where(better[:, None], candidate, theta)
        damping = torch.where(better, damping * 0.3, damping * 10.0).clamp(1e-7, 1e7)
        return theta, damping


def _theta(params: FaceParams) -> torch.Tensor:
    """The fit's flat parameter vector (B, 6 + Ki + Ke): angles, translation, identity, expression."""
    return torch.cat([params.angles, params.translation, params.identity, params.expression], 1)


def _params(theta: torch.Tensor, num_identity: int) -> FaceParams:
    B = theta.shape[0]
    return FaceParams(identity=theta[:, 6 : 6 + num_identity], expression=theta[:, 6 + num_identity :],
                      angles=theta[:, :3], translation=theta[:, 3:6], gamma=theta.new_zeros(B, 27))


def _rotation_and_derivatives(angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """R = Rz Ry Rx (B, 3, 3) and dR/d(x, y, z) as (B, 3, 3, 3) (angle index second)."""
    x, y, z = angles.unbind(-1)
    one, zero = torch.ones_like(x), torch.zeros_like(x)

    def mat(*rows):
        return torch.stack(rows, -1).view(-1, 3, 3)

    cx, sx, cy, sy, cz, sz = x.cos(), x.sin(), y.cos(), y.sin(), z.cos(), z.sin()
    rx = mat(one, zero, zero, zero, cx, -sx, zero, sx, cx)
    ry = mat(cy, zero, sy, zero, one, zero, -sy, zero, cy)
    rz = mat(cz, -sz, zero, sz, cz, zero, zero, zero, one)
    drx = mat(zero, zero, zero, zero, -sx, -cx, zero, cx, -sx)
    dry = mat(-sy, zero, cy, zero, zero, zero, -cy, zero, -sy)
    drz = mat(-sz, -cz, zero, cz, -sz, zero, zero, zero, zero)
    rotation = rz @ ry @ rx
    derivatives = torch.stack([rz @ ry @ drx, rz @ dry @ rx, drz @ ry @ rx], 1)
    return rotation, derivatives
