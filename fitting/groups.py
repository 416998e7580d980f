"""Photos of one person fitted jointly: which rows of a batch share what.

A :class:`~fitting.structures.FaceBatch` may carry ``groups`` (B,): the
person each photo shows, numbered 0..G-1. The stages then fit one value per
person of the parameters a person has once (stage 1: identity; stage 2: the
UVAPM coefficients; stage 3: the detail latent) and one per photo of the rest
(pose, expression, lighting). Without ``groups`` every photo is its own person,
and every function here reduces to the identity, so single-photo fits are
unchanged.

* :class:`PhotoGroups` maps between per-photo (B, ...) and per-person (G, ...)
  tensors;
* the unwrapping fuses the textures of a person's photos
  (:func:`fitting.unwrap.fuse_unwrapped`), so what one photo hides another
  may show.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["PhotoGroups"]


@dataclass(frozen=True)
class PhotoGroups:
    """The person of each photo of a batch.

    Attributes:
        index: (B,) long, the person of each photo, numbered 0..G-1 in order of first appearance.
    """

    index: torch.Tensor

    @classmethod
    def of(cls, groups: torch.Tensor | None, batch_size: int, device: torch.device | str = "cpu") -> PhotoGroups:
        """The groups of a batch: ``groups`` renumbered 0..G-1, or one person per photo when None."""
        if groups is None:
            return cls(torch.arange(batch_size, device=device))
        groups = torch.as_tensor(groups, device=device).long()
        if groups.shape != (batch_size,):
            raise ValueError(f"groups: expected shape ({batch_size},), got {tuple(groups.shape)}")
        order: dict[int, int] = {}
        return cls(torch.tensor([order.setdefault(v, len(order)) for v in groups.tolist()], device=device))

    @property
    def num_groups(self) -> int:
        return int(self.index.max()) + 1 if self.index.numel() else 0

    @property
    def trivial(self) -> bool:
        """Every photo is its own person (nothing is shared)."""
        return self.num_groups == self.index.numel()

    def members(self, group: int) -> list[int]:
        """The batch rows of person ``group``."""
        return torch.nonzero(self.index == group).flatten().tolist()

    def expand(self, per_group: torch.Tensor) -> torch.Tensor:
        """(G, ...) -> (B, ...): each photo takes its person's value."""
        return per_group[self.index]

    def mean(self, per_photo: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """(B, ...) -> (G, ...): the (``weight`` (B,)-weighted) mean over each person's photos."""
        weight = torch.ones(len(self.index), device=per_photo.device) if weight is None else weight
        weight = weight.to(per_photo).view(-1, *([1] * (per_photo.dim() - 1)))
        shape = (self.num_groups, *per_photo.shape[1:])
        total = per_photo.new_zeros(shape).index_add_(0, self.index, per_photo * weight)
        norm = per_photo.new_zeros((self.num_groups, *([1] * (per_photo.dim() - 1))))
        norm = norm.index_add_(0, self.index, weight.expand(-1, *([1] * (per_photo.dim() - 1))))
        return total / norm.clamp_min(1e-12)
