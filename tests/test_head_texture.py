"""The whole-head texture: the face map kept and padded, the head tile continuous with it and never flat."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.head_texture import HeadTexture
from models.uv_layout import UVLayout
from testing.synthetic import smooth_albedo_map

R = 128


def _face_map() -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    detail = 0.04 * torch.randn(1, 3, R, R, generator=generator)
    return (smooth_albedo_map(1, R, generator) + detail).clamp(0, 1)


def _vertex_uvs(uvs, faces, faces_uv, vertices):
    """Mean UV (N, 2) of each vertex's copies among the given triangles."""
    sums = torch.zeros(int(faces.max()) + 1, 2).index_add_(0, faces.flatten(), uvs[faces_uv.flatten()])
    counts = torch.zeros(len(sums)).index_add_(0, faces.flatten(), torch.ones(faces.numel()))
    return sums[vertices] / counts[vertices, None]


def _sample(atlas, uv):
    """Atlas colours (N, 3) at atlas UVs (N, 2) (v up)."""
    grid = torch.stack([2 * uv[:, 0] - 1, 1 - 2 * uv[:, 1]], -1)[None, :, None]
    return F.grid_sample(atlas, grid, mode="bilinear", align_corners=False)[0, :, :, 0].T


def test_face_tile_is_the_map_and_is_padded_past_its_islands(ict_model):
    texture = HeadTexture(ict_model, R)
    face_map = _face_map()
    noisy_outside = face_map.clone()
    mask = UVLayout(ict_model, R).mask[None].bool().expand_as(face_map)
    noisy_outside[~mask] = torch.rand(int((~mask).sum()), generator=torch.Generator().manual_seed(1))
    atlas = texture(noisy_outside)
    assert atlas.shape == (1, 3, R, 2 * R) and texture.tiles == 2
    face_tile = atlas[..., :R]
    torch.testing.assert_close(face_tile[mask], noisy_outside[mask].clamp(0, 1))
    # outside the islands: a smooth continuation of the map, none of the noise that was there
    outside = face_tile[~mask].view(3, -1)
    assert (outside - face_map[~mask].view(3, -1)).abs().mean() < 0.1
    assert (outside - noisy_outside[~mask].view(3, -1)).abs().mean() > 0.15
    torch.testing.assert_close(texture(noisy_outside), atlas)  # deterministic


def test_flat_parts_of_the_face_map_get_the_skin_grain(ict_model):
    """Where the map is flatter than skin (a smooth continuation), the face tile adds the grain, at most about
    a grey level of [0, 1] per hundred; where it has detail, it is left as it is."""
    texture = HeadTexture(ict_model, R)
    face_map = _face_map()
    flat = torch.zeros(1, 1, R, R, dtype=torch.bool)
    flat[..., R // 2 :, :] = True
    smooth = torch.where(flat, face_map.mean((-1, -2), keepdim=True), face_map)
    face_tile = texture(smooth)[..., :R]
    mask = UVLayout(ict_model, R).mask[None].bool()
    inside_flat = (flat & mask)[0, 0]
    inside_flat[R // 2 : R // 2 + 3] = False  # the 5x5 window of the border rows sees the detail above
    added = (face_tile - smooth)[0][:, inside_flat]
    assert 0.001 < added.std() < 0.03
    detailed = (~flat & mask)[0, 0]
    detailed[R // 2 - 3 :] = False
    torch.testing.assert_close(face_tile[0][:, detailed], smooth[0][:, detailed])


def test_a_map_smooth_everywhere_still_gets_grain_everywhere(ict_model):
    """A small, blurred face's map has almost no grain to copy (0326 of the shared photos: 0.7 grey levels):
    the atlas still has no texel whose 5x5 neighbourhood is flat to half a grey level (texture_asset's measure)."""
    from benchmarks.texture_asset import flat_fill_share

    texture = HeadTexture(ict_model, R)
    face_map = F.avg_pool2d(_face_map(), 9, 1, 4, count_include_pad=False)
    face_map = face_map + 0.002 * torch.randn(face_map.shape, generator=torch.Generator().manual_seed(3))
    atlas = texture(face_map)
    used = torch.cat([UVLayout(ict_model, R).mask[0].bool(), texture.head_mask[0, 0].bool()], 1)
    assert flat_fill_share(atlas[0], used) == 0


def test_head_tile_continues_the_face_across_the_border_and_is_never_flat(ict_model):
    texture = HeadTexture(ict_model, R)
    atlas = texture(_face_map())
    uvs, faces, faces_uv = ict_model.uvs, ict_model.head_faces, ict_model.head_faces_uv
    in_head = uvs[faces_uv][..., 0].mean(1) > 1
    border = torch.as_tensor(sorted(set(faces[in_head].flatten().tolist()) & set(ict_model.faces.flatten().tolist())))
    assert len(border) > 50
    on_face = _vertex_uvs(uvs, ict_model.faces, ict_model.faces_uv, border)
    on_head = _vertex_uvs(uvs, faces[in_head], faces_uv[in_head], border)
    tiles = torch.tensor([2.0, 1.0])
    face_side, head_side = _sample(atlas, on_face / tiles), _sample(atlas, on_head / tiles)
    difference = (face_side - head_side).abs().mean()
    shuffled = (face_side - head_side[torch.randperm(len(border))]).abs().mean()
    assert difference < 0.05 and difference < 0.5 * shuffled, (difference, shuffled)
    # the head tile: every covered texel has local variation (the skin's grain), none is flat fill
    head = atlas[..., R:]
    covered = texture.head_mask[0, 0].bool()
    local_std = (F.avg_pool2d(head**2, 5, 1, 2, count_include_pad=False)
                 - F.avg_pool2d(head, 5, 1, 2, count_include_pad=False) ** 2).clamp_min(0).sqrt()
    assert (local_std.amax(1)[0][covered] > 1e-3).all()
    assert covered.float().mean() > 0.3


def test_uvapm_support_marks_where_the_model_varies(tmp_path, ict_model):
    from models.uv_albedo_model import UVAlbedoModel
    from testing.small_models import write_small_models

    path, _ = write_small_models(tmp_path, ict_model.uv_layout_id)
    model = UVAlbedoModel.from_file(path)
    support = model.support()
    assert support.shape == (1, 1, model.resolution, model.resolution)
    frozen = torch.zeros(model.resolution, model.resolution, dtype=torch.bool)
    frozen[:, : model.resolution // 4] = True  # the model holds only its mean there
    model.basis[:, :, frozen.flatten()] = 0
    support = model.support()[0, 0]
    assert (support[frozen] == 0).all()
    assert support[~frozen].mean() > 0.5
