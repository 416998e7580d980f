"""Full UV textures of real photos, to dress synthetic heads with real-looking skin, eyes, brows and lips.

:func:`photo_textures` fits stage 1 to each photo and unwraps it without a
skin mask (everything the photo shows of the face region, features
included; mirrored and inpainted where unseen), at 512x512. The renders of
the benchmarks and of ``scripts/register_facemesh.py`` need them because
landmark detectors look for eyes, brows and lips: a skin-only texture
would not be found the way a photo is.

Such a texture is an albedo truth only where its photo showed the face
itself: elsewhere it holds the hair over the forehead, the background past
the cheeks, or the inpainting. :func:`photo_albedo_truths` gives each
texture with that mask (the photo's parse mask unwrapped: skin, brows,
nose and lips seen head-on enough, confidence above 0.5).
"""

from __future__ import annotations

from pathlib import Path

import torch

from fitting.config import PreprocessConfig, ShapeFitConfig
from fitting.preprocess.preprocessor import PreprocessError, Preprocessor
from fitting.shape import ShapeFitter
from fitting.structures import FaceBatch, FitState
from fitting.unwrap import unwrap_texture
from models.face_model import FaceModel
from models.surface_points import SurfacePoints
from models.uv_layout import UVLayout
from utils.image_io import read_image

__all__ = ["photo_textures", "photo_albedo_truths"]


def photo_textures(face_model: FaceModel, photos: list[Path], dense_points: SurfacePoints | None = None,
                   resolution: int = 512, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """(3, R, R) full unwrapped texture of each photo with a face (photos without one are left out)."""
    return [texture for texture, _ in photo_albedo_truths(face_model, photos, dense_points, resolution, device)]


def photo_albedo_truths(face_model: FaceModel, photos: list[Path], dense_points: SurfacePoints | None = None,
                        resolution: int = 512, device: torch.device | str = "cpu"
                        ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each photo's full unwrapped texture (3, R, R) and where it is the face's albedo (1, R, R) float, 1 where
    the photo showed the face within its parse mask (see the module docstring); photos without a face are left
    out."""
    preprocessor = Preprocessor(PreprocessConfig(visualise=False, device=str(device)))
    fitter = ShapeFitter(face_model, ShapeFitConfig(), dense_points=dense_points)
    layout = UVLayout(face_model.cpu(), resolution).to(device)
    face_model.to(device)
    truths = []
    for photo in photos:
        image = read_image(photo)
        try:
            (face, *_) = preprocessor(image, source=str(photo))
        except PreprocessError:
            continue
        batch = FaceBatch.from_faces(["texture"], [face], [image], resolution, device)
        state = fitter(batch, FitState())
        texture = unwrap_texture(face_model, state.params, batch.detail_image, None, layout).filled[0]
        face_seen = unwrap_texture(face_model, state.params, batch.detail_image, batch.parse_mask, layout).confidence
        truths.append((texture.cpu(), (face_seen[0] > 0.5).float().cpu()))
    return truths
