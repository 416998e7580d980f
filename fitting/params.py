"""The fitted parameters of one batch of faces, shared by every stage."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from models.face_model import FaceModel, FaceModelOutput
from models.face_ops import euler_angles_to_matrix

__all__ = ["FaceParams"]


@dataclass
class FaceParams:
    """Coefficients of a batch of fitted faces (all batch-first float32).

    Attributes:
        identity: (B, Ki) identity coefficients (N(0, 1) prior).
        expression: (B, Ke) expression coefficients (within the model's bounds).
        angles: (B, 3) head rotation (x, y, z) in radians, R = Rz Ry Rx.
        translation: (B, 3) in model units.
        gamma: (B, 27) SH lighting without the ambient offset (models.shading).
        albedo: (B, 3K) UVAPM coefficients in standard deviations (None before stage 2).
        detail: (B, L) detail-generator latent (None before stage 3).
        gaze: (B, 2, 2) the image-left and image-right eyeball's (pitch, yaw) turn in radians
            (:mod:`fitting.gaze`; None for a model without eyeballs).
    """

    identity: torch.Tensor
    expression: torch.Tensor
    angles: torch.Tensor
    translation: torch.Tensor
    gamma: torch.Tensor
    albedo: torch.Tensor | None = None
    detail: torch.Tensor | None = None
    gaze: torch.Tensor | None = None

    @classmethod
    def zeros(cls, batch: int, num_identity: int, num_expression: int, device=None) -> FaceParams:
        z = lambda n: torch.zeros(batch, n, device=device)  # noqa: E731
        return cls(z(num_identity), z(num_expression), z(3), z(3), z(27))

    @property
    def batch_size(self) -> int:
        return self.identity.shape[0]

    @property
    def rotation(self) -> torch.Tensor:
        """(B, 3, 3) rotation matrices."""
        return euler_angles_to_matrix(self.angles)

    def posed(self, face_model: FaceModel) -> FaceModelOutput:
        """The face model with these identity, expression and pose: vertices (B, V, 3) in world space."""
        return face_model(self.identity, self.expression, self.rotation, self.translation)

    def detach(self) -> FaceParams:
        return self.map(lambda t: t.detach().clone())

    def to(self, device) -> FaceParams:
        return self.map(lambda t: t.to(device))

    def map(self, fn) -> FaceParams:
        return replace(self, **{f.name: fn(v) for f in fields(self) if (v := getattr(self, f.name)) is not None})

    def select(self, index) -> FaceParams:
        """Rows ``index`` of every tensor (a slice or an index tensor)."""
        return self.map(lambda t: t[index])

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}

    @classmethod
    def from_dict(cls, values: dict) -> FaceParams:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in names})
