"""The 1024-texel albedo (``--uv_1024``): the photo's detail above 512 texels on a synthetic face with a known
1024 map, the 512 map's colours kept, and the outputs a run writes."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fitting.config import UnwrapConfig
from fitting.high_resolution import HIGH_RESOLUTION, HighResolutionAlbedo
from fitting.structures import FaceBatch, FitState
from fitting.unwrap import unwrap_texture
from models.filters import gaussian_blur
from models.uv_layout import UVLayout
from testing.synthetic import make_synthetic_faces, smooth_albedo_map


def _fine_detail_map(seed: int) -> torch.Tensor:
    """A (1, 3, 1024, 1024) albedo: smooth colour plus grain two to four texels across (what a 512 map cannot
    hold)."""
    g = torch.Generator().manual_seed(seed)
    smooth = F.interpolate(smooth_albedo_map(1, 256, g), size=HIGH_RESOLUTION, mode="bilinear",
                           align_corners=False)
    grain = gaussian_blur(torch.randn(1, 1, HIGH_RESOLUTION, HIGH_RESOLUTION, generator=g), 0.8)
    return (smooth + 0.25 * grain / grain.std()).clamp(0, 1)


def _enlarged(albedo: torch.Tensor) -> torch.Tensor:
    return F.interpolate(albedo, size=HIGH_RESOLUTION, mode="bicubic", align_corners=False).clamp(0, 1)


def test_the_1024_map_holds_the_photo_detail_the_512_map_cannot(ict_model):
    truth = _fine_detail_map(3)
    faces = make_synthetic_faces(ict_model, 1, seed=5, max_yaw_deg=10, light_strength=0.2, albedo_map=truth,
                                 image_size=HIGH_RESOLUTION)
    small = lambda x: F.interpolate(x, size=224, mode="area")  # noqa: E731
    batch = FaceBatch.from_tensors(small(faces.image), faces.landmarks * 224 / HIGH_RESOLUTION, small(faces.mask),
                                   detail_image=faces.image)
    map_512 = F.interpolate(truth, size=512, mode="area")  # a perfect 512 map
    state = FitState(params=faces.params, albedo_maps={"stage3": map_512})
    config = UnwrapConfig(outlier_window=0)  # the drawn grain is no occluder
    result = HighResolutionAlbedo(ict_model, config)(batch, state).albedo_1024
    assert result.shape == (1, 3, HIGH_RESOLUTION, HIGH_RESOLUTION)

    layout = UVLayout(ict_model, HIGH_RESOLUTION)
    unwrapped = unwrap_texture(ict_model, faces.params, faces.image, None, layout, config)
    seen = unwrapped.confidence > 0.9
    assert seen.float().mean() > 0.1
    enlarged = _enlarged(map_512)
    rms = lambda m: float(((m - truth) ** 2).mean(1, keepdim=True)[seen].mean().sqrt())  # noqa: E731
    assert rms(result) < 0.8 * rms(enlarged), (rms(result), rms(enlarged))
    # the colours and low frequencies are the 512 map's: only the band above 512 texels is added
    used = layout.mask[None].expand(1, 3, -1, -1) > 0
    low = lambda m: gaussian_blur(m, 2.0)[used]  # noqa: E731
    assert float((low(result) - low(enlarged)).abs().mean()) < 0.1 * float((result - enlarged)[used].abs().mean())
    # the photo's detail comes in only where the photo (or its mirror) shows the face
    unseen = ((unwrapped.filled_confidence == 0) & (layout.mask[None] > 0)).expand(1, 3, -1, -1)
    assert unseen.any()
    torch.testing.assert_close(result[unseen], enlarged[unseen])
