"""Loss functions: closed-form values, shapes, error messages and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from fitting.losses import gaussian_prior, landmark_loss, lighting_monochrome_loss, photometric_loss


def test_photometric_loss_closed_form():
    image = torch.zeros(2, 3, 4, 4)
    render = image.clone()
    render[0, :, :, :2] = torch.tensor([3.0, 4.0, 0.0])[:, None, None] / 10  # distance 0.5 on half the pixels
    mask = torch.ones(2, 1, 4, 4)
    loss = photometric_loss(render, image, mask, eps=0.0)
    torch.testing.assert_close(loss, torch.tensor([0.25, 0.0]))
    # the mask weights pixels and the mean is over the mask
    mask[0, :, :, 2:] = 0.0
    torch.testing.assert_close(photometric_loss(render, image, mask, eps=0.0), torch.tensor([0.5, 0.0]))
    # a perfect match costs sqrt(eps); an empty mask costs 0 (the denominator is at least 1)
    torch.testing.assert_close(photometric_loss(image, image, torch.ones(2, 1, 4, 4)), torch.full((2,), 1e-3))
    torch.testing.assert_close(photometric_loss(render, image, torch.zeros(2, 1, 4, 4)), torch.zeros(2))


def test_photometric_loss_batched_equals_per_face():
    render, image = torch.rand(3, 3, 5, 5), torch.rand(3, 3, 5, 5)
    mask = (torch.rand(3, 1, 5, 5) > 0.3).float()
    batched = photometric_loss(render, image, mask)
    single = torch.cat([photometric_loss(render[b : b + 1], image[b : b + 1], mask[b : b + 1]) for b in range(3)])
    torch.testing.assert_close(batched, single)


def test_landmark_loss_closed_form():
    target = torch.zeros(1, 3, 2)
    predicted = torch.tensor([[[3.0, 4.0], [0.0, 0.0], [0.0, 10.0]]])
    weights = torch.tensor([1.0, 1.0, 2.0])
    # (25 * 1 + 0 * 1 + 100 * 2) / 10^2 / 4
    torch.testing.assert_close(landmark_loss(predicted, target, weights, 10.0), torch.tensor([225 / 100 / 4]))
    # per-face weights: a face whose second point is ignored
    per_face = torch.tensor([[1.0, 0.0, 0.0]])
    torch.testing.assert_close(landmark_loss(predicted, target, per_face, 10.0), torch.tensor([25 / 100]))


def test_priors_closed_form():
    torch.testing.assert_close(gaussian_prior(torch.tensor([[1.0, 2.0], [0.0, 0.0]])), torch.tensor([2.5, 0.0]))
    white = torch.randn(2, 9).repeat(1, 3)  # the same SH coefficients in R, G and B
    torch.testing.assert_close(lighting_monochrome_loss(white), torch.zeros(2))
    tinted = torch.zeros(1, 27)
    tinted[0, 0] = 3.0  # red band 0 only: deviations 2, -1, -1 from the mean 1
    torch.testing.assert_close(lighting_monochrome_loss(tinted), torch.tensor([6.0 / 27]))


def test_lighting_loss_with_a_colour_keeps_lights_of_that_colour():
    from models.shading import scale_light_colour

    white = torch.zeros(2, 27)
    white.view(2, 3, 9)[:, :, 1:4] = torch.tensor([0.2, -0.1, 0.3])  # one shape in every channel
    colour = torch.tensor([[1.2, 1.0, 0.8], [1.0, 1.0, 1.0]])
    coloured = scale_light_colour(white, colour)
    torch.testing.assert_close(lighting_monochrome_loss(coloured, colour), torch.zeros(2), atol=1e-10, rtol=0)
    # A white light costs when a colour is asked for, and the colour-free loss is the reference's.
    assert lighting_monochrome_loss(white, colour)[0] > 1e-3
    torch.testing.assert_close(lighting_monochrome_loss(white, torch.ones(2, 3)), lighting_monochrome_loss(white))


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: photometric_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 5), torch.ones(1, 1, 4, 4)),
         r"image: expected the render's shape \(1, 3, 4, 4\), got \(1, 3, 4, 5\)"),
        (lambda: photometric_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4), torch.ones(1, 3, 4, 4)),
         r"mask: expected \(1, 1, 4, 4\), got \(1, 3, 4, 4\)"),
        (lambda: photometric_loss(torch.zeros(3, 4, 4), torch.zeros(3, 4, 4), torch.ones(1, 4, 4)),
         r"render: expected \(B, C, H, W\), got \(3, 4, 4\)"),
        (lambda: lighting_monochrome_loss(torch.zeros(2, 27), torch.ones(1, 3)),
         r"colour: expected \(2, 3\), got \(1, 3\)"),
        (lambda: landmark_loss(torch.zeros(1, 68, 2), torch.zeros(1, 68, 2), torch.ones(5), 224.0),
         r"weights: expected \(68,\) or \(1, 68\), got \(5,\)"),
        (lambda: landmark_loss(torch.zeros(1, 68, 3), torch.zeros(1, 68, 3), torch.ones(68), 224.0),
         r"predicted: expected \(B, L, 2\), got \(1, 68, 3\)"),
        (lambda: gaussian_prior(torch.zeros(5)), r"coeffs: expected \(B, K\), got \(5,\)"),
        (lambda: lighting_monochrome_loss(torch.zeros(2, 9)), r"gamma: expected \(B, 27\), got \(2, 9\)"),
    ],
)
def test_error_messages_name_the_argument_and_shapes(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    render = torch.rand(2, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    image = torch.rand(2, 3, 3, 3, dtype=torch.float64)
    mask = torch.rand(2, 1, 3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda r: photometric_loss(r, image, mask), (render,))
    predicted = torch.randn(2, 5, 2, dtype=torch.float64, requires_grad=True)
    target = torch.randn(2, 5, 2, dtype=torch.float64)
    weights = torch.rand(5, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda p: landmark_loss(p, target, weights, 3.0), (predicted,))
    gamma = torch.randn(2, 27, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lighting_monochrome_loss, (gamma,))
    assert torch.autograd.gradcheck(gaussian_prior, (torch.randn(2, 4, dtype=torch.float64, requires_grad=True),))


def test_photometric_loss_is_smooth_at_a_perfect_match():
    image = torch.rand(1, 3, 2, 2)
    render = image.clone().requires_grad_()
    photometric_loss(render, image, torch.ones(1, 1, 2, 2)).sum().backward()
    assert torch.isfinite(render.grad).all() and render.grad.abs().max() == 0
    assert math.isfinite(float(photometric_loss(render.detach(), image, torch.ones(1, 1, 2, 2))))
