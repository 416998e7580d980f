"""``FaceModel``: a linear 3D morphable face model as a torch module.

The module holds the model's bases as buffers and owns no parameters
(smplx's "layer" style): fitting code owns its coefficients and passes them
to :meth:`FaceModel.forward`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import nn

from .face_model_format import FaceModelData, load_face_model
from .face_ops import apply_rigid, blend_shapes, euler_angles_to_matrix, vertex_normals

__all__ = ["FaceModel", "FaceModelOutput"]


@dataclass
class FaceModelOutput:
    """Result of :meth:`FaceModel.forward`.

    Attributes:
        vertices: (B, V, 3) posed vertices (world space, model units).
        landmarks: (B, 68, 3) posed landmark vertices.
        shape: (B, V, 3) unposed vertices (identity + expression), recentred.
    """

    vertices: torch.Tensor
    landmarks: torch.Tensor
    shape: torch.Tensor


class FaceModel(nn.Module):
    """Linear face model: ``mean + id_basis @ identity + exp_basis @ expression``.

    Shapes are recentred on the centroid of the mean shape's face region, as
    the reference recentres its mean shape, so rotations turn the face about
    its own centre.

    Args:
        data: the canonical model (see :mod:`models.face_model_format`).
    """

    def __init__(self, data: FaceModelData):
        super().__init__()
        self.name = data.name
        self.units = data.units
        self.metres_per_unit = float(data.metres_per_unit)
        self.uv_layout_id = data.uv_layout_id
        self.exp_names = [str(n) for n in data.exp_names]
        self.exp_bounds = tuple(float(b) for b in data.exp_bounds)
        f32 = torch.float32
        mean = torch.as_tensor(data.mean_shape, dtype=f32)
        face_mask = torch.as_tensor(data.face_vertex_mask)
        self.register_buffer("mean_shape", mean - mean[face_mask].mean(0))
        self.register_buffer("id_basis", torch.as_tensor(data.id_basis, dtype=f32))
        self.register_buffer("exp_basis", torch.as_tensor(data.exp_basis, dtype=f32))
        self.register_buffer("faces", torch.as_tensor(data.faces, dtype=torch.long))
        self.register_buffer("faces_uv", torch.as_tensor(data.faces_uv, dtype=torch.long))
        self.register_buffer("head_faces", torch.as_tensor(data.head_faces, dtype=torch.long))
        self.register_buffer("head_faces_uv", torch.as_tensor(data.head_faces_uv, dtype=torch.long))
        self.register_buffer("uvs", torch.as_tensor(data.uvs, dtype=f32))
        self.register_buffer("landmark_indices", torch.as_tensor(data.landmark_indices, dtype=torch.long))
        self.register_buffer("face_vertex_mask", face_mask)
        self.register_buffer("skin_vertex_mask", torch.as_tensor(data.skin_vertex_mask))
        if data.albedo_mean is not None:
            self.register_buffer("albedo_mean", torch.as_tensor(data.albedo_mean, dtype=f32))
            self.register_buffer("albedo_basis", torch.as_tensor(data.albedo_basis, dtype=f32))
        else:
            self.albedo_mean = self.albedo_basis = None
        self.part_names = [str(n) for n in data.part_names] if data.part_names is not None else []
        if self.part_names:
            self.register_buffer("part_shape", torch.as_tensor(data.part_shape, dtype=f32) - mean[face_mask].mean(0))
            self.register_buffer("part_id_basis", torch.as_tensor(data.part_id_basis, dtype=f32))
            self.register_buffer("part_exp_basis", torch.as_tensor(data.part_exp_basis, dtype=f32))
            self.register_buffer("part_faces", torch.as_tensor(data.part_faces, dtype=torch.long))
            self.register_buffer("part_faces_uv", torch.as_tensor(data.part_faces_uv, dtype=torch.long))
            self.register_buffer("part_uvs", torch.as_tensor(data.part_uvs, dtype=f32))
            self.register_buffer("part_labels", torch.as_tensor(data.part_labels, dtype=torch.long))
        else:
            self.part_shape = self.part_id_basis = self.part_exp_basis = None
            self.part_faces = self.part_faces_uv = self.part_uvs = self.part_labels = None
        self._register_eyeballs()

    def _register_eyeballs(self) -> None:
        """``eyeballs`` (2, Ne): the display vertices of the image-left (x < 0) and image-right eyeball, and
        ``eyeball_apex`` (2,): each one's front-most vertex in the mean shape (the cornea's apex), for
        :meth:`display_shape`'s gaze; None for a model without two eyeballs of the same size."""
        left = right = torch.zeros(0, dtype=torch.long)
        if "eyeballs" in self.part_names:
            vertices = self.part_faces[self.part_labels == self.part_names.index("eyeballs")].unique()
            points = torch.cat([self.mean_shape, self.part_shape])[vertices]
            left, right = vertices[points[:, 0] < 0], vertices[points[:, 0] >= 0]
        if len(left) != len(right) or not len(left):
            self.eyeballs = self.eyeball_apex = None
            return
        eyeballs = torch.stack([left, right])
        rest = torch.cat([self.mean_shape, self.part_shape])[eyeballs]  # (2, Ne, 3)
        self.register_buffer("eyeballs", eyeballs)
        self.register_buffer("eyeball_apex", rest[..., 2].argmax(1))

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> FaceModel:
        """Load a canonical ``.npz`` face model."""
        return cls(load_face_model(path))

    @property
    def num_vertices(self) -> int:
        return self.mean_shape.shape[0]

    @property
    def num_identity(self) -> int:
        return self.id_basis.shape[2]

    @property
    def num_expression(self) -> int:
        return self.exp_basis.shape[2]

    @property
    def num_albedo(self) -> int:
        return 0 if self.albedo_basis is None else self.albedo_basis.shape[2]

    @property
    def has_parts(self) -> bool:
        """Whether the model has display parts (eyeballs, teeth, mouth and eye sockets)."""
        return bool(self.part_names)

    @property
    def camera_distance(self) -> float:
        """The reference's 1 m camera distance in this model's units."""
        return 1.0 / self.metres_per_unit

    def extra_repr(self) -> str:
        return (
            f"name={self.name}, V={self.num_vertices}, identity={self.num_identity}, "
            f"expression={self.num_expression}, albedo={self.num_albedo}, units={self.units}"
        )

    def _coeffs(self, coeffs: torch.Tensor | None, size: int, batch: int, name: str) -> torch.Tensor:
        if coeffs is None:
            return self.mean_shape.new_zeros(batch, size)
        if coeffs.ndim != 2 or coeffs.shape[1] > size:
            raise ValueError(f"{name}: expected (B, K) with K <= {size}, got {tuple(coeffs.shape)}")
        if coeffs.shape[1] < size:
            coeffs = torch.cat([coeffs, coeffs.new_zeros(coeffs.shape[0], size - coeffs.shape[1])], 1)
        return coeffs

    def shape(self, identity: torch.Tensor | None = None, expression: torch.Tensor | None = None) -> torch.Tensor:
        """Unposed vertices (B, V, 3) from identity (B, Ki) and expression (B, Ke).

        Fewer coefficients than modes use the leading modes; missing inputs
        are zeros; more coefficients than modes raise ValueError.
        """
        batch = max([1] + [c.shape[0] for c in (identity, expression) if c is not None])
        identity = self._coeffs(identity, self.num_identity, batch, "identity")
        expression = self._coeffs(expression, self.num_expression, batch, "expression")
        return self.mean_shape + blend_shapes(identity, self.id_basis) + blend_shapes(expression, self.exp_basis)

    def display_shape(self, identity: torch.Tensor | None = None, expression: torch.Tensor | None = None,
                      gaze: torch.Tensor | None = None) -> torch.Tensor:
        """Unposed display vertices (B, V + Vp, 3): :meth:`shape`'s, then the display parts' (Vp = 0 without
        parts), with the same coefficients; ``gaze`` (B, 2, 2) turns the image-left and image-right eyeball
        about its centre by (pitch, yaw) in radians (:meth:`turn_eyeballs`)."""
        shape = self.shape(identity, expression)
        if not self.has_parts:
            return shape
        batch = shape.shape[0]
        identity = self._coeffs(identity, self.num_identity, batch, "identity")
        expression = self._coeffs(expression, self.num_expression, batch, "expression")
        parts = (self.part_shape + blend_shapes(identity, self.part_id_basis)
                 + blend_shapes(expression, self.part_exp_basis))
        vertices = torch.cat([shape, parts], 1)
        return vertices if gaze is None else self.turn_eyeballs(vertices, gaze)

    def turn_eyeballs(self, vertices: torch.Tensor, gaze: torch.Tensor) -> torch.Tensor:
        """Display vertices (B, V + Vp, 3) with each eyeball turned about its centre (the mean of its
        vertices) by ``gaze`` (B, 2, 2): (pitch, yaw) in radians of the image-left and image-right eye, as
        the head's angles (positive yaw turns the eye's front towards +x). A model without eyeballs is
        returned unchanged."""
        if self.eyeballs is None:
            return vertices
        B = vertices.shape[0]
        eyes = vertices[:, self.eyeballs]  # (B, 2, Ne, 3)
        centre = eyes.mean(2, keepdim=True)
        angles = torch.cat([gaze.to(vertices), gaze.new_zeros(B, 2, 1).to(vertices)], -1)  # (B, 2, 3)
        rotation = euler_angles_to_matrix(angles.reshape(-1, 3)).view(B, 2, 3, 3)
        turned = (eyes - centre) @ rotation.transpose(-1, -2) + centre
        out = vertices.clone()
        out[:, self.eyeballs] = turned
        return out

    def forward(
        self,
        identity: torch.Tensor | None = None,
        expression: torch.Tensor | None = None,
        rotation: torch.Tensor | None = None,
        translation: torch.Tensor | None = None,
    ) -> FaceModelOutput:
        """Posed face.

        Args:
            identity: (B, Ki') identity coefficients, Ki' <= Ki.
            expression: (B, Ke') expression coefficients, Ke' <= Ke.
            rotation: (B, 3, 3) rotation matrices (identity if None).
            translation: (B, 3) in model units (zero if None).
        """
        shape = self.shape(identity, expression)
        vertices = shape
        if rotation is not None or translation is not None:
            B = shape.shape[0]
            if rotation is None:
                rotation = torch.eye(3, dtype=shape.dtype, device=shape.device).expand(B, 3, 3)
            if translation is None:
                translation = shape.new_zeros(B, 3)
            vertices = apply_rigid(shape, rotation, translation)
        return FaceModelOutput(vertices=vertices, landmarks=vertices[:, self.landmark_indices], shape=shape)

    def vertex_normals(self, vertices: torch.Tensor) -> torch.Tensor:
        """(B, V, 3) unit normals from the display (head) triangles."""
        return vertex_normals(vertices, self.head_faces)

    def albedo(self, coeffs: torch.Tensor | None = None) -> torch.Tensor:
        """Per-vertex albedo (B, V, 3) for models that have one (HiFi3D++, BFM)."""
        if self.albedo_basis is None:
            raise ValueError(f"face model {self.name!r} has no per-vertex albedo")
        batch = 1 if coeffs is None else coeffs.shape[0]
        coeffs = self._coeffs(coeffs, self.num_albedo, batch, "albedo")
        return self.albedo_mean + blend_shapes(coeffs, self.albedo_basis)
