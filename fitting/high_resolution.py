"""The final albedo at 1024 texels with the photo's own detail at that resolution (``--uv_1024``).

The stages fit and compose the albedo at 512 texels (the detail generator's
resolution). :class:`HighResolutionAlbedo` then re-warps the photo into the
crop at 1024 pixels and unwraps it with the final shape and light into a
1024-texel map exactly as the unwrapping stage does (the same masks,
occluder rejection and mirroring, fused per person for a joint fit). Of that
texture it keeps only the band a 512-texel map cannot hold (the texture
minus its 2x-downsampled and re-enlarged self, colour-balanced to the map),
weighted by the unwrapping's confidence, and adds it to the 512 map enlarged
(bicubic). So the 1024 map has the 512 map's colours and low frequencies
exactly (the albedo fit is not redone) and the photo's finer detail where
the photo shows it. It is as sharp as the photo: a face that covers fewer
than about 500 photo pixels has little above 512 texels to give, and there
the result is close to the enlargement.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.face_model import FaceModel
from models.uv_layout import UVLayout

from .config import UnwrapConfig
from .detail import balanced_to
from .glasses import detect_glasses
from .structures import FaceBatch, FitState
from .unwrap import fuse_unwrapped, unwrap_texture

__all__ = ["HIGH_RESOLUTION", "HighResolutionAlbedo"]

#: Side of the map (texels) and of the photo crop it is unwrapped from (pixels).
HIGH_RESOLUTION = 1024


class HighResolutionAlbedo:
    """Sets ``state.albedo_1024`` (B, 3, 1024, 1024) from the last albedo map and the photo (a
    :class:`~fitting.structures.Stage`; after stage 3, before the evaluation).

    Args:
        face_model: the face model.
        config: the unwrapping settings (masks, occluder rejection, mirroring; its ``resolution`` is not used).
    """

    name = "uv1024"

    def __init__(self, face_model: FaceModel, config: UnwrapConfig | None = None):
        self.model = face_model
        self.config = config or UnwrapConfig()
        device = face_model.mean_shape.device
        self.layout = UVLayout(face_model.cpu(), HIGH_RESOLUTION).to(device)
        face_model.to(device)

    @torch.no_grad()
    def __call__(self, batch: FaceBatch, state: FitState) -> FitState:
        R = HIGH_RESOLUTION
        base = state.albedo_maps.get("stage3", state.albedo_maps.get("stage2"))
        if base is None:  # stage 1 only: the unwrapped texture is the map
            base = state.unwrapped.filled
        base = F.interpolate(base, size=R, mode="bicubic", align_corners=False).clamp(0, 1)
        mask = batch.parse_mask if self.config.mask == "parse" else batch.skin_mask
        image = batch.crops_at(R)
        glasses = detect_glasses(image, batch.dense_landmarks, batch.dense_valid, batch.image.shape[-1],
                                 self.config.glasses)
        unwrapped = unwrap_texture(self.model, state.params, image, mask, self.layout, self.config,
                                   occluders=glasses.mask)
        groups = batch.photo_groups
        if not groups.trivial:
            unwrapped, _ = fuse_unwrapped(unwrapped, groups, self.layout, self.config)
        confidence = unwrapped.filled_confidence
        seen = balanced_to(unwrapped.filled, base, confidence)
        band = seen - F.interpolate(F.avg_pool2d(seen, 2), size=R, mode="bicubic", align_corners=False)
        return state.updated(albedo_1024=(base + confidence * band).clamp(0, 1))
