"""Differentiable affine image warp with OpenCV's pixel convention.

``warp_affine`` reproduces ``kornia.geometry.warp_affine(images, M, dsize)``
as the reference calls it (kornia 0.2.0, bilinear, zero padding, sampling
consistent with OpenCV) and ``cv2.warpAffine(image, M, (W_out, H_out))``
with ``INTER_LINEAR`` and a constant 0 border (on float32 photos the two
agree to about 1e-5).

Pixel convention of ``M``: OpenCV's, where the centre of pixel (row i,
column j) is at (x, y) = (j, i). This differs by half a pixel from the
toolkit's convention (centre at (j + 0.5, i + 0.5), see :mod:`models`); it is
kept so that the reference's stored matrices (``processed_data/*.pt``
``M``) and OpenCV produce the same crop. To build ``M`` from points in the
toolkit's convention, subtract 0.5 from the source points and from the
destination points first (see :func:`models.networks.arcface.arcface_alignment`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["warp_affine"]


def _pixel_to_normalised(height: int, width: int, like: torch.Tensor) -> torch.Tensor:
    """(3, 3) matrix from pixel coordinates (centres at integers) to grid_sample's [-1, 1], align_corners=True."""
    return like.new_tensor([[2.0 / (width - 1), 0.0, -1.0], [0.0, 2.0 / (height - 1), -1.0], [0.0, 0.0, 1.0]])


def warp_affine(images: torch.Tensor, matrix: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Warp images by affine matrices: ``out(p) = images(M^-1 p)``.

    Args:
        images: (B, C, H, W) float images.
        matrix: (B, 2, 3) affine matrices mapping input pixel coordinates to
            output pixel coordinates (OpenCV convention, see the module
            docstring).
        size: (height, width) of the output.

    Returns:
        (B, C, height, width) bilinear samples; positions outside the input
        read 0. Differentiable with respect to ``images`` and ``matrix``.
    """
    if images.ndim != 4:
        raise ValueError(f"Expected images of shape (B, C, H, W); got {tuple(images.shape)}")
    if matrix.shape != (images.shape[0], 2, 3):
        raise ValueError(f"Expected matrix of shape ({images.shape[0]}, 2, 3); got {tuple(matrix.shape)}")
    height_in, width_in = images.shape[-2:]
    height_out, width_out = size
    if min(height_in, width_in, height_out, width_out) < 2:
        raise ValueError(f"images and output must be at least 2x2; got {(height_in, width_in)} -> {size}")
    matrix = matrix.to(images.dtype)
    bottom = matrix.new_tensor([0.0, 0.0, 1.0]).expand(matrix.shape[0], 1, 3)
    out_from_in = torch.cat([matrix, bottom], dim=1)  # (B, 3, 3)
    in_from_out = torch.linalg.inv(out_from_in)
    normalise_in = _pixel_to_normalised(height_in, width_in, matrix)
    pixels_out = torch.linalg.inv(_pixel_to_normalised(height_out, width_out, matrix))
    theta = normalise_in @ in_from_out @ pixels_out  # normalised output -> normalised input
    grid = F.affine_grid(theta[:, :2], [images.shape[0], images.shape[1], height_out, width_out], align_corners=True)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
