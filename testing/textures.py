"""Full UV textures of real photos, to dress synthetic heads with real-looking skin, eyes, brows and lips.

:func:`photo_textures` fits stage 1 to each photo and unwraps it without a
skin mask (everything the photo shows of the face region, features
included; mirrored and inpainted where unseen), at 512x512. The renders of
the benchmarks and of ``scripts/register_facemesh.py`` need them because
landmark detectors look for eyes, brows and lips: a skin-only texture
would not be found the way a photo is.
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

__all__ = ["photo_textures"]


def photo_textures(face_model: FaceModel, photos: list[Path], dense_points: SurfacePoints | None = None,
                   resolution: int = 512, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """(3, R, R) full unwrapped texture of each photo with a face (photos without one are left out)."""
    preprocessor = Preprocessor(PreprocessConfig(visualise=False, device=str(device)))
    fitter = ShapeFitter(face_model, ShapeFitConfig(), dense_points=dense_points)
    layout = UVLayout(face_model.cpu(), resolution).to(device)
    face_model.to(device)
    textures = []
    for photo in photos:
        image = read_image(photo)
        try:
            (face, *_) = preprocessor(image, source=str(photo))
        except PreprocessError:
            continue
        batch = FaceBatch.from_faces(["texture"], [face], [image], resolution, device)
        state = fitter(batch, FitState())
        textures.append(unwrap_texture(face_model, state.params, batch.detail_image, None, layout).filled[0].cpu())
    return textures
