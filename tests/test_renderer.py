"""Renderer: agrees with a plain pytorch3d MeshRenderer, tiling changes
nothing, the cache is exact while the mesh is still, and gradients reach the
vertices, lighting and albedo."""

from __future__ import annotations

import pytest
import torch
from pytorch3d.renderer import (
    AmbientLights,
    HardPhongShader,
    Materials,
    MeshRasterizer,
    MeshRenderer,
    PerspectiveCameras,
    RasterizationSettings,
    TexturesUV,
    TexturesVertex,
)
from pytorch3d.structures import Meshes

from models.camera import PinholeCamera
from models.config import RenderSettings
from models.face_ops import euler_angles_to_matrix
from models.rasterize import rasterize_faces
from models.renderer import Renderer
from models.shading import sh_shading

SIZE = 128


def _smooth_texture(res=64):
    v, u = torch.meshgrid(torch.linspace(0, 1, res), torch.linspace(0, 1, res), indexing="ij")
    return torch.stack([0.5 + 0.4 * torch.sin(6 * u), 0.5 + 0.4 * torch.cos(5 * v), 0.3 + 0.5 * u * v])[None]


@pytest.fixture(scope="module")
def posed(ict_model):
    torch.manual_seed(3)
    rotation = euler_angles_to_matrix(torch.tensor([[0.15, 0.5, -0.05]]))
    out = ict_model(torch.randn(1, 100) * 0.5, torch.rand(1, 53) * 0.3, rotation, torch.tensor([[0.5, -0.3, 1.0]]))
    return out.vertices


def _pytorch3d_render(ict_model, camera, vertices, textures):
    # Our view space is pytorch3d's with x and z mirrored: X_view = -x, Z_view = d - z.
    cameras = PerspectiveCameras(
        focal_length=((camera.focal_px, camera.focal_px),),
        principal_point=((camera.center_px, camera.center_px),),
        image_size=((camera.image_size, camera.image_size),),
        in_ndc=False,
        R=torch.diag(torch.tensor([-1.0, 1.0, -1.0]))[None],
        T=torch.tensor([[0.0, 0.0, camera.distance]]),
    )
    renderer = MeshRenderer(
        MeshRasterizer(cameras, RasterizationSettings(image_size=camera.image_size, bin_size=0)),
        HardPhongShader(
            cameras=cameras,
            lights=AmbientLights(ambient_color=((1.0, 1.0, 1.0),)),
            materials=Materials(
                ambient_color=((1.0, 1.0, 1.0),), diffuse_color=((0, 0, 0),), specular_color=((0, 0, 0),)
            ),
        ),
    )
    mesh = Meshes(verts=vertices, faces=ict_model.faces[None], textures=textures)
    image = renderer(mesh)
    return image[..., :3].permute(0, 3, 1, 2), (image[..., 3:] > 0).permute(0, 3, 1, 2).float()


def test_matches_pytorch3d_mesh_renderer(ict_model, posed):
    camera = PinholeCamera(distance=ict_model.camera_distance, image_size=SIZE)
    renderer = Renderer.for_face_model(ict_model, camera)
    texture = _smooth_texture()
    gamma = torch.randn(1, 27) * 0.2
    ours = renderer(posed, texture, gamma)

    tex_p3d = TexturesUV(maps=texture.permute(0, 2, 3, 1), faces_uvs=ict_model.faces_uv[None],
                         verts_uvs=ict_model.uvs[None], align_corners=False)
    albedo_ref, mask_ref = _pytorch3d_render(ict_model, camera, posed, tex_p3d)
    normals = ict_model.vertex_normals(posed)
    shading_vertex = sh_shading(normals, gamma)
    ours_lit = renderer(posed, texture, gamma, normals=normals)
    shading_ref, _ = _pytorch3d_render(ict_model, camera, posed, TexturesVertex(shading_vertex))

    both = (mask_ref * ours.mask).bool().expand(-1, 3, -1, -1)
    disagree = (mask_ref != ours.mask).float().mean()
    assert disagree < 2e-3  # at most a few edge pixels differ
    assert (ours.albedo - albedo_ref)[both].abs().mean() < 2e-3
    assert (ours.albedo - albedo_ref)[both].abs().max() < 0.05
    assert (ours_lit.shading - shading_ref)[both].abs().max() < 1e-3
    torch.testing.assert_close(ours_lit.image, ours_lit.albedo * ours_lit.shading)


def test_tiling_gives_the_same_rasterisation(ict_model, posed):
    camera = PinholeCamera(distance=ict_model.camera_distance, image_size=SIZE)
    px, depth = camera.project(posed), camera.depth(posed)
    single = rasterize_faces(px, depth, ict_model.faces, SIZE, tiles=1)
    for tiles in (3, 8):
        torch.testing.assert_close(rasterize_faces(px, depth, ict_model.faces, SIZE, tiles=tiles), single)


def test_cache_is_exact_while_still_and_refreshes_when_moved(ict_model, posed):
    camera = PinholeCamera(distance=ict_model.camera_distance, image_size=SIZE)
    renderer = Renderer.for_face_model(ict_model, camera, RenderSettings(refresh_pixels=1.0))
    fresh = Renderer.for_face_model(ict_model, camera, RenderSettings(refresh_pixels=0.0))
    texture, gamma = _smooth_texture(), torch.randn(1, 27) * 0.1
    first = renderer(posed, texture, gamma)
    again = renderer(posed, texture * 0.5, gamma)
    assert renderer.num_rasterizations == 1
    torch.testing.assert_close(again.image, first.albedo * 0.5 * first.shading)
    # a sub-pixel move keeps the cache and matches a fresh render where coverage agrees
    nudged = posed + torch.tensor([0.01, 0.0, 0.0])
    cached = renderer(nudged, texture, gamma)
    assert renderer.num_rasterizations == 1
    exact = fresh(nudged, texture, gamma)
    # Faces are ~1 px here, so many pixels now lie in a neighbouring face; the
    # barycentrics extrapolated on the cached face give nearly the same value.
    same_face = (cached.pix_to_face == exact.pix_to_face)[:, None].expand(-1, 3, -1, -1)
    torch.testing.assert_close(cached.image[same_face], exact.image[same_face], atol=1e-5, rtol=1e-4)
    covered = (cached.mask * exact.mask).bool().expand(-1, 3, -1, -1)
    assert (cached.image - exact.image)[covered].abs().mean() < 1e-3
    # a large move re-rasterises
    renderer(posed + torch.tensor([1.0, 0.0, 0.0]), texture, gamma)
    assert renderer.num_rasterizations == 2


def test_gradients_reach_vertices_through_the_cache():
    # A small two-triangle quad in float64: finite differences through the cached path.
    camera = PinholeCamera(distance=10.0, image_size=24)
    verts = torch.tensor(
        [[[-0.8, -0.7, 0.1], [0.9, -0.8, 0.0], [0.8, 0.9, -0.1], [-0.7, 0.8, 0.2]]], dtype=torch.float64
    )
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    uvs = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    renderer = Renderer(faces, faces, uvs, camera, RenderSettings(refresh_pixels=1e9)).double()
    colors = torch.rand(1, 4, 3, dtype=torch.float64)
    gamma = torch.randn(1, 27, dtype=torch.float64) * 0.3
    renderer(verts, vertex_colors=colors, gamma=gamma)  # fill the cache
    weights = torch.rand(1, 3, 24, 24, dtype=torch.float64)

    def loss(v, c, g):
        return (renderer(v, vertex_colors=c, gamma=g).image * weights).sum()

    assert torch.autograd.gradcheck(loss, (verts.requires_grad_(), colors.requires_grad_(), gamma.requires_grad_()))
    assert renderer.num_rasterizations == 1


def test_gradients_reach_the_albedo_map(ict_model, posed):
    renderer = Renderer.for_face_model(ict_model, PinholeCamera(ict_model.camera_distance, image_size=64))
    texture = _smooth_texture().requires_grad_()
    renderer(posed, texture, torch.zeros(1, 27)).image.sum().backward()
    assert texture.grad.abs().sum() > 0 and torch.isfinite(texture.grad).all()


def test_camera_projection_convention(ict_model):
    camera = PinholeCamera(distance=100.0)
    points = torch.tensor([[[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    px = camera.project(points)[0]
    torch.testing.assert_close(px[0], torch.tensor([112.0, 112.0]))
    assert px[1, 0] > 112 and px[2, 1] < 112  # +x goes right, +y goes up (smaller row)
    torch.testing.assert_close(camera.resized(448).project(points) / 2, camera.project(points))
