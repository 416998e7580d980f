"""Colour conversions and skin-tone measures against scikit-image and textbook values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.color import rgb2lab

from fitting.metrics import skin_tone
from models.colour import delta_e, individual_typology_angle, srgb_to_lab


def test_srgb_to_lab_matches_scikit_image():
    rgb = torch.rand(200, 3, generator=torch.Generator().manual_seed(0))
    expected = rgb2lab(rgb.numpy()[None].astype(np.float64))[0]
    assert np.abs(srgb_to_lab(rgb).numpy() - expected).max() < 0.02
    assert srgb_to_lab(torch.ones(3)).tolist() == pytest.approx([100.0, 0.0, 0.0], abs=1e-3)


def test_ita_orders_skin_tones_and_delta_e_is_euclidean():
    light, dark = srgb_to_lab(torch.tensor([[0.93, 0.78, 0.70], [0.36, 0.23, 0.16]]))
    assert individual_typology_angle(light) > 41 and individual_typology_angle(dark) < -30
    assert float(delta_e(light, dark)) == pytest.approx(float(np.linalg.norm((light - dark).numpy())))


def test_skin_tone_is_the_median_inside_the_mask():
    image = torch.zeros(2, 3, 8, 8)
    image[0, :, :, :4] = torch.tensor([0.8, 0.6, 0.5])[:, None, None]  # skin on the left half
    image[0, :, :, 4:] = 1.0  # a white background the mask excludes
    image[1] = 0.5
    mask = torch.zeros(2, 1, 8, 8)
    mask[0, :, :, :4] = 1
    tone = skin_tone(image, mask)
    expected = srgb_to_lab(torch.tensor([0.8, 0.6, 0.5]))
    assert [float(tone[k][0]) for k in ("L", "a", "b")] == pytest.approx(expected.tolist(), abs=1e-4)
    assert torch.isnan(tone["ita_deg"][1])  # an empty mask gives NaN, not a number
