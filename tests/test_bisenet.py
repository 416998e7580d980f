"""BiSeNet face parsing: the official checkpoint's key layout, strict loading, mask rules."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from fitting.preprocess.masks import FaceParser, parsing_masks
from models.networks.bisenet import BISENET_CLASSES, BiSeNet, load_bisenet
from utils.errors import FileFormatError

# face-parsing.PyTorch's model.py, written out independently of our module tree: (name, in, out, kernel) of every
# ConvBNReLU ("<name>.conv.weight" + "<name>.bn.*") and every bare conv ("<name>.weight").
_CONV_BN = [
    ("cp.arm16.conv", 256, 128, 3), ("cp.arm32.conv", 512, 128, 3),
    ("cp.conv_head32", 128, 128, 3), ("cp.conv_head16", 128, 128, 3), ("cp.conv_avg", 512, 128, 1),
    ("ffm.convblk", 256, 256, 1),
    ("conv_out.conv", 256, 256, 3), ("conv_out16.conv", 128, 64, 3), ("conv_out32.conv", 128, 64, 3),
]
_BARE_CONV = [
    ("cp.arm16.conv_atten", 128, 128, 1), ("cp.arm32.conv_atten", 128, 128, 1),
    ("ffm.conv1", 256, 64, 1), ("ffm.conv2", 64, 256, 1),
    ("conv_out.conv_out", 256, 19, 1), ("conv_out16.conv_out", 64, 19, 1), ("conv_out32.conv_out", 64, 19, 1),
]
_BARE_BN = [("cp.arm16.bn_atten", 128), ("cp.arm32.bn_atten", 128)]


def _bn(prefix: str, channels: int, with_counter: bool) -> dict[str, torch.Tensor]:
    out = {
        f"{prefix}.weight": torch.rand(channels) + 0.5, f"{prefix}.bias": torch.randn(channels),
        f"{prefix}.running_mean": torch.randn(channels) * 0.1, f"{prefix}.running_var": torch.rand(channels) + 0.5,
    }
    if with_counter:
        out[f"{prefix}.num_batches_tracked"] = torch.tensor(1000)
    return out


def official_layout_state_dict(with_counter: bool = True) -> dict[str, torch.Tensor]:
    """Random weights under the key names and shapes of 79999_iter.pth.

    The backbone is torchvision's ResNet-18 layout without ``fc`` (the
    reference loads resnet18-5c106cde.pth into it), under ``cp.resnet.``.
    """
    state = {}
    for key, value in torchvision.models.resnet18().state_dict().items():
        if key.startswith("fc."):
            continue
        if key.endswith("num_batches_tracked"):
            if with_counter:
                state["cp.resnet." + key] = torch.tensor(1000)
            continue
        state["cp.resnet." + key] = torch.randn_like(value) * 0.05 if value.dtype.is_floating_point else value
    for name, cin, cout, k in _CONV_BN:
        state[f"{name}.conv.weight"] = torch.randn(cout, cin, k, k) * 0.05
        state.update(_bn(f"{name}.bn", cout, with_counter))
    for name, cin, cout, k in _BARE_CONV:
        state[f"{name}.weight"] = torch.randn(cout, cin, k, k) * 0.05
    for name, channels in _BARE_BN:
        state.update(_bn(name, channels, with_counter))
    return state


def test_official_key_layout_loads_strictly(tmp_path):
    state = official_layout_state_dict()
    path = tmp_path / "79999_iter.pth"
    torch.save(state, path)
    net = load_bisenet(path)
    loaded = net.state_dict()
    assert set(loaded) == set(state)
    for key, value in state.items():
        torch.testing.assert_close(loaded[key], value, msg=key)
    assert not net.training
    with torch.no_grad():
        logits = net(torch.randn(1, 3, 128, 128))
        main, aux8, aux16 = net(torch.randn(1, 3, 128, 128), with_aux=True)
    assert logits.shape == main.shape == aux8.shape == aux16.shape == (1, len(BISENET_CLASSES), 128, 128)


def test_checkpoint_without_batchnorm_counters_loads(tmp_path):
    path = tmp_path / "old.pth"
    torch.save(official_layout_state_dict(with_counter=False), path)
    load_bisenet(path)


def test_wrong_layouts_give_one_line_errors(tmp_path):
    state = official_layout_state_dict()
    prefixed = tmp_path / "dataparallel.pth"
    torch.save({"module." + k: v for k, v in state.items()}, prefixed)
    with pytest.raises(FileFormatError, match=r"dataparallel.pth: not the face-parsing BiSeNet.*missing keys"):
        load_bisenet(prefixed)

    backbone_only = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), backbone_only)
    with pytest.raises(FileFormatError, match=r"resnet18.pth: .*unexpected keys"):
        load_bisenet(backbone_only)

    other_classes = dict(state, **{"conv_out.conv_out.weight": torch.zeros(11, 256, 1, 1)})
    torch.save(other_classes, tmp_path / "eleven.pth")
    with pytest.raises(FileFormatError, match=r"conv_out.conv_out.weight.*\(11, 256, 1, 1\)"):
        load_bisenet(tmp_path / "eleven.pth")

    (tmp_path / "cut.pth").write_bytes((tmp_path / "eleven.pth").read_bytes()[:1000])
    with pytest.raises(FileFormatError, match="cut.pth: corrupt or truncated") as info:
        load_bisenet(tmp_path / "cut.pth")
    assert "\n" not in str(info.value)


def test_our_module_tree_matches_the_independent_layout():
    ours = {k: tuple(v.shape) for k, v in BiSeNet().state_dict().items()}
    official = {k: tuple(v.shape) for k, v in official_layout_state_dict().items()}
    assert ours == official


def test_parsing_mask_rules():
    # One column per class: label k in column k.
    labels = np.tile(np.arange(19), (19, 1))
    skin, parse = parsing_masks(labels, 19)
    assert set(np.flatnonzero(skin[0] > 0.5)) == {1, 10}
    # Reference: face {1,2,3,4,5,10,11,12,13} minus mouth 11 and eyes 4, 5.
    assert set(np.flatnonzero(parse[0] > 0.5)) == {1, 2, 3, 10, 12, 13}


def test_face_parser_runs_on_a_crop(tmp_path):
    path = tmp_path / "79999_iter.pth"
    torch.save(official_layout_state_dict(), path)
    parser = FaceParser(path)
    labels = parser(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    assert labels.shape == (64, 64) and labels.min() >= 0 and labels.max() < 19
