"""The pinhole camera of the reference fitting, in any image size.

The camera sits on the +z axis at ``distance`` (model units) and looks toward
-z. At 224x224 its focal length is 1015 px and its principal point (112, 112);
other image sizes scale both, so a crop rendered at 512 shows the same view.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

__all__ = ["PinholeCamera"]

REFERENCE_SIZE = 224
REFERENCE_FOCAL = 1015.0


@dataclass(frozen=True)
class PinholeCamera:
    """Pinhole camera on the +z axis.

    Attributes:
        distance: camera distance from the model origin, in model units
            (``FaceModel.camera_distance``: 1 m).
        image_size: square image side in pixels.
        focal: focal length in pixels at ``image_size``; None means the
            reference's 1015 px scaled by ``image_size / 224``.
    """

    distance: float
    image_size: int = REFERENCE_SIZE
    focal: float | None = None

    @property
    def focal_px(self) -> float:
        return self.focal if self.focal is not None else REFERENCE_FOCAL * self.image_size / REFERENCE_SIZE

    @property
    def center_px(self) -> float:
        return self.image_size / 2.0

    def resized(self, image_size: int) -> PinholeCamera:
        """The same view at another image size."""
        focal = None if self.focal is None else self.focal * image_size / self.image_size
        return replace(self, image_size=image_size, focal=focal)

    def depth(self, points: torch.Tensor) -> torch.Tensor:
        """Distance along the viewing axis (B, N): ``distance - z``."""
        return self.distance - points[..., 2]

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """World points (B, N, 3) to pixel coordinates (B, N, 2), x right, y down.

        The image centre is at ``image_size / 2`` (pixel centres at +0.5).
        """
        depth = self.depth(points).clamp_min(1e-6)
        f, c = self.focal_px, self.center_px
        u = c + f * points[..., 0] / depth
        v = c - f * points[..., 1] / depth
        return torch.stack([u, v], -1)

    def to_ndc(self, points: torch.Tensor) -> torch.Tensor:
        """World points to pytorch3d NDC (+X left, +Y up) with view depth as z.

        This is what ``pytorch3d.renderer.mesh.rasterize_meshes`` expects for a
        square image of side ``image_size``.
        """
        pixels = self.project(points)
        ndc_xy = 1.0 - 2.0 * pixels / self.image_size
        return torch.cat([ndc_xy, self.depth(points)[..., None]], -1)
