"""Bad and unusual photos through the "process data" stage (``python -m fitting.preprocess``).

One folder holds every case; one run of the command processes it. Each case
has its expected outcome: a one-line failure whose reason matches a pattern
(listed in failures.tsv and logged as ``ERROR ... <file>: <reason>``), or a
processed face with a property checked on its record. The run goes on past
every failure, exits with 1, and leaves only complete, loadable files.
"""

from __future__ import annotations

import ctypes
import io
import logging
import os
import pathlib
import re
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fitting.config import PreprocessConfig
from fitting.preprocess.command import main
from fitting.preprocess.folder import preprocess_folder
from fitting.structures import ProcessedFace
from tests.robustness.helpers import REPO, assert_outputs_complete, no_traceback, read_failures
from utils.image_io import read_image

FACE = "single/0003_d3dfr.jpg"  # 334x500, one frontal face
GROUP = "multi/0012_faceapijs.jpg"  # six people


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with almost no data (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(
        b"IEND", b"")


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def _jpeg_claiming(width: int, height: int, photo: Image.Image) -> bytes:
    """A real small JPEG whose start-of-frame marker is edited to claim width x height."""
    data = bytearray(_encode(photo, "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _animated(photo: Image.Image, fmt: str) -> bytes:
    noise = Image.fromarray(np.random.default_rng(1).integers(0, 256, (photo.height, photo.width, 3), np.uint8))
    return _encode(photo, fmt, save_all=True, append_images=[noise], duration=100, loop=0)


def _exif_rotated(photo: Image.Image) -> bytes:
    """The photo stored lying on its side, with EXIF orientation 6 (rotate 90 degrees clockwise to display)."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(photo.transpose(Image.Transpose.ROTATE_90), "JPEG", exif=exif.tobytes())


def _tiny_face(photo: np.ndarray) -> bytes:
    """The face shrunk to about 25 px on a 320 px grey canvas."""
    face = Image.fromarray(photo[134:354, 54:275]).resize((30, 30), Image.Resampling.LANCZOS)
    canvas = Image.new("RGB", (320, 320), (128, 128, 128))
    canvas.paste(face, (140, 140))
    return _encode(canvas, "PNG")


def _covered(photo: np.ndarray) -> bytes:
    """Everything below the eyes covered by a black board."""
    covered = photo.copy()
    covered[190:] = 0
    return _encode(Image.fromarray(covered), "JPEG")


def _flat(value: int) -> bytes:
    return _encode(Image.new("RGB", (120, 120), (value,) * 3), "PNG")


def _no_face() -> bytes:
    skimage_data = pytest.importorskip("skimage.data")
    return _encode(Image.fromarray(skimage_data.coffee()).resize((180, 120)), "JPEG")


def _bad_crc(photo: Image.Image) -> bytes:
    data = bytearray(_encode(photo, "PNG"))
    idat = data.index(b"IDAT")
    data[idat + 40] ^= 0xFF
    return bytes(data)


def _gray16(photo: Image.Image) -> bytes:
    gray = np.asarray(photo.convert("L"), np.uint16) * 257
    return _encode(Image.fromarray(gray), "PNG")  # mode I;16


def _rgba(photo: Image.Image) -> bytes:
    rgba = photo.convert("RGBA")
    alpha = np.full((photo.height, photo.width), 255, np.uint8)
    alpha[:, :30] = 0
    rgba.putalpha(Image.fromarray(alpha))
    return _encode(rgba, "PNG")


@dataclass
class Case:
    """A file of the corpus and its expected outcome.

    Attributes:
        name: file name in the folder (str or bytes for names that are not UTF-8).
        content: builds the file's bytes from the face photo (PIL image) and its array.
        fails: pattern the failure reason must match, or None when the face must be processed.
        check: for processed faces, a property of the record (and the source photo array).
    """

    name: str | bytes
    content: Callable | None
    fails: str | None = None
    check: Callable | None = None

    @property
    def key(self) -> str:
        return os.fsdecode(self.name)


def _is_grey(record, _):
    image = record.image[0]
    return float((image[0] - image[1]).abs().max()) < 0.02 and float((image[1] - image[2]).abs().max()) < 0.02


def _colours_kept(record, photo):
    # The crop's mean colour is the photo's skin tone, not inverted or shifted (CMYK, palette, alpha).
    skin = record.skin_mask[0, 0] > 0.5
    mean = record.image[0][:, skin].mean(1)
    return bool(mean[0] > mean[2]) and 0.25 < float(mean.mean()) < 0.9


def _upright(record, photo):
    # The EXIF rotation was applied: the photo's upright size, eyes above the mouth in photo pixels.
    lm = record.landmarks_original[0]
    return record.original_size.tolist() == list(photo.shape[:2]) and bool(lm[36:48, 1].max() < lm[48:68, 1].min())


def _outside_is_not_skin(record, _):
    # Crop pixels that map outside the photo are never skin.
    inverse = record.inverse_transform[0].double()
    ys, xs = torch.meshgrid(torch.arange(224.0) + 0.5, torch.arange(224.0) + 0.5, indexing="ij")
    photo_x = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    outside = photo_x < -1.0
    return bool(outside.any()) and float(record.skin_mask[0, 0][outside].max()) == 0.0


def _any(record, _):
    return record.image.shape == (1, 3, 224, 224)


#: Pillow's own limit (89 megapixels, a warning that read_image makes an error) comes first; ours (max_pixels)
#: applies when lower.
_TOO_LARGE = r"(image is \d+x\d+ pixels, more than the limit of 100,000,000|refused as a decompression bomb)"

CASES = [
    Case("zero_bytes.jpg", lambda p, a: b"", r"empty file \(0 bytes\)"),
    Case("truncated.jpg", lambda p, a: _encode(p, "JPEG")[:6000], r"corrupt or truncated image \(image file is "
                                                                       r"truncated"),
    Case("truncated.png", lambda p, a: _encode(p, "PNG")[:20000], r"corrupt or truncated image"),
    Case("bad_crc.png", lambda p, a: _bad_crc(p), r"corrupt or truncated image"),
    Case("truncated.gif", lambda p, a: _encode(p, "GIF")[:3000], r"corrupt or truncated image"),
    Case("text_named.jpg", lambda p, a: b"Dear diary, today I took no photo.\n", r"not a recognised image format"),
    Case("png_bomb.png", lambda p, a: _png_header(100_000, 100_000),
         _TOO_LARGE),
    Case("huge_20000.png", lambda p, a: _encode(Image.new("1", (20_000, 20_000)), "PNG"), _TOO_LARGE),
    Case("jpeg_claims_60000.jpg", lambda p, a: _jpeg_claiming(60_000, 60_000, p), _TOO_LARGE),
    Case("one_pixel.png", lambda p, a: _encode(Image.new("RGB", (1, 1)), "PNG"),
         r"image is 1x1 pixels, too small to contain a face \(the smallest detectable is 20 px\)"),
    Case("strip_4000x10.png", lambda p, a: _encode(Image.new("RGB", (4000, 10)), "PNG"), r"image is 4000x10 pixels"),
    Case("all_black.png", lambda p, a: _flat(0), r"no face found"),
    Case("all_white.png", lambda p, a: _flat(255), r"no face found"),
    Case("no_face_coffee.jpg", lambda p, a: _no_face(), r"no face found"),
    Case("tiny_face.png", lambda p, a: _tiny_face(a), r"face too small \(\d+ px, the minimum is 40 px"),
    Case("mostly_covered.jpg", lambda p, a: _covered(a), r"no face found"),
    Case("broken_link.jpg", None, r"broken symbolic link"),
    Case("folder.jpg", None, r"is a folder, not a file"),
    Case("unreadable.jpg", lambda p, a: _encode(p, "JPEG"), r"permission denied"),
    Case("gray16.png", lambda p, a: _gray16(p), check=_is_grey),
    Case("grayscale.jpg", lambda p, a: _encode(p.convert("L"), "JPEG"), check=_is_grey),
    Case("palette.png", lambda p, a: _encode(p.quantize(256), "PNG"), check=_colours_kept),
    Case("cmyk.jpg", lambda p, a: _encode(p.convert("CMYK"), "JPEG"), check=_colours_kept),
    Case("rgba_transparent.png", lambda p, a: _rgba(p), check=_colours_kept),
    Case("animated.gif", lambda p, a: _animated(p, "GIF"), check=_any),
    Case("animated.webp", lambda p, a: _animated(p, "WEBP"), check=_colours_kept),
    Case("exif_rotated.jpg", lambda p, a: _exif_rotated(p), check=_upright),
    Case("png_named.jpg", lambda p, a: _encode(p, "PNG"), check=_colours_kept),
    Case("trailing_junk.jpg", lambda p, a: _encode(p, "JPEG") + os.urandom(2000), check=_colours_kept),
    Case("cut_by_border.jpg", lambda p, a: _encode(Image.fromarray(a[:, 146:]), "JPEG"), check=_outside_is_not_skin),
    Case("many_faces.jpg", None, check=_any),
    Case(b"caf\xe9 latin-1 name.jpg", lambda p, a: _encode(p, "JPEG"), check=_any),
    Case("l" * 251 + ".jpg", lambda p, a: _encode(p, "JPEG"), check=_any),
]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, faces_dir):
    """The folder of cases, processed once by ``python -m fitting.preprocess``: (exit code, folder, log)."""
    root = tmp_path_factory.mktemp("corpus")
    folder = root / "photos"
    folder.mkdir()
    photo = Image.open(faces_dir / FACE).convert("RGB")
    array = np.asarray(photo)
    for case in CASES:
        if case.content is not None:
            with open(os.path.join(os.fsencode(folder), os.fsencode(case.name)), "wb") as fh:
                fh.write(case.content(photo, array))
    (folder / "broken_link.jpg").symlink_to(root / "deleted.jpg")
    (folder / "folder.jpg").mkdir()
    (folder / "many_faces.jpg").symlink_to(faces_dir / GROUP)

    read_bytes = pathlib.Path.read_bytes

    def unreadable(path):  # root reads anything: simulate the EACCES an unprivileged user gets
        if path.name == "unreadable.jpg":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    records = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append
    logger = logging.getLogger("uvapm.preprocess")
    logger.addHandler(handler)
    out = root / "processed"
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(pathlib.Path, "read_bytes", unreadable)
            code = main(["--input_dir", str(folder), "--output_dir", str(out), "--checkpoints_dir",
                         str(root / "no_checkpoints"), "--quiet"])
    finally:
        logger.removeHandler(handler)
    return code, out, [r.getMessage() for r in records], array


def test_the_batch_completes_and_exits_1(corpus):
    code, out, log, _ = corpus
    assert code == 1
    failures = read_failures(out / "failures.tsv")
    assert set(failures) == {c.key for c in CASES if c.fails}
    # every failure is one ERROR line naming the file
    assert sorted(log) == sorted(f"{name}: {reason}" for name, reason in failures.items())
    assert assert_outputs_complete(out) == 2 * sum(c.fails is None for c in CASES)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []  # lock released, no temporary


@pytest.mark.parametrize("case", CASES, ids=[c.key[:40] for c in CASES])
def test_case(corpus, case):
    _, out, _, photo = corpus
    failures = read_failures(out / "failures.tsv")
    records = [ProcessedFace.load(path) for path in out.glob("*.pt")]
    if case.fails:
        assert re.match(case.fails, failures.get(case.key, "(processed)")), failures.get(case.key)
    else:
        assert case.key not in failures, failures[case.key]
        (record,) = [r for r in records if Path(r.info.source).name == case.key]
        assert case.check(record, photo)


def test_long_names_are_shortened_with_a_hash(corpus):
    _, out, _, _ = corpus
    (long,) = [p for p in out.glob("*.pt") if p.name.startswith("lll")]
    assert len(os.fsencode(long.name)) <= 255 and re.fullmatch(r"l+~[0-9a-f]{10}\.pt", long.name)
    assert (out / "vis" / f"{long.stem}.png").is_file()


def test_many_faces_each_in_its_own_file(tmp_path, faces_dir):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "group.jpg").symlink_to(faces_dir / GROUP)
    config = PreprocessConfig(all_faces=True, masks="landmarks", checkpoints_dir=str(tmp_path / "none"))
    result = preprocess_folder(tmp_path / "in", tmp_path / "out", config, progress=False)
    assert result.failures == [] and result.faces >= 4
    boxes = [ProcessedFace.load(p).face_box[0] for p in sorted((tmp_path / "out").glob("group_face*.pt"))]
    assert len(boxes) == result.faces
    sizes = [float((b[2] - b[0]) * (b[3] - b[1])) for b in boxes]
    assert sizes == sorted(sizes, reverse=True)  # face0 is the largest


def _without_root_file_access() -> None:
    """In the child before exec: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, so permissions apply to root too."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "cannot drop the capability")


def test_a_truly_unreadable_file(tmp_path, faces_dir):
    """chmod 000 for real; as root the command runs without the capabilities that let root read anything."""
    (tmp_path / "in").mkdir()
    locked = tmp_path / "in" / "locked.jpg"
    locked.write_bytes((faces_dir / FACE).read_bytes())
    locked.chmod(0)
    Image.new("RGB", (8, 8)).save(tmp_path / "in" / "tiny.png")
    try:
        run = subprocess.run([sys.executable, "-m", "fitting.preprocess", "--input_dir", str(tmp_path / "in"),
                              "--output_dir", str(tmp_path / "out"), "--checkpoints_dir", str(tmp_path / "none")],
                             cwd=REPO, preexec_fn=_without_root_file_access if os.geteuid() == 0 else None,
                             capture_output=True, text=True, timeout=120)
    except subprocess.SubprocessError as err:
        pytest.skip(f"cannot drop root's file access here ({err})")
    assert run.returncode == 1, run.stderr[-2000:]
    no_traceback(run.stderr)
    assert read_failures(tmp_path / "out" / "failures.tsv") == {
        "locked.jpg": "permission denied",
        "tiny.png": "image is 8x8 pixels, too small to contain a face (the smallest detectable is 20 px)"}
    assert re.search(r"^ERROR uvapm.preprocess: locked.jpg: permission denied$", run.stderr, re.M)


def test_read_image_of_each_processed_case_is_rgb8(corpus, faces_dir):
    """The loader itself on the unusual formats: (H, W, 3) uint8 whatever the mode."""
    _, out, _, photo = corpus
    folder = out.parent / "photos"
    for case in CASES:
        if case.fails is None and case.content is not None:
            image = read_image(os.fsdecode(os.path.join(os.fsencode(folder), os.fsencode(case.name))))
            assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3, case.key
