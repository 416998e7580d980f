"""Per-step cost of the cached renderer against re-rendering with pytorch3d.

A texture-fitting step (forward + backward to the UV map, shape fixed) is
timed three ways on the same ICT face, texture and lighting:

* ``pytorch3d``: a plain pytorch3d mesh renderer (rasteriser + ``TexturesUV``
  + an ambient shader, per-vertex SH shading interpolated with its fragments)
  every step;
* ``ours, re-rasterised``: our renderer with the cache disabled (tiled
  pytorch3d rasterisation every step);
* ``ours, cached``: our renderer reusing its rasterisation (the fast path).

A shape step (vertices move, gradients to the vertices) is timed with the
cache (re-rasterising only when a vertex moved more than 1.5 px).

    python -m benchmarks.bm_renderer [--size 224] [--steps 10] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from assets import face_model_path
from models import FaceModel
from models.camera import PinholeCamera
from models.config import RenderSettings
from models.face_ops import euler_angles_to_matrix
from models.renderer import Renderer
from models.shading import sh_shading

from .common import report


def pytorch3d_renderer(model, camera, device):
    """A plain pytorch3d renderer with the toolkit's camera, returning images and fragments."""
    from pytorch3d.renderer import (
        AmbientLights,
        HardPhongShader,
        Materials,
        MeshRasterizer,
        MeshRendererWithFragments,
        PerspectiveCameras,
        RasterizationSettings,
    )

    cameras = PerspectiveCameras(
        focal_length=((camera.focal_px, camera.focal_px),), principal_point=((camera.center_px, camera.center_px),),
        image_size=((camera.image_size, camera.image_size),), in_ndc=False,
        R=torch.diag(torch.tensor([-1.0, 1.0, -1.0]))[None], T=torch.tensor([[0.0, 0.0, camera.distance]]),
        device=device,
    )
    return MeshRendererWithFragments(
        MeshRasterizer(cameras, RasterizationSettings(image_size=camera.image_size, bin_size=0)),
        HardPhongShader(device=device, cameras=cameras, lights=AmbientLights(device=device),
                        materials=Materials(device=device, diffuse_color=((0, 0, 0),), specular_color=((0, 0, 0),))),
    )


def _time(fn, steps, device) -> float:
    fn()  # warm-up (and cache fill)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - start) / steps


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="3 steps (a smoke run, not a timing)")
    args = parser.parse_args(argv)
    steps = 3 if args.quick else args.steps
    device = torch.device(args.device)
    from pytorch3d.renderer import TexturesUV
    from pytorch3d.structures import Meshes

    model = FaceModel.from_file(face_model_path("ict")).to(device)
    camera = PinholeCamera(model.camera_distance, args.size)
    rotation = euler_angles_to_matrix(torch.tensor([[0.1, 0.4, 0.0]], device=device))
    vertices = model(rotation=rotation).vertices
    normals = model.vertex_normals(vertices)
    gamma = torch.randn(1, 27, device=device) * 0.1
    texture = torch.rand(1, 3, 256, 256, device=device, requires_grad=True)

    p3d = pytorch3d_renderer(model, camera, device)
    shading_vertex = sh_shading(normals, gamma)

    def step_pytorch3d():
        from pytorch3d.ops import interpolate_face_attributes

        mesh = Meshes(vertices, model.faces[None],
                      TexturesUV(texture.permute(0, 2, 3, 1), model.faces_uv[None], model.uvs[None],
                                 align_corners=False))
        images, fragments = p3d(mesh)
        shading = interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords,
                                              shading_vertex[0][model.faces])[..., 0, :]
        (images[..., :3] * shading).sum().backward()

    uncached = Renderer.for_face_model(model, camera, RenderSettings(refresh_pixels=0.0))
    cached = Renderer.for_face_model(model, camera)

    def step(renderer):
        return lambda: renderer(vertices, texture, gamma, normals=normals).image.sum().backward()

    identity = torch.zeros(1, 100, device=device, requires_grad=True)
    shape_renderer = Renderer.for_face_model(model, camera)
    optimizer = torch.optim.Adam([identity], lr=0.02)

    def shape_step():
        optimizer.zero_grad()
        v = model(identity, rotation=rotation).vertices
        shape_renderer(v, texture.detach(), gamma).image.mean().backward()
        optimizer.step()

    t_p3d = _time(step_pytorch3d, steps, device)
    t_uncached = _time(step(uncached), steps, device)
    t_cached = _time(step(cached), steps, device)
    shape_renderer.num_rasterizations = 0
    t_shape = _time(shape_step, steps, device)
    rows = [
        {"path": "pytorch3d MeshRenderer every step", "ms/step": t_p3d * 1e3, "speed-up": 1.0},
        {"path": "ours, re-rasterised every step", "ms/step": t_uncached * 1e3, "speed-up": t_p3d / t_uncached},
        {"path": "ours, cached (texture step)", "ms/step": t_cached * 1e3, "speed-up": t_p3d / t_cached},
        {"path": f"ours, cached (shape step, {shape_renderer.num_rasterizations} re-rasterisations)",
         "ms/step": t_shape * 1e3, "speed-up": t_p3d / t_shape},
    ]
    report("renderer", f"Renderer step time, ICT face ({model.faces.shape[0]} triangles), {args.size}x{args.size}",
           rows, ["path", "ms/step", "speed-up"],
           f"python -m benchmarks.bm_renderer --size {args.size} --steps {steps} --device {args.device}"
           + (" --quick" if args.quick else ""))


if __name__ == "__main__":
    main()
