"""Synthetic faces with known ground truth, for tests and benchmarks.

:func:`make_synthetic_faces` draws identities and expressions from the face
model's prior, head poses, SH lighting and an albedo map, renders aligned
224x224 images with the reference camera, and returns everything a stage
needs (image, landmarks, masks) with the true parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from fitting.landmark_fit import LandmarkFitter
from fitting.params import FaceParams
from models.camera import PinholeCamera
from models.config import RenderSettings
from models.face_model import FaceModel
from models.head_texture import head_texture_for
from models.renderer import Renderer
from models.shading import sh_ambient_offset
from models.view_rendering import ViewMesh, atlas_mapping

__all__ = ["SyntheticFaces", "make_synthetic_faces", "smooth_albedo_map", "draw_eyes", "rigid_align", "vertex_error_mm"]


@dataclass
class SyntheticFaces:
    """A rendered batch with its truth.

    Attributes:
        image: (B, 3, S, S) render composited on ``background``.
        landmarks: (B, 68, 2) projected landmarks (jaw on the silhouette).
        mask: (B, 1, S, S) rendered face region.
        params: the true parameters.
        albedo_map: (B, 3, R, R) the true UV albedo.
        vertices: (B, V, 3) the true posed vertices.
    """

    image: torch.Tensor
    landmarks: torch.Tensor
    mask: torch.Tensor
    params: FaceParams
    albedo_map: torch.Tensor
    vertices: torch.Tensor


def smooth_albedo_map(batch: int, resolution: int, generator: torch.Generator) -> torch.Tensor:
    """Skin-like UV albedo: a random skin tone with smooth low-frequency variation, (B, 3, R, R)."""
    tone = torch.tensor([0.75, 0.55, 0.45]) * (0.5 + 0.6 * torch.rand(batch, 1, generator=generator))
    tone = tone + 0.05 * torch.randn(batch, 3, generator=generator)
    variation = F.interpolate(torch.randn(batch, 3, 6, 6, generator=generator), size=resolution, mode="bicubic",
                              align_corners=False)
    return (tone[:, :, None, None] * (1 + 0.12 * variation)).clamp(0.02, 1.0)


def make_synthetic_faces(
    face_model: FaceModel,
    batch: int,
    seed: int = 0,
    max_yaw_deg: float = 30.0,
    max_pitch_deg: float = 15.0,
    identity_scale: float = 1.0,
    light_strength: float = 0.3,
    light_jitter: float = 0.05,
    albedo_map: torch.Tensor | None = None,
    background: torch.Tensor | None = None,
    image_size: int = 224,
    yaw_range_deg: tuple[float, float] | None = None,
    head: bool = False,
    light: torch.Tensor | None = None,
    light_colour: tuple[float, float, float] | None = None,
    eyes: bool = False,
    yaw_deg: float | None = None,
) -> SyntheticFaces:
    """Render ``batch`` random faces with known parameters (seeded).

    ``yaw_range_deg`` = (lo, hi) draws |yaw| uniformly in [lo, hi) with a
    random sign instead of within ``max_yaw_deg``. ``head`` renders the whole
    head mesh (the face region textured, the rest with the map continued by
    :class:`~models.head_texture.HeadTexture`) rather than the face region
    the fit uses.

    ``light_strength`` scales a white directional light; ``light_jitter`` is
    the standard deviation of random noise on all 27 SH coefficients (which
    also tints the light); ``light`` (B or 1, 27) replaces both with given SH
    coefficients (the random draws still happen, so the rest of the face is
    the same as without it). ``light_colour`` (R, G, B) then multiplies the
    whole light, its ambient part included: a coloured or dimmer scene.
    ``eyes`` fills the face model's eye openings with stand-in eyes
    (:func:`draw_eyes`), lit by the same light. ``yaw_deg`` replaces the drawn
    yaw (the rest of the face stays the same: one person seen from another side).
    """
    g = torch.Generator().manual_seed(seed)
    device = face_model.mean_shape.device
    Ki, Ke = face_model.num_identity, face_model.num_expression
    lower, upper = face_model.exp_bounds
    identity = torch.randn(batch, Ki, generator=g) * identity_scale
    # Sparse expressions: a few active blendshapes (or Gaussian for unbounded models).
    expression = torch.rand(batch, Ke, generator=g) * (torch.rand(batch, Ke, generator=g) < 0.1)
    if upper == float("inf") or lower == float("-inf"):
        expression = torch.randn(batch, Ke, generator=g) * 0.5
    expression = expression.clamp(lower, upper)
    deg = torch.pi / 180
    pitch = (torch.rand(batch, generator=g) * 2 - 1) * max_pitch_deg * deg
    side = torch.rand(batch, generator=g) * 2 - 1
    if yaw_range_deg is None:
        yaw = side * max_yaw_deg * deg
    else:
        low, high = yaw_range_deg
        yaw = torch.sign(side) * (low + (high - low) * side.abs()) * deg
    if yaw_deg is not None:
        yaw = torch.full_like(yaw, yaw_deg * deg)
    angles = torch.stack([pitch, yaw, (torch.rand(batch, generator=g) * 2 - 1) * 5 * deg], 1)
    translation = torch.randn(batch, 3, generator=g) * torch.tensor([0.01, 0.01, 0.03]) / face_model.metres_per_unit
    gamma = torch.randn(batch, 27, generator=g) * light_jitter  # includes per-channel colour differences
    direction = torch.randn(batch, 3, generator=g) * light_strength
    gamma.view(batch, 3, 9)[:, :, 1:4] += direction[:, None, :]  # the same directional light in R, G, B
    if light is not None:
        gamma = light.to(gamma).expand(batch, 27).clone()
    if light_colour is not None:
        offset = sh_ambient_offset().view(1, 3, 9)
        colour = torch.tensor(light_colour, dtype=gamma.dtype).view(1, 3, 1)
        gamma = ((gamma.view(batch, 3, 9) + offset) * colour - offset).reshape(batch, 27)
    params = FaceParams(identity, expression, angles, translation, gamma).to(device)
    if albedo_map is None:
        albedo_map = smooth_albedo_map(batch, 256, g)
    albedo_map = albedo_map.to(device)

    camera = PinholeCamera(face_model.camera_distance, image_size)
    if head:
        mesh = ViewMesh(face_model.mean_shape, face_model.head_faces, face_model.head_faces_uv, face_model.uvs)
        texture = head_texture_for(face_model, albedo_map.shape[-1]).to(device)(albedo_map)
        uvs, faces_uv = atlas_mapping(mesh, texture[0])
        renderer = Renderer(face_model.head_faces, faces_uv, uvs, camera, RenderSettings(refresh_pixels=0.0)).to(device)
    else:
        texture = albedo_map
        renderer = Renderer.for_face_model(face_model, camera, RenderSettings(refresh_pixels=0.0))
    with torch.no_grad():
        out = params.posed(face_model)
        render = renderer(out.vertices, texture, params.gamma, normals=face_model.vertex_normals(out.vertices))
        if background is None:
            background = torch.full((batch, 3, image_size, image_size), 0.3)
        fitter = LandmarkFitter(face_model, camera)
        landmarks = fitter.project(params, fitter.select_contour(params))
        face_image = render.image
        if eyes:
            face_image = draw_eyes(face_image, landmarks, params)
        image = face_image.clamp(0, 1) * render.mask + background.to(device) * (1 - render.mask)
    return SyntheticFaces(image, landmarks, render.mask, params, albedo_map, out.vertices)


#: Stand-in eyes: the whites' reflectance (pale, slightly warm grey), the iris's (brown) and its radius as a share
#: of the eye's width; the eyes are lit by the light's shading of a normal facing the camera, times the share that
#: reaches into the eye socket.
SCLERA_ALBEDO = (0.78, 0.74, 0.70)
IRIS_ALBEDO = (0.28, 0.17, 0.11)
IRIS_RADIUS = 0.2
EYE_EXPOSURE = 0.85


def draw_eyes(image: torch.Tensor, landmarks: torch.Tensor, params: FaceParams) -> torch.Tensor:
    """Fill the eye openings of a render with stand-in eyes (the face models have no eyeballs).

    Inside each eye's contour of the 68 landmarks (the lids' margins) the pixels get :data:`SCLERA_ALBEDO` with
    an iris disc of :data:`IRIS_ALBEDO` at the contour's centre, shaded by the SH light of a camera-facing normal
    times :data:`EYE_EXPOSURE`.

    Args:
        image: (B, 3, S, S) the render.
        landmarks: (B, 68, 2) projected landmarks in pixels.
        params: the faces' parameters (their SH light).
    """
    import cv2
    import numpy as np

    from models.shading import sh_shading

    B, _, S, _ = image.shape
    out = image.clone()
    ys, xs = torch.meshgrid(torch.arange(S, dtype=torch.float32), torch.arange(S, dtype=torch.float32),
                            indexing="ij")
    forward = torch.tensor([[[0.0, 0.0, 1.0]]], device=image.device).expand(B, 1, 3)
    shading = sh_shading(forward, params.gamma)[:, 0] * EYE_EXPOSURE  # (B, 3)
    for b in range(B):
        points = landmarks[b].detach().cpu().numpy()
        inside = np.zeros((S, S), np.uint8)
        iris = torch.zeros(S, S, dtype=torch.bool)
        for contour in (points[36:42], points[42:48]):
            cv2.fillPoly(inside, [np.round(contour * 4).astype(np.int32)], 1, shift=2)
            centre = contour.mean(0)
            radius = IRIS_RADIUS * float(np.linalg.norm(contour[0] - contour[3]))
            iris |= (xs - float(centre[0])) ** 2 + (ys - float(centre[1])) ** 2 <= radius**2
        hole = torch.from_numpy(inside.astype(bool)).to(image.device)
        albedo = torch.where(iris.to(image.device)[None], torch.tensor(IRIS_ALBEDO, device=image.device)[:, None, None],
                             torch.tensor(SCLERA_ALBEDO, device=image.device)[:, None, None])
        out[b] = torch.where(hole[None], albedo * shading[b][:, None, None], out[b])
    return out


def rigid_align(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Rotate and translate ``source`` (B, N, 3) onto ``target`` (least squares, no scale)."""
    mu_s, mu_t = source.mean(1, keepdim=True), target.mean(1, keepdim=True)
    cov = (target - mu_t).transpose(1, 2) @ (source - mu_s)
    U, _, Vt = torch.linalg.svd(cov)
    d = torch.sign(torch.linalg.det(U @ Vt))
    D = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], -1))
    R = U @ D @ Vt
    return (source - mu_s) @ R.transpose(1, 2) + mu_t


def vertex_error_mm(face_model: FaceModel, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean distance (B,) in millimetres over the face region after rigid alignment."""
    face = face_model.face_vertex_mask
    aligned = rigid_align(predicted[:, face], target[:, face])
    return (aligned - target[:, face]).norm(dim=-1).mean(1) * face_model.metres_per_unit * 1000.0
