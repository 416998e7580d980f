"""Loaders of the paper's official networks (Deep3D, ArcFace r50, LPIPS-VGG16).

The licence-restricted checkpoints are not available, so each test builds a
random-weight network, saves it in the official container format and key
layout, loads it back through the toolkit's loader and compares outputs on
real photos. The warp and the ArcFace alignment are checked against OpenCV,
skimage and analytic transforms.
"""

from __future__ import annotations

import math
import warnings

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.transform import SimilarityTransform
from torch import nn

from models.networks.arcface import (
    ARCFACE_TEMPLATE,
    ArcFaceEmbedder,
    IResNet,
    arcface_alignment,
    load_arcface,
    similarity_lstsq,
)
from models.networks.deep3d import Deep3DRegressor, load_deep3d, split_coefficients
from models.networks.image_warp import warp_affine
from models.networks.vgg_perceptual import load_vgg16
from utils.atomic import save_torch, write_bytes
from utils.errors import FileFormatError, MissingAssetError
from utils.image_io import read_image

PHOTOS = ("0001_d3dfr.jpg", "0043_deca.png")
#: A reference ArcFace matrix for a 224 crop (official_formats.md section 4.6).
REFERENCE_M = ((0.584, -0.046, 1.52), (0.046, 0.584, -9.94))


def _square_crop(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return cv2.resize(image[top:top + side, left:left + side], (size, size), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def photos(faces_dir) -> torch.Tensor:
    """(2, 3, 224, 224) real face photos in [0, 1]."""
    crops = [_square_crop(read_image(faces_dir / "single" / name), 224) for name in PHOTOS]
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


def _randomise_normalisation(module: nn.Module, seed: int) -> nn.Module:
    """Give every BatchNorm/PReLU non-default values so a missed key changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, (nn.BatchNorm1d, nn.BatchNorm2d)):
                n = layer.num_features
                layer.weight.copy_(0.5 + torch.rand(n, generator=generator))
                layer.bias.copy_(0.1 * torch.randn(n, generator=generator))
                layer.running_mean.copy_(0.1 * torch.randn(n, generator=generator))
                layer.running_var.copy_(0.5 + torch.rand(n, generator=generator))
            elif isinstance(layer, nn.PReLU):
                layer.weight.copy_(0.5 * torch.rand(layer.weight.shape, generator=generator))
    return module.eval()


def _layout_only(state_dict: dict) -> dict:
    """Same keys and shapes, one shared zero: cheap files for layout errors."""
    zero = torch.zeros(())
    return {key: zero.expand(value.shape) for key, value in state_dict.items()}


_EXECUTED = []


def _record_execution():
    _EXECUTED.append(True)
    return {}


class _CodeRunningPayload:
    """Unpickling this calls ``_record_execution``: a stand-in for a malicious checkpoint."""

    def __reduce__(self):
        return _record_execution, ()


def _assert_refuses_code(load, tmp_path, container):
    path = tmp_path / "malicious.pth"
    save_torch(path, container(_CodeRunningPayload()))
    _EXECUTED.clear()
    with pytest.raises(FileFormatError, match="refused"):
        load(path)
    assert not _EXECUTED
    torch.load(path, weights_only=False)  # control: the payload does run code when trusted
    assert _EXECUTED


# --------------------------------------------------------------------- Deep3D


@pytest.fixture(scope="module")
def deep3d_reference() -> Deep3DRegressor:
    torch.manual_seed(1)
    model = _randomise_normalisation(Deep3DRegressor(), seed=1)
    with torch.no_grad():  # the official heads are trained; random ones give visible outputs
        for head in model.final_layers.modules():
            if isinstance(head, nn.Conv2d):
                head.weight.normal_(0.0, 0.02)
                head.bias.normal_(0.0, 0.1)
    return model


@pytest.fixture(scope="module")
def deep3d_checkpoint(deep3d_reference, tmp_path_factory):
    """``deep3d_model/epoch_latest.pth`` as Deep3DFaceRecon's trainer writes it."""
    optimiser = torch.optim.Adam(deep3d_reference.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.StepLR(optimiser, step_size=10, gamma=0.2)
    path = tmp_path_factory.mktemp("deep3d") / "deep3d_model" / "epoch_latest.pth"
    path.parent.mkdir()
    save_torch(path, {"net_recon": deep3d_reference.state_dict(), "opt_00": optimiser.state_dict(),
                      "sched_00": scheduler.state_dict(), "epoch": 20})
    return path


def test_deep3d_official_key_layout(deep3d_reference):
    state = deep3d_reference.state_dict()
    assert "backbone.layer4.2.bn3.running_var" in state
    assert tuple(state["backbone.conv1.weight"].shape) == (64, 3, 7, 7)
    assert tuple(state["final_layers.0.weight"].shape) == (532, 2048, 1, 1)
    assert tuple(state["final_layers.1.0.weight"].shape) == (45, 2048, 1, 1)
    assert tuple(state["final_layers.6.bias"].shape) == (1,)
    heads = sorted({key.rsplit(".", 1)[0] for key in state if key.startswith("final_layers")})
    assert heads == ["final_layers.0", "final_layers.1.0"] + [f"final_layers.{i}" for i in range(2, 7)]
    assert not any(key.startswith("backbone.fc") for key in state)


def test_deep3d_loads_official_container_and_matches(deep3d_reference, deep3d_checkpoint, photos):
    loaded = load_deep3d(deep3d_checkpoint, device="cpu")
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    with torch.no_grad():
        expected, actual = deep3d_reference(photos), loaded(photos)
    assert actual.shape == (2, 1049)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(actual[0], actual[1], atol=1e-3)  # the two photos differ
    coefficients = split_coefficients(actual)
    assert (coefficients.exp >= 0).all()  # exp head ends with a ReLU


def test_split_coefficients_follows_the_reference_layout():
    vector = torch.arange(2 * 1049, dtype=torch.float32).reshape(2, 1049).requires_grad_()
    parts = split_coefficients(vector)
    bounds = {"id": (0, 532), "exp": (532, 577), "tex": (577, 1016), "angle": (1016, 1019),
              "gamma": (1019, 1046), "trans": (1046, 1049)}
    for name, (start, stop) in bounds.items():
        torch.testing.assert_close(getattr(parts, name), vector[:, start:stop])
    parts.trans[:, 2].sum().backward()
    assert vector.grad[:, 1048].eq(1).all() and vector.grad.sum() == 2
    with pytest.raises(ValueError, match="1049"):
        split_coefficients(torch.zeros(1, 257))


def test_deep3d_missing_file_names_official_location(tmp_path):
    with pytest.raises(MissingAssetError, match="the Deep3D checkpoint is not installed"):
        load_deep3d(tmp_path / "nothing.pth")


def test_deep3d_wrong_layouts_give_clear_errors(deep3d_reference, tmp_path):
    state = _layout_only(deep3d_reference.state_dict())

    plain = tmp_path / "plain.pth"
    save_torch(plain, state)
    with pytest.raises(FileFormatError, match="no 'net_recon' entry") as error:
        load_deep3d(plain)
    assert str(error.value).startswith(str(plain)) and "\n" not in str(error.value)

    bfm = dict(state)  # Deep3DFaceRecon's BFM heads: id 80, exp 64, tex 80
    for index, size in ((0, 80), (2, 80)):
        bfm[f"final_layers.{index}.weight"] = torch.zeros(()).expand(size, 2048, 1, 1)
        bfm[f"final_layers.{index}.bias"] = torch.zeros(()).expand(size)
    bfm["final_layers.1.0.weight"] = torch.zeros(()).expand(64, 2048, 1, 1)
    bfm["final_layers.1.0.bias"] = torch.zeros(()).expand(64)
    path = tmp_path / "bfm.pth"
    save_torch(path, {"net_recon": bfm})
    with pytest.raises(FileFormatError, match=r"'final_layers.0.weight' \(80, 2048, 1, 1\) instead of "
                                              r"\(532, 2048, 1, 1\)"):
        load_deep3d(path)

    imagenet = {k: v for k, v in state.items() if not k.startswith("final_layers")}
    imagenet["backbone.fc.weight"] = torch.zeros(()).expand(1000, 2048)
    path = tmp_path / "imagenet.pth"
    save_torch(path, {"net_recon": imagenet})
    with pytest.raises(FileFormatError, match=r"14 missing keys \('final_layers.0.weight'.*"
                                              r"1 unexpected keys \('backbone.fc.weight'\)"):
        load_deep3d(path)


def test_deep3d_truncated_and_code_running_files_are_refused(deep3d_reference, tmp_path):
    full = tmp_path / "full.pth"
    save_torch(full, {"net_recon": _layout_only(deep3d_reference.state_dict())})
    truncated = tmp_path / "truncated.pth"
    data = full.read_bytes()
    write_bytes(truncated, data[: len(data) // 2])
    with pytest.raises(FileFormatError, match="corrupt or truncated"):
        load_deep3d(truncated)
    _assert_refuses_code(load_deep3d, tmp_path, lambda payload: {"net_recon": payload})


# --------------------------------------------------------------------- warp


def test_warp_affine_matches_opencv_on_a_photo(photos):
    image = photos[:1]
    matrices = (REFERENCE_M, ((1.7, 0.3, -20.3), (-0.25, 1.6, 5.1)))
    for matrix, (height, width) in zip(matrices, ((112, 112), (150, 200))):
        m = np.asarray(matrix, dtype=np.float32)
        expected = cv2.warpAffine(image[0].permute(1, 2, 0).numpy(), m, (width, height), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        actual = warp_affine(image, torch.from_numpy(m)[None], (height, width))[0].permute(1, 2, 0).numpy()
        assert actual.shape == expected.shape
        assert np.abs(actual - expected).max() < 1e-2
        assert np.abs(actual - expected).mean() < 1e-3


def test_warp_affine_integer_translation_is_a_shift(photos):
    matrix = torch.tensor([[[1.0, 0.0, -30.0], [0.0, 1.0, -40.0]]])
    out = warp_affine(photos[:1], matrix, (100, 120))
    torch.testing.assert_close(out, photos[:1, :, 40:140, 30:150], rtol=0, atol=1e-5)


# --------------------------------------------------------------------- ArcFace alignment


def _similarity(scale: float, degrees: float, tx: float, ty: float) -> np.ndarray:
    c, s = scale * math.cos(math.radians(degrees)), scale * math.sin(math.radians(degrees))
    return np.array([[c, -s, tx], [s, c, ty], [0.0, 0.0, 1.0]])


def _landmarks_for_template(crop_to_image: np.ndarray) -> torch.Tensor:
    """(1, 68, 2) toolkit-convention landmarks whose 5-point reduction is the template mapped by ``crop_to_image``."""
    template = np.c_[np.asarray(ARCFACE_TEMPLATE), np.ones(5)]
    five = (template @ crop_to_image.T)[:, :2] + 0.5  # OpenCV -> toolkit pixel convention
    landmarks = np.zeros((68, 2))
    for indices, point in zip(((36, 39), (42, 45), (30,), (48,), (54,)), five):
        landmarks[list(indices)] = point
    return torch.from_numpy(landmarks)[None]


def test_similarity_lstsq_matches_skimage():
    generator = np.random.default_rng(0)
    for trial in range(20):
        source = generator.normal(size=(5, 2)) * 30 + 100
        target = generator.normal(size=(5, 2)) * 20 + 56
        if trial % 2:  # mirrored targets: the best proper similarity, no reflection
            target = source @ np.array([[-0.4, 0.1], [0.1, 0.4]]) + generator.normal(size=(5, 2))
        expected = SimilarityTransform.from_estimate(source, target).params[:2]
        actual = similarity_lstsq(torch.from_numpy(source)[None], torch.from_numpy(target))[0]
        torch.testing.assert_close(actual, torch.from_numpy(expected), rtol=1e-9, atol=1e-9)


def test_similarity_lstsq_degenerate_gives_identity():
    source = torch.full((1, 5, 2), 3.0)
    torch.testing.assert_close(similarity_lstsq(source, torch.rand(5, 2)), torch.eye(2, 3)[None])


def test_arcface_alignment_inverts_a_known_similarity():
    crop_to_image = _similarity(2.1, 12.0, 40.0, 25.0)
    matrix = arcface_alignment(_landmarks_for_template(crop_to_image))
    torch.testing.assert_close(matrix[0], torch.from_numpy(np.linalg.inv(crop_to_image)[:2]), rtol=1e-9, atol=1e-9)


def test_alignment_and_warp_put_landmarks_on_the_template():
    """Blobs drawn at toolkit-convention landmarks land on the template in the warped crop (half-pixel check)."""
    crop_to_image = _similarity(1.8, -8.0, 60.0, 50.0)
    landmarks = _landmarks_for_template(crop_to_image)
    five = torch.stack([landmarks[0, 36], landmarks[0, 42], landmarks[0, 30], landmarks[0, 48], landmarks[0, 54]])
    centres = (torch.arange(224, dtype=torch.float64) + 0.5)  # toolkit pixel centres
    yy, xx = torch.meshgrid(centres, centres, indexing="ij")
    image = sum(torch.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * 2.5**2)) for x, y in five)
    crop = warp_affine(image.expand(1, 3, 224, 224), arcface_alignment(landmarks), (112, 112))[0, 0]
    rows, cols = torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")  # OpenCV coordinates
    for x, y in ARCFACE_TEMPLATE:
        window = ((cols - x) ** 2 + (rows - y) ** 2 < 6**2).double() * crop
        centroid = torch.stack([(window * cols).sum(), (window * rows).sum()]) / window.sum()
        assert torch.linalg.norm(centroid - torch.tensor([x, y], dtype=torch.float64)) < 0.05


def test_arcface_alignment_is_differentiable():
    landmarks = _landmarks_for_template(_similarity(2.0, 5.0, 30.0, 20.0)) + torch.randn(1, 68, 2, dtype=torch.float64)
    assert torch.autograd.gradcheck(arcface_alignment, (landmarks.requires_grad_(),))


# --------------------------------------------------------------------- ArcFace network


@pytest.fixture(scope="module")
def arcface_reference() -> IResNet:
    torch.manual_seed(2)
    return _randomise_normalisation(IResNet(), seed=2)


@pytest.fixture(scope="module")
def arcface_checkpoint(arcface_reference, tmp_path_factory):
    path = tmp_path_factory.mktemp("arcface") / "ms1mv3_arcface_r50_fp16_backbone.pth"
    save_torch(path, arcface_reference.state_dict())
    return path


def test_arcface_official_key_layout(arcface_reference):
    state = arcface_reference.state_dict()
    shapes = {"conv1.weight": (64, 3, 3, 3), "prelu.weight": (64,), "layer1.0.bn1.weight": (64,),
              "layer1.0.downsample.0.weight": (64, 64, 1, 1), "layer3.13.conv2.weight": (256, 256, 3, 3),
              "layer4.2.bn3.running_var": (512,), "bn2.weight": (512,), "fc.weight": (512, 25088),
              "features.weight": (512,), "features.running_var": (512,)}
    for key, shape in shapes.items():
        assert tuple(state[key].shape) == shape, key
    blocks = {key.split(".")[0]: int(key.split(".")[1]) + 1 for key in state if key.startswith("layer")}
    assert blocks == {"layer1": 3, "layer2": 4, "layer3": 14, "layer4": 3}


@pytest.mark.slow
def test_arcface_loads_plain_state_dict_and_matches(arcface_reference, arcface_checkpoint, photos):
    embedder = load_arcface(arcface_checkpoint, device="cpu")
    matrix = torch.tensor(REFERENCE_M).expand(2, 2, 3)
    with torch.no_grad():
        actual = embedder(photos, matrix)
        crops = torch.from_numpy(np.stack([
            cv2.warpAffine(p.permute(1, 2, 0).numpy(), np.asarray(REFERENCE_M, np.float32), (112, 112))
            for p in photos])).permute(0, 3, 1, 2)
        expected = F.normalize(arcface_reference(crops * 2 - 1), dim=-1)
    assert actual.shape == (2, 512)
    torch.testing.assert_close(actual.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert (actual[0] * actual[1]).sum() < 0.999  # different photos, different embeddings


@pytest.mark.slow
def test_arcface_gradients_reach_images_and_landmarks(arcface_reference, photos):
    embedder = ArcFaceEmbedder(arcface_reference).eval()
    images = photos.clone().requires_grad_()
    landmarks = _landmarks_for_template(_similarity(1.0, 3.0, 56.0, 50.0)).float().expand(2, 68, 2).clone()
    landmarks.requires_grad_()
    features = embedder(images, arcface_alignment(landmarks))
    target = F.normalize(torch.randn(2, 512), dim=-1)
    (1 - (features * target).sum(-1)).mean().backward()
    for grad in (images.grad, landmarks.grad):
        assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert all(p.grad is None for p in embedder.parameters())


def test_arcface_layout_errors(arcface_reference, tmp_path):
    state = _layout_only(arcface_reference.state_dict())
    path = tmp_path / "dataparallel.pth"
    save_torch(path, {f"module.{k}": v for k, v in state.items()})
    with pytest.raises(FileFormatError, match=r"not the ArcFace iresnet50 layout: \d+ missing keys \('conv1.weight'"
                                              r".*unexpected keys \('module.conv1.weight'"):
        load_arcface(path)

    r34 = {k: v for k, v in state.items() if not k.startswith(tuple(f"layer3.{i}." for i in range(6, 14)))}
    path = tmp_path / "r34.pth"
    save_torch(path, r34)
    with pytest.raises(FileFormatError, match=r"missing keys \('layer3.6.bn1.weight'"):
        load_arcface(path)

    path = tmp_path / "deep3d_given.pth"
    save_torch(path, {"net_recon": state})
    with pytest.raises(FileFormatError, match="non-tensor entries"):
        load_arcface(path)

    with pytest.raises(MissingAssetError, match="the ArcFace checkpoint is not installed"):
        load_arcface(tmp_path / "absent.pth")


def test_arcface_truncated_and_code_running_files_are_refused(arcface_reference, tmp_path):
    full = tmp_path / "full.pth"
    save_torch(full, _layout_only(arcface_reference.state_dict()))
    data = full.read_bytes()
    truncated = tmp_path / "truncated.pth"
    write_bytes(truncated, data[: len(data) - 100])
    with pytest.raises(FileFormatError, match="corrupt or truncated"):
        load_arcface(truncated)
    _assert_refuses_code(load_arcface, tmp_path, lambda payload: {"conv1.weight": payload})


# --------------------------------------------------------------------- VGG perceptual


class _TinyLPIPS(nn.Module):
    """Stand-in with the StyleGAN2-ADA vgg16.pt call signature: 0-255 images in, (B, F) features out."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, stride=2)

    def forward(self, img: torch.Tensor, resize_images: bool = True, return_lpips: bool = False) -> torch.Tensor:
        if resize_images:
            img = F.interpolate(img, size=(224, 224), mode="area")
        features = self.conv(img / 127.5 - 1)
        if return_lpips:
            features = features / torch.linalg.vector_norm(features, dim=1, keepdim=True).clamp_min(1e-8)
        return features.flatten(1)


class _WrongSignature(nn.Module):
    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return img.flatten(1)


def _save_script(module: nn.Module, path):
    with warnings.catch_warnings():  # torch.jit.script is deprecated, but the official file is TorchScript
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_vgg_perceptual_wraps_the_torchscript(tmp_path, photos):
    torch.manual_seed(3)
    reference = _TinyLPIPS().eval()
    perceptual = load_vgg16(_save_script(reference, tmp_path / "vgg16.pt"), device="cpu")

    a, b = photos[:1], photos[1:]
    with torch.no_grad():
        expected = (reference(a * 255, False, True) - reference(b * 255, False, True)).square().sum()
    torch.testing.assert_close(perceptual(a, b), expected)
    assert perceptual(a, a) == 0 and perceptual(a, b) > 0

    large = F.interpolate(photos, size=(512, 512), mode="bilinear", align_corners=False)
    with torch.no_grad():
        expected_features = reference(F.interpolate(large, size=(256, 256), mode="area") * 255, False, True)
    torch.testing.assert_close(perceptual.features(large), expected_features)

    images = a.clone().requires_grad_()
    perceptual(images, b).backward()
    assert torch.isfinite(images.grad).all() and images.grad.abs().sum() > 0


def test_vgg_loader_errors(tmp_path):
    with pytest.raises(MissingAssetError, match="the VGG16 checkpoint is not installed"):
        load_vgg16(tmp_path / "absent.pt")

    script = _save_script(_TinyLPIPS(), tmp_path / "full.pt")
    truncated = tmp_path / "truncated.pt"
    write_bytes(truncated, script.read_bytes()[:-200])
    with pytest.raises(FileFormatError, match="not a readable TorchScript archive"):
        load_vgg16(truncated)

    state_dict = tmp_path / "state_dict.pt"
    save_torch(state_dict, _TinyLPIPS().state_dict())
    with pytest.raises(FileFormatError, match="not a readable TorchScript archive"):
        load_vgg16(state_dict)

    pickled = tmp_path / "pickled.pt"
    save_torch(pickled, {"x": _CodeRunningPayload()})
    _EXECUTED.clear()
    with pytest.raises(FileFormatError, match="not a readable TorchScript archive"):
        load_vgg16(pickled)
    assert not _EXECUTED

    with pytest.raises(FileFormatError, match=r"lacks arguments \['resize_images', 'return_lpips'\]"):
        load_vgg16(_save_script(_WrongSignature(), tmp_path / "wrong.pt"))


@pytest.mark.slow
def test_deep3d_initialises_hifi3dpp_fits_only(tmp_path):
    """The optional-network loader uses Deep3D for HiFi3D++ only, and its output becomes FaceParams."""
    from fitting.networks import deep3d_initial_params, load_optional_networks

    torch.manual_seed(0)
    regressor = Deep3DRegressor().eval()
    (tmp_path / "deep3d_model").mkdir()
    torch.save({"net_recon": regressor.state_dict(), "epoch": 20}, tmp_path / "deep3d_model" / "epoch_latest.pth")
    ict = load_optional_networks(tmp_path, torch.device("cpu"), face_model="ict")
    assert ict.deep3d is None and ict.status["deep3d"].startswith("skipped")
    hifi = load_optional_networks(tmp_path, torch.device("cpu"), face_model="hifi3dpp")
    assert hifi.deep3d is not None and hifi.status["deep3d"] == "used"
    image = torch.rand(2, 3, 224, 224)
    params = deep3d_initial_params(hifi.deep3d, image, num_expression=45)
    expected = split_coefficients(regressor(image))
    torch.testing.assert_close(params.identity, expected.id)
    torch.testing.assert_close(params.translation, expected.trans)
    assert params.expression.shape == (2, 45) and (params.expression >= 0).all()
    assert params.gamma.shape == (2, 27) and params.angles.shape == (2, 3)
