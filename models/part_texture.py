"""The texture of the face model's display parts: eyeballs, teeth, gums and tongue, mouth and eye sockets.

The parts (:mod:`models.face_model_format`, ``part_*``) get one texture tile
(3, R, R), the tile after the head atlas's (face | head | parts side by side,
:func:`display_atlas`). The tile is a grid of squares, one per part in the
order of ``part_names``; each part's UVs (its own [0, 1]^2) are placed into its
square, inset so that bilinear sampling never reaches a neighbour.

* **eyeballs**: the sclera's colour with the iris painted at the front, the
  iris rim at :data:`IRIS_UV_RADIUS` around the square's centre (the face-model
  converters project each sclera shell along its axis at that scale): a black
  pupil, the iris colour with radial fibres, a lighter ring around the pupil
  and a darker limbal ring at the rim, blending into the sclera;
* **teeth, gums and tongue, mouth and eye sockets**: flat reflectances
  (:data:`PART_COLOURS`), the mouth's and the eye sockets' darkened for the
  occlusion no viewer renders (the toolkit's renderer and a glTF viewer light
  the inside of a mouth as if it were open sky).

The eye colours are :class:`EyeColours` (a fit's: :func:`fitting.eye_probe.eye_colours`, the standard
sclera and the photo's iris measured against it); without a photo, :data:`DEFAULT_SCLERA` and
:data:`DEFAULT_IRIS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .face_model import FaceModel
from .head_texture import head_texture_for

__all__ = ["EyeColours", "PartTexture", "place_part_uvs", "display_atlas", "display_mesh", "IRIS_UV_RADIUS",
           "IRIS_RADIUS_M", "PART_COLOURS", "DEFAULT_SCLERA", "DEFAULT_IRIS"]

#: Radius of the iris's rim in an eyeball's UV square (its centre at (0.5, 0.5)).
IRIS_UV_RADIUS = 0.2
#: The human iris's radius in metres (a visible iris diameter of about 11.8 mm).
IRIS_RADIUS_M = 0.0059
#: The pupil's radius as a share of the iris's (a 3.5 mm pupil).
PUPIL_SHARE = 0.3
#: Reflectance of the whites of the eyes and of a brown iris when the photo does not show them.
DEFAULT_SCLERA = (0.80, 0.76, 0.72)
DEFAULT_IRIS = (0.30, 0.19, 0.12)
#: Flat reflectances of the other parts (the sockets' with their occlusion baked in).
PART_COLOURS = {
    "teeth": (0.78, 0.74, 0.64),
    "gums_tongue": (0.40, 0.16, 0.16),
    "mouth_socket": (0.20, 0.07, 0.07),
    "eye_sockets": (0.36, 0.18, 0.16),
}
#: Fallback for a part this module has no colour for.
OTHER_PART = (0.5, 0.5, 0.5)
#: Inset of each part's UVs in its grid square, as a share of the square.
SQUARE_INSET = 0.04


@dataclass
class EyeColours:
    """Reflectance of the eyes of B faces.

    Attributes:
        sclera: (B, 3) the whites' RGB in [0, 1].
        iris: (B, 3) the iris's RGB in [0, 1].
    """

    sclera: torch.Tensor
    iris: torch.Tensor

    @classmethod
    def default(cls, batch: int = 1, device=None) -> EyeColours:
        return cls(torch.tensor([DEFAULT_SCLERA], device=device).expand(batch, 3),
                   torch.tensor([DEFAULT_IRIS], device=device).expand(batch, 3))


def _grid_side(count: int) -> int:
    return max(1, math.ceil(math.sqrt(count)))


def _square_origin(index: int, side: int) -> tuple[float, float]:
    """(u, v) of square ``index``'s lower-left corner in the tile (row-major from the top, v up)."""
    row, column = divmod(index, side)
    return column / side, 1 - (row + 1) / side


def place_part_uvs(part_uvs: torch.Tensor, part_faces_uv: torch.Tensor, part_labels: torch.Tensor,
                   num_parts: int) -> torch.Tensor:
    """(Tp, 2) the parts' UVs (each part's own [0, 1]^2) placed in their squares of the parts tile, each UV
    vertex in the part of the faces (Fp, 3) that use it (labels (Fp,) of ``num_parts`` parts)."""
    side = _grid_side(num_parts)
    label = torch.zeros(len(part_uvs), dtype=torch.long, device=part_uvs.device)
    label[part_faces_uv.reshape(-1)] = part_labels.repeat_interleave(3)
    origin = torch.tensor([_square_origin(i, side) for i in range(max(num_parts, 1))], device=part_uvs.device)
    return origin[label] + (SQUARE_INSET + part_uvs * (1 - 2 * SQUARE_INSET)) / side


class PartTexture(nn.Module):
    """The parts' texture tile (see the module docstring).

    Args:
        part_names: the face model's ``part_names``.
        resolution: side R of the tile (the face maps' side, so that the atlas's tiles are square).
    """

    def __init__(self, part_names: list[str], resolution: int):
        super().__init__()
        self.part_names = list(part_names)
        self.resolution = R = resolution
        side = _grid_side(len(self.part_names))
        # per texel: which square, and the position in the square's [0, 1]^2 (v up)
        centres = (torch.arange(R, dtype=torch.float32) + 0.5) / R
        v, u = torch.meshgrid(1 - centres, centres, indexing="ij")
        column, row = (u * side).floor().clamp(max=side - 1), ((1 - v) * side).floor().clamp(max=side - 1)
        square = (row * side + column).long()
        local_u = (u * side - column - SQUARE_INSET) / (1 - 2 * SQUARE_INSET)
        local_v = (v * side - (side - 1 - row) - SQUARE_INSET) / (1 - 2 * SQUARE_INSET)
        self.register_buffer("square", square)  # (R, R)
        self.register_buffer("local", torch.stack([local_u, local_v], -1))  # (R, R, 2)
        flat = torch.tensor([PART_COLOURS.get(name, OTHER_PART) for name in self.part_names] or [OTHER_PART])
        self.register_buffer("flat_colours", flat)  # (P, 3)
        self.eyeball = self.part_names.index("eyeballs") if "eyeballs" in self.part_names else -1
        self.register_buffer("fibres", self._fibres())

    @staticmethod
    def _fibres(count: int = 720) -> torch.Tensor:
        """(count,) the iris fibres' relative brightness around the rim: fixed random-phase sinusoids of 6 to
        60 cycles, standard deviation 1."""
        generator = torch.Generator().manual_seed(0)
        angle = torch.arange(count) * (2 * math.pi / count)
        cycles = torch.arange(6, 61, dtype=torch.float32)
        phases = torch.rand(len(cycles), generator=generator) * 2 * math.pi
        weights = torch.rand(len(cycles), generator=generator) / cycles.sqrt()
        wave = (weights[:, None] * torch.sin(cycles[:, None] * angle + phases[:, None])).sum(0)
        return (wave - wave.mean()) / wave.std()

    def _eye(self, eyes: EyeColours) -> torch.Tensor:
        """(B, 3, R, R) the eyeball's colour at every texel's position in the eyeball square."""
        offset = self.local - 0.5
        r = offset.norm(dim=-1) / IRIS_UV_RADIUS  # 1 at the iris's rim
        angle = torch.atan2(offset[..., 1], offset[..., 0]) % (2 * math.pi)
        fibres = self.fibres[(angle / (2 * math.pi) * len(self.fibres)).long().clamp(max=len(self.fibres) - 1)]
        iris = eyes.iris[:, :, None, None]
        brightness = (1 + 0.18 * fibres * ((r - PUPIL_SHARE) / (1 - PUPIL_SHARE)).clamp(0, 1)
                      + 0.25 * torch.exp(-(((r - 0.5) / 0.08) ** 2))  # the collarette around the pupil
                      - 0.55 * ((r - 0.8) / 0.2).clamp(0, 1) ** 2)  # the limbal ring
        colour = (iris * brightness.clamp_min(0.1)).clamp(0, 1)
        pupil = ((r - PUPIL_SHARE) / 0.04).clamp(0, 1)
        colour = colour * pupil + 0.02 * (1 - pupil)
        sclera = ((r - 1) / 0.06).clamp(0, 1)
        return colour * (1 - sclera) + eyes.sclera[:, :, None, None] * sclera

    def forward(self, eyes: EyeColours) -> torch.Tensor:
        """(B, 3, R, R) the tile for B faces' eye colours."""
        B = eyes.sclera.shape[0]
        tile = self.flat_colours.to(eyes.sclera)[self.square.clamp(max=len(self.flat_colours) - 1)]
        tile = tile.permute(2, 0, 1)[None].expand(B, -1, -1, -1)
        if self.eyeball >= 0:
            tile = torch.where(self.square == self.eyeball, self._eye(eyes), tile)
        return tile.contiguous()


def display_atlas(face_model: FaceModel, face_map: torch.Tensor, eyes: EyeColours | None = None,
                  parts_tile: torch.Tensor | None = None) -> torch.Tensor:
    """(B, 3, R, N * R) the texture of the whole display mesh: the head atlas of face maps (B, 3, R, R)
    (:class:`~models.head_texture.HeadTexture`) and, for a model with display parts, their tile: a given
    ``parts_tile`` (B or 1, 3, r, r) (a fit's ``uv_eyes_mouth.png``, resampled to R), else
    :class:`PartTexture`'s for ``eyes`` (default eye colours without)."""
    R = face_map.shape[-1]
    atlas = head_texture_for(face_model, R).to(face_map.device)(face_map)
    if not face_model.has_parts:
        return atlas
    if atlas.shape[-1] == R:  # the parts' tile is the third: keep a (blank) second one
        atlas = torch.cat([atlas, torch.zeros_like(atlas)], -1)
    if parts_tile is not None:
        parts = resize_tile(parts_tile.to(face_map), R).expand(len(face_map), -1, -1, -1)
    else:
        eyes = eyes or EyeColours.default(len(face_map), face_map.device)
        parts = PartTexture(face_model.part_names, R).to(face_map.device)(eyes)
    return torch.cat([atlas, parts], -1)


def display_mesh(face_model: FaceModel, vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The display mesh's triangles (F, 3), their UV indices (F, 3) and the UVs (T, 2) in the atlas's tiles
    (u in [0, 1] the face, [1, 2] the head, [2, 3] the parts) for display vertices (V + Vp, 3) of
    :meth:`~models.face_model.FaceModel.display_shape` (or (V, 3): no parts)."""
    faces, faces_uv, uvs = face_model.head_faces, face_model.head_faces_uv, face_model.uvs
    if not face_model.has_parts or vertices.shape[-2] == face_model.num_vertices:
        return faces, faces_uv, uvs
    placed = place_part_uvs(face_model.part_uvs, face_model.part_faces_uv, face_model.part_labels,
                            len(face_model.part_names))
    return (torch.cat([faces, face_model.part_faces]), torch.cat([faces_uv, face_model.part_faces_uv + len(uvs)]),
            torch.cat([uvs, placed + torch.tensor([2.0, 0.0], device=uvs.device)]))


def resize_tile(tile: torch.Tensor, resolution: int) -> torch.Tensor:
    """A parts tile (B, 3, r, r) resampled to (B, 3, R, R) (area when shrinking, bilinear when enlarging)."""
    if tile.shape[-1] == resolution:
        return tile
    mode = "area" if tile.shape[-1] > resolution else "bilinear"
    return F.interpolate(tile, size=(resolution, resolution), mode=mode,
                         **({} if mode == "area" else {"align_corners": False}))
