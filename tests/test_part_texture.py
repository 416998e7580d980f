"""The display parts' texture (eyeballs, teeth, sockets) and how they render on the ICT head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.lighting import light_preset
from models.part_texture import (
    IRIS_UV_RADIUS,
    PART_COLOURS,
    EyeColours,
    PartTexture,
    display_atlas,
    place_part_uvs,
)
from models.view_rendering import mesh_from_face_model, render_views

NAMES = ["mouth_socket", "eye_sockets", "gums_tongue", "teeth", "eyeballs"]


def _sample(tile: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples (N, 3) of a tile (1, 3, R, R) at UVs (N, 2) (v up)."""
    grid = torch.stack([2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1]], -1)[None, :, None]
    return F.grid_sample(tile, grid, mode="bilinear", align_corners=False)[0, :, :, 0].T


def test_the_eyeball_square_has_pupil_iris_and_sclera_and_the_flat_parts_their_colours():
    texture = PartTexture(NAMES, 256)
    eyes = EyeColours(sclera=torch.tensor([[0.8, 0.75, 0.7]]), iris=torch.tensor([[0.2, 0.35, 0.5]]))
    tile = texture(eyes)
    assert tile.shape == (1, 3, 256, 256)
    # each part's [0, 1]^2 placed in its own square: sample the eyeball's square along a radius
    label = NAMES.index("eyeballs")
    along = torch.linspace(0, 0.45, 45)
    local = torch.stack([0.5 + along, torch.full_like(along, 0.5)], 1)
    uv = place_part_uvs(local, torch.arange(45).view(15, 3), torch.full((15,), label), len(NAMES))
    radius = along / IRIS_UV_RADIUS
    colour = _sample(tile, uv)
    assert colour[radius < 0.2].max() < 0.05  # the pupil
    iris = colour[(radius > 0.4) & (radius < 0.75)].mean(0)
    assert (iris / eyes.iris[0] - 1).abs().max() < 0.25  # the iris's colour, fibres and rings about it
    torch.testing.assert_close(colour[radius > 1.15], eyes.sclera.expand(int((radius > 1.15).sum()), 3))
    # the flat parts: any UV of their square, corners included, samples their colour only
    corners = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 1.0], [1.0, 0.0], [0.5, 0.5], [0.0, 0.0]])
    for name in ("teeth", "gums_tongue", "mouth_socket", "eye_sockets"):
        uv = place_part_uvs(corners, torch.arange(6).view(2, 3), torch.full((2,), NAMES.index(name)), len(NAMES))
        torch.testing.assert_close(_sample(tile, uv), torch.tensor([PART_COLOURS[name]]).expand(6, 3))


def test_the_ict_head_has_eyes_in_its_sockets(ict_model):
    """A frontal render: the eyeballs fill the sockets (without them a viewer shows the background, or the
    inside of the skull, through the lids), each with a round iris of the given colour, level and mirrored
    about the face's middle, in a white of the given colour."""
    face_map = torch.full((1, 3, 128, 128), 0.6)
    eyes = EyeColours(sclera=torch.tensor([[0.1, 0.9, 0.1]]), iris=torch.tensor([[0.1, 0.1, 0.9]]))
    atlas = display_atlas(ict_model, face_map, eyes)[0]
    assert atlas.shape == (3, 128, 3 * 128)
    mesh = mesh_from_face_model(ict_model)
    assert len(mesh.vertices) == ict_model.num_vertices + len(ict_model.part_shape)
    image = render_views(mesh, atlas, [0.0], light_preset("frontal"), shading="albedo", resolution=256)[0]
    rgb = image[:3]
    blue = (image[3] > 0.99) & (rgb[2] > rgb[0] + 0.3) & (rgb[2] > rgb[1] + 0.3)
    green = (image[3] > 0.99) & (rgb[1] > rgb[0] + 0.3) & (rgb[1] > rgb[2] + 0.3)
    ys, xs = torch.nonzero(blue, as_tuple=True)
    centre = 128
    left, right = xs < centre, xs >= centre
    assert left.sum() > 10 and right.sum() > 10 and green.sum() > 20
    assert abs(xs[left].float().mean() + xs[right].float().mean() - 2 * centre) < 4  # mirrored
    assert abs(ys[left].float().mean() - ys[right].float().mean()) < 2  # level
    for side in (left, right):  # round: as wide as high (the lids may cover a little of the top)
        width = xs[side].max() - xs[side].min()
        height = ys[side].max() - ys[side].min()
        assert 0.6 < height / width < 1.2, (width, height)
