"""Fuzz the loaders of untrusted files with Hypothesis (run by hand, not in CI).

    python -m tests.robustness.fuzz_loaders [--examples 400] [--seconds 60] [--only image,npz] [--save DIR]

Every loader must either return or raise :class:`~utils.errors.FileFormatError`
(a one-line reason) for any bytes: mutated valid files (truncated, bytes
flipped or inserted, header fields overwritten) and random data. Anything
else (another exception, a hang over ``--slow`` seconds) is a crash; the
script prints one line per distinct crash (exception type and message, the
loader's innermost frame of ours) with the number of inputs that hit it, and
exits with 1 if it found any.

Targets: ``image`` (:func:`utils.image_io.read_image` on JPEG, PNG, 16-bit
and palette PNG, GIF, WebP, BMP, TIFF), ``npz`` (:func:`utils.safe_load.load_npz`
and the UV albedo model loader), ``pt`` (:func:`utils.safe_load.load_torch`,
the processed-face and detail-generator loaders), ``pkl``
(:func:`utils.safe_load.load_restricted_pickle`, the paper's UVAPM loader),
``mat`` (:func:`utils.safe_load.load_mat` and the BFM converter).
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import pickle
import shutil
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import scipy.io
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir
from PIL import Image

from assets.matlab_models import convert_bfm
from fitting.structures import ProcessedFace
from models.config import DetailGeneratorConfig
from models.detail_generator import (
    DetailVAE,
    detail_generator_checkpoint,
    load_detail_checkpoint,
)
from models.uv_albedo_model import load_uv_albedo_model
from utils.errors import FileFormatError
from utils.image_io import read_image
from utils.safe_load import load_mat, load_npz, load_restricted_pickle, load_torch

REPO = Path(__file__).resolve().parents[2]
#: Inputs are written here (loaders take paths); removed at the end.
SCRATCH = Path(tempfile.gettempdir()) / f"uvapm-fuzz-{os.getpid()}"


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _image_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (24, 32, 3), np.uint8))
    frames = [Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)) for _ in range(2)]
    return [
        _encode(rgb, "JPEG"), _encode(rgb, "JPEG", progressive=True), _encode(rgb, "PNG"),
        _encode(Image.fromarray((rng.integers(0, 65535, (20, 20))).astype(np.uint16)), "PNG"),
        _encode(rgb.quantize(16), "PNG"), _encode(rgb.convert("CMYK"), "JPEG"), _encode(rgb.convert("LA"), "PNG"),
        _encode(frames[0], "GIF", save_all=True, append_images=frames[1:]),
        _encode(frames[0], "WEBP", save_all=True, append_images=frames[1:]), _encode(rgb, "BMP"),
        _encode(rgb, "TIFF"), _encode(Image.fromarray(rng.random((8, 8)).astype(np.float32)), "TIFF"),
    ]


def _npz_seeds() -> list[bytes]:
    out = []
    for arrays in ({"mean": np.zeros((3, 4, 4), np.float32), "basis": np.ones((3, 2, 16), np.float32)},
                   {"format_version": np.array(1), "mean": np.full((3, 4, 4), 0.5, np.float32),
                    "basis": np.eye(2, 16, dtype=np.float32)[None].repeat(3, 0), "std": np.ones((3, 2), np.float32),
                    "explained_variance_ratio": np.full((3, 2), 0.5, np.float32), "resolution": np.array(4),
                    "uv_layout_id": np.array("abc"), "num_maps": np.array(10)}):
        for save in (np.savez, np.savez_compressed):
            buffer = io.BytesIO()
            save(buffer, **arrays)
            out.append(buffer.getvalue())
    return out


def _pt_seeds() -> list[bytes]:
    tiny = DetailVAE(DetailGeneratorConfig(resolution=16, channels=1, latent_dim=2, latent_grid=1, base_channels=2,
                                           max_channels=4,
                                           low_pass_resolution=8))
    processed = {"image": torch.zeros(1, 3, 224, 224), "info": {"source": "x", "format_version": "1"},
                 "landmarks": torch.zeros(1, 68, 2)}
    out = []
    for obj in (detail_generator_checkpoint(tiny), processed, {"a": torch.arange(6).reshape(2, 3)}, [1, 2.0, "x"]):
        buffer = io.BytesIO()
        torch.save(obj, buffer)
        out.append(buffer.getvalue())
    return out


def _pkl_seeds() -> list[bytes]:
    model = {c: {"mean": np.zeros(16, np.float32), "base": np.ones((16, 2), np.float32)} for c in "rgb"}
    return [pickle.dumps(model, protocol=p) for p in (2, 4, 5)] + [pickle.dumps({"a": [1, (2, 3)]}, protocol=0)]


def _mat_seeds() -> list[bytes]:
    out = []
    arrays = {"lm": np.zeros((68, 3)), "meanshape": np.zeros((1, 9)), "tri": np.ones((1, 3))}
    for content, fmt in ((arrays, "4"), (arrays, "5"), ({**arrays, "cell": np.array([[np.zeros(2)]], dtype=object),
                                                         "text": "abc"}, "5")):
        buffer = io.BytesIO()
        scipy.io.savemat(buffer, content, format=fmt, do_compression=fmt == "5")
        out.append(buffer.getvalue())
    return out


def _through_file(loader, suffix: str):
    """A loader of bytes: writes them to a file with ``suffix`` in :data:`SCRATCH` and calls ``loader(path)``."""

    def load(data: bytes):
        path = SCRATCH / f"input{suffix}"
        path.write_bytes(data)
        return loader(path)

    return load


TARGETS = {
    "image": (_image_seeds, [("read_image", _through_file(read_image, ".png"))]),
    "npz": (_npz_seeds, [("load_npz", _through_file(load_npz, ".npz")),
                         ("load_uv_albedo_model", _through_file(load_uv_albedo_model, ".npz"))]),
    "pt": (_pt_seeds, [("load_torch", _through_file(load_torch, ".pt")),
                       ("ProcessedFace.load", _through_file(ProcessedFace.load, ".pt")),
                       ("load_detail_checkpoint", _through_file(load_detail_checkpoint, ".pt"))]),
    "pkl": (_pkl_seeds, [("load_restricted_pickle", _through_file(load_restricted_pickle, ".pkl")),
                         ("load_uv_albedo_model", _through_file(
                             lambda p: load_uv_albedo_model(p, uv_layout_id="abc"), ".pkl"))]),
    "mat": (_mat_seeds, [("load_mat", _through_file(lambda p: load_mat(p, {"lm": (68, 3)}), ".mat")),
                         ("convert_bfm", _through_file(convert_bfm, ".mat"))]),
}


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A seed file changed by a few edits, or random bytes."""
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=512))
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete", "duplicate"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            chunk = draw(st.sampled_from([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x80",
                                          b"\xff" * 8]))
            data[at:at + len(chunk)] = chunk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "duplicate":
            data[at:at] = data[at:at + draw(st.integers(1, 256))]
    return bytes(data)


def fuzz(name: str, examples: int, seconds: float, slow: float, save: Path | None = None
         ) -> tuple[int, Counter, Counter]:
    """Run one target; returns (inputs tried, crashes by signature, slow inputs); ``save``: keep their bytes."""
    make_seeds, loaders = TARGETS[name]
    seeds = make_seeds()
    tried, crashes, hangs = 0, Counter(), Counter()
    started = time.monotonic()

    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(mutated(seeds))
    def run(data: bytes) -> None:
        nonlocal tried
        if time.monotonic() - started > seconds:
            return
        tried += 1
        for loader_name, load in loaders:
            begin = time.monotonic()
            try:
                load(data)
            except FileFormatError as err:
                if "\n" in str(err):
                    signature = f"{loader_name}: a reason of several lines: {str(err)[:120]!r}"
                    keep(signature, data)
                    crashes[signature] += 1
            except Exception as err:  # noqa: BLE001 - any other exception is what we are looking for
                frame = next((f for f in reversed(traceback.extract_tb(err.__traceback__))
                              if str(REPO) in f.filename and "fuzz_loaders" not in f.filename), None)
                where = f"{Path(frame.filename).relative_to(REPO)}:{frame.lineno}" if frame else "?"
                signature = f"{loader_name}: {type(err).__name__}: {str(err)[:120]!r} at {where}"
                keep(signature, data)
                crashes[signature] += 1
            if time.monotonic() - begin > slow:
                signature = f"{loader_name}: {time.monotonic() - begin:.0f} s on an input of {len(data)} bytes"
                keep(signature, data)
                hangs[signature] += 1

    def keep(signature: str, data: bytes) -> None:
        if save is not None and signature not in crashes and signature not in hangs:
            save.mkdir(parents=True, exist_ok=True)
            (save / f"{name}_{len(list(save.iterdir())):03d}.bin").write_bytes(data)

    run()
    return tried, crashes, hangs


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=400, help="inputs per target (default 400)")
    parser.add_argument("--seconds", type=float, default=60.0, help="time budget per target (default 60)")
    parser.add_argument("--slow", type=float, default=5.0, help="an input taking longer counts as a hang")
    parser.add_argument("--only", help=f"comma-separated targets among {', '.join(TARGETS)}")
    parser.add_argument("--save", type=Path, help="write each crashing or slow input into this folder")
    args = parser.parse_args(argv)
    SCRATCH.mkdir()
    set_hypothesis_home_dir(SCRATCH / "hypothesis")  # nothing written into the checkout
    logging.disable(logging.WARNING)  # loaders warn about odd but loadable content: not what is counted here
    warnings.simplefilter("ignore")
    names = args.only.split(",") if args.only else list(TARGETS)
    torch.set_num_threads(1)
    try:
        total_tried, total_crashes = _fuzz_all(names, args)
    finally:
        shutil.rmtree(SCRATCH, ignore_errors=True)
    print(f"total: {total_tried} inputs, {total_crashes} distinct crashes")
    return 1 if total_crashes else 0


def _fuzz_all(names: list[str], args: argparse.Namespace) -> tuple[int, int]:
    """Fuzz each target and print its results; returns (inputs tried, distinct crashes) over all."""
    total_tried, total_crashes = 0, 0
    for name in names:
        begin = time.monotonic()
        tried, crashes, hangs = fuzz(name, args.examples, args.seconds, args.slow, args.save)
        total_tried += tried
        total_crashes += len(crashes)
        print(f"{name}: {tried} inputs in {time.monotonic() - begin:.0f} s, {len(crashes)} distinct crashes, "
              f"{sum(hangs.values())} slow inputs (> {args.slow:g} s)", flush=True)
        for signature, count in crashes.most_common():
            print(f"  CRASH x{count} {signature}")
        for signature in hangs:
            print(f"  SLOW {signature}")
    return total_tried, total_crashes


if __name__ == "__main__":
    sys.exit(main())
