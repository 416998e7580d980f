"""The "process data" stage on real photos: landmarks, alignment, masks, batch behaviour and bad input."""

from __future__ import annotations

import os
import re
import struct
import zlib

import cv2
import numpy as np
import pytest
import scipy.io
import torch

from fitting.config import PreprocessConfig
from fitting.preprocess.alignment import (
    ICT_TEMPLATE,
    alignment_transform,
    apply_affine,
    five_points,
    invert_affine,
    load_reference_template,
    warp_to_crop,
)
from fitting.preprocess.command import main
from fitting.preprocess.detection import FaceDetector
from fitting.preprocess.folder import preprocess_folder
from fitting.preprocess.landmarks import LandmarkDetector, fan_weights_path
from fitting.preprocess.masks import landmark_regions
from fitting.preprocess.preprocessor import PreprocessError, Preprocessor
from fitting.structures import ProcessedFace
from models.networks.bisenet import BiSeNet
from utils.errors import FileFormatError, MissingAssetError
from utils.image_io import read_image

# Frontal; glasses and 3/4 view; dark skin at 1024 px; tight grayscale 150 px crop; 3061x4600 photo (downscaled
# for detection).
PHOTOS = ["0003_d3dfr.jpg", "0020_d3dfr.png", "0162_stargan2.jpg", "0226_faceapijs.png", "0106_deepface.jpg"]


@pytest.fixture(scope="module")
def preprocessor(tmp_path_factory):
    empty_checkpoints = tmp_path_factory.mktemp("no_checkpoints")
    return Preprocessor(PreprocessConfig(masks="landmarks", checkpoints_dir=str(empty_checkpoints)))


@pytest.fixture(scope="module")
def processed(faces_dir, preprocessor):
    """name -> (photo, record) for PHOTOS."""
    out = {}
    for name in PHOTOS:
        image = read_image(faces_dir / "single" / name)
        (record,) = preprocessor(image, source=name)
        out[name] = (image, record)
    return out


def _config_args(tmp_path) -> list[str]:
    # No official checkpoints: the landmark masks, whatever the repository's checkpoints/ holds.
    return ["--checkpoints_dir", str(tmp_path / "no_checkpoints"), "--quiet"]


def test_landmarks_follow_ibug_order(processed):
    for name, (_, record) in processed.items():
        for lm in (record.landmarks[0].numpy(), record.landmarks_original[0].numpy()):
            assert lm[36, 0] < lm[39, 0] < lm[42, 0] < lm[45, 0], name  # eye corners left to right in the image
            assert lm[0, 0] < lm[8, 0] < lm[16, 0], name
            assert lm[8, 1] >= lm[0:17, 1].max() - 2.0, name  # the chin is the lowest jaw point
            assert lm[19, 1] < lm[37, 1] and lm[24, 1] < lm[44, 1], name  # brows above the eyes
            assert lm[27, 1] < lm[30, 1] < lm[51, 1] < lm[57, 1] < lm[8, 1], name  # bridge, tip, lips, chin
            assert lm[36, 0] < lm[30, 0] < lm[45, 0], name


def test_record_shapes_and_ranges(processed):
    for name, (image, record) in processed.items():
        assert record.image.shape == (1, 3, 224, 224) and record.image.dtype == torch.float32
        assert 0.0 <= record.image.min() and record.image.max() <= 1.0
        for key in ("skin_mask", "parse_mask"):
            mask = getattr(record, key)
            assert mask.shape == (1, 1, 224, 224) and 0.0 <= mask.min() and mask.max() <= 1.0, (name, key)
            assert mask.mean() > 0.1, (name, key)
        assert record.original_size.tolist() == list(image.shape[:2])
        x0, y0, x1, y1 = record.face_box[0].tolist()
        lm = record.landmarks_original[0].numpy()
        # The landmarks lie around the detector box (mapped back from the downscaled copy for large photos).
        margin = 0.35 * (x1 - x0)
        assert (lm[:, 0] > x0 - margin).all() and (lm[:, 0] < x1 + margin).all(), name
        assert (lm[:, 1] > y0 - margin).all() and (lm[:, 1] < y1 + margin).all(), name
        assert record.info.masks == "landmarks+skin-colour"


def test_alignment_round_trip(processed):
    for name, (_, record) in processed.items():
        transform = record.transform[0].double().numpy()
        inverse = record.inverse_transform[0].double().numpy()
        back = apply_affine(inverse, record.landmarks[0].double().numpy())
        np.testing.assert_allclose(back, record.landmarks_original[0].numpy(), atol=0.5, err_msg=name)
        np.testing.assert_allclose(invert_affine(transform), inverse, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("zoom", [2.7, 1.0, 0.31])
def test_warp_follows_the_pixel_convention(zoom):
    """A blob at a known sub-pixel position lands where the transform sends it (enlarging and shrinking)."""
    size = 900
    centre = np.array([401.3, 377.8])  # corner coordinates: pixel (i, j) spans [j, j+1) x [i, i+1)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    sigma = 6.0 / min(zoom, 1.0)
    blob = np.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma**2))
    image = np.repeat((blob * 255).astype(np.uint8)[..., None], 3, 2)
    transform = np.array([[zoom, 0.0, 112 - zoom * centre[0] + 3.25], [0.0, zoom, 112 - zoom * centre[1] - 7.5]])
    crop = warp_to_crop(image, transform, 224)[..., 0].astype(np.float64)
    ys, xs = np.mgrid[0:224, 0:224] + 0.5
    found = np.array([(crop * xs).sum(), (crop * ys).sum()]) / crop.sum()
    np.testing.assert_allclose(found, apply_affine(transform, centre), atol=0.1)


def test_ict_template_is_the_face_model_and_maps_its_origin_to_the_centre(ict_model):
    lm = ict_model.mean_shape[ict_model.landmark_indices].double().numpy()
    np.testing.assert_allclose(five_points(lm), ICT_TEMPLATE.points, atol=1e-3)
    # The mean face seen by the reference camera (focal 1015, 224 px, 1 m away), in y-down pixels, is already
    # aligned: the alignment must be close to the identity (orthographic fit of a perspective view: ~3 %).
    depth = ict_model.camera_distance - lm[:, 2]
    pixels = np.stack([1015 * lm[:, 0] / depth + 112, 112 - 1015 * lm[:, 1] / depth], 1)
    transform = alignment_transform(five_points(pixels), ICT_TEMPLATE)
    assert abs(transform[0, 0] - 1.0) < 0.05
    np.testing.assert_allclose(apply_affine(transform, [112.0, 112.0]), [112.0, 112.0], atol=1.0)


def test_reference_template_from_mat(tmp_path):
    lm = np.random.default_rng(0).normal(size=(68, 3))
    scipy.io.savemat(tmp_path / "similarity_Lm3D_all.mat", {"lm": lm})
    template = load_reference_template(tmp_path / "similarity_Lm3D_all.mat")
    np.testing.assert_allclose(template.points, five_points(lm))
    assert template.rescale_factor == 102.0
    scipy.io.savemat(tmp_path / "wrong.mat", {"lm": lm[:5]})
    with pytest.raises(FileFormatError, match=r"wrong.mat: key 'lm' has shape \(5, 3\), expected \(68, 3\)"):
        load_reference_template(tmp_path / "wrong.mat")


def test_skin_mask_excludes_eyes_brows_lips(processed):
    for name, (_, record) in processed.items():
        lm = record.landmarks[0].double().numpy()
        skin = record.skin_mask[0, 0].numpy()
        parse = record.parse_mask[0, 0].numpy()

        def inside(points):
            region = np.zeros((224, 224), np.uint8)
            cv2.fillPoly(region, [np.round(points - 0.5).astype(np.int32)], 1)
            return region.astype(bool)

        eyes = inside(lm[36:42]) | inside(lm[42:48])
        lips = inside(lm[48:60]) & ~inside(lm[60:68])
        brow_line = np.concatenate([lm[17:22] + [0, 1], lm[17:22][::-1] + [0, 4]])
        assert skin[eyes].mean() < 0.05 and parse[eyes].mean() < 0.05, name
        assert skin[lips].mean() < 0.05 and parse[lips].mean() > 0.5, name
        assert skin[inside(brow_line)].mean() < 0.1, name
        cheeks = landmark_regions(lm, 224)["colour_samples"][2:].max(0) > 0.5
        assert skin[cheeks].mean() > 0.7, name


def _png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height (nothing to decode before the size check)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0\0")) + chunk(b"IEND", b"")


def test_bad_inputs_fail_one_by_one_and_the_batch_continues(tmp_path, faces_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    good = (faces_dir / "single" / "0003_d3dfr.jpg").read_bytes()
    (photos / "good photo ñ 😀.jpg").write_bytes(good)
    (photos / "empty.jpg").write_bytes(b"")
    (photos / "truncated.jpg").write_bytes(good[:400])
    (photos / "notes.png").write_text("this is not an image\n")
    (photos / "folder.jpg").mkdir()
    (photos / "huge.png").write_bytes(_png_claiming_size(30000, 30000))
    noise = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    cv2.imwrite(str(photos / "noise.png"), noise)
    out = tmp_path / "processed data"

    assert main(["--input_dir", str(photos), "--output_dir", str(out)] + _config_args(tmp_path)) == 1

    record = ProcessedFace.load(out / "good photo ñ 😀.pt")
    assert record.info.source.endswith("good photo ñ 😀.jpg")
    assert (out / "vis" / "good photo ñ 😀.png").is_file()
    assert read_image(out / "vis" / "good photo ñ 😀.png").shape == (224, 4 * 224, 3)
    lines = (out / "failures.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "file\treason"
    reasons = dict(line.split("\t") for line in lines[1:])
    assert set(reasons) == {"empty.jpg", "truncated.jpg", "notes.png", "folder.jpg", "huge.png", "noise.png"}
    assert reasons["empty.jpg"] == "empty file (0 bytes)"
    assert reasons["truncated.jpg"].startswith("corrupt or truncated image")
    assert reasons["notes.png"] == "not a recognised image format"
    assert reasons["folder.jpg"] == "is a folder, not a file"
    assert re.match(r"(refused as a decompression bomb|image is 30000x30000 pixels, more than)", reasons["huge.png"])
    assert reasons["noise.png"] == "no face found"
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR")]
    assert len(errors) == 6 and any("empty.jpg: empty file (0 bytes)" in line for line in errors)
    assert sorted(p.name for p in out.iterdir()) == ["failures.tsv", "good photo ñ 😀.pt", "vis"]


def test_face_too_small(faces_dir, tmp_path):
    image = read_image(faces_dir / "single" / "0003_d3dfr.jpg")
    strict = Preprocessor(PreprocessConfig(masks="landmarks", min_face_size=2000, checkpoints_dir=str(tmp_path)))
    with pytest.raises(PreprocessError, match=r"face too small \(\d+ px, the minimum is 2000 px"):
        strict(image)


def test_skip_existing_and_overwrite(tmp_path, faces_dir, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.jpg").write_bytes((faces_dir / "single" / "0003_d3dfr.jpg").read_bytes())
    out = tmp_path / "out"
    args = ["--input_dir", str(photos), "--output_dir", str(out)] + _config_args(tmp_path)
    assert main(args) == 0
    target = out / "a.pt"
    os.utime(target, ns=(1_000_000_000, 1_000_000_000))
    assert main(args) == 0
    assert target.stat().st_mtime_ns == 1_000_000_000  # skipped
    assert (out / "failures.tsv").read_text() == "file\treason\n"
    assert main(args + ["--overwrite"]) == 0
    assert target.stat().st_mtime_ns != 1_000_000_000
    ProcessedFace.load(target)


@pytest.mark.slow
def test_all_faces_writes_one_file_per_face(tmp_path, faces_dir):
    photos = tmp_path / "group"
    photos.mkdir()
    (photos / "two.png").write_bytes((faces_dir / "multi" / "0004_codeformer.png").read_bytes())
    config = PreprocessConfig(all_faces=True, masks="landmarks", checkpoints_dir=str(tmp_path / "none"))
    result = preprocess_folder(photos, tmp_path / "out", config, progress=False)
    assert result.failures == [] and result.faces == 2
    first, second = (ProcessedFace.load(tmp_path / "out" / f"two_face{k}.pt") for k in (0, 1))
    area = [float((b[2] - b[0]) * (b[3] - b[1])) for b in (first.face_box[0], second.face_box[0])]
    assert area[0] >= area[1]
    centres = [r.landmarks_original[0].mean(0) for r in (first, second)]
    assert float(torch.dist(*centres)) > 0.5 * np.sqrt(area[1])  # two different faces
    assert sorted(p.name for p in (tmp_path / "out" / "vis").iterdir()) == ["two_face0.png", "two_face1.png"]


def test_usage_and_config_errors_exit_2(tmp_path, capsys):
    assert main(["--input_dir", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "input folder not found" in capsys.readouterr().err
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(b"x")
    assert main(["--input_dir", str(tmp_path / "in"), "--set", "detector=magic", "--quiet"]) == 2
    assert "detector: 'magic' is not one of auto, hog, cnn" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--input_dir", str(tmp_path / "in"), "--landmarks", "magic"])
    assert exit_info.value.code == 2


def test_fan_landmarks_need_local_weights(tmp_path, capsys):
    if fan_weights_path().is_file():
        pytest.skip("FAN weights are installed on this machine")
    with pytest.raises(MissingAssetError, match="never downloads"):
        LandmarkDetector("fan")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "x.jpg").write_bytes(b"x")
    assert main(["--input_dir", str(tmp_path / "in"), "--landmarks", "fan", "--quiet"]) == 2
    assert str(fan_weights_path()) in capsys.readouterr().err


def test_parsing_masks_path_with_a_checkpoint(tmp_path, faces_dir):
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(MissingAssetError, match="79999_iter.pth"):
        Preprocessor(PreprocessConfig(masks="parsing", checkpoints_dir=str(checkpoints)))
    (checkpoints / "parsing_model").mkdir(parents=True)
    torch.save(BiSeNet().state_dict(), checkpoints / "parsing_model" / "79999_iter.pth")
    parser_config = PreprocessConfig(masks="auto", checkpoints_dir=str(checkpoints))
    (record,) = Preprocessor(parser_config)(read_image(faces_dir / "single" / "0003_d3dfr.jpg"))
    assert record.info.masks == "bisenet"
    for key in ("skin_mask", "parse_mask"):
        mask = getattr(record, key)
        assert mask.shape == (1, 1, 224, 224) and 0.0 <= mask.min() and mask.max() <= 1.0


def test_cnn_detector_agrees_with_hog(faces_dir):
    image = read_image(faces_dir / "single" / "0003_d3dfr.jpg")
    (hog,) = FaceDetector("hog").detect(image)
    cnn = FaceDetector("cnn").detect(image)
    assert hog.method == "hog" and cnn and cnn[0].method == "cnn"
    a, b = hog.box, cnn[0].box
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    assert inter / union > 0.4


def test_load_processed_rejects_wrong_files(tmp_path, processed):
    _, face = processed[PHOTOS[0]]
    face.save(tmp_path / "good.pt")
    assert ProcessedFace.load(tmp_path / "good.pt").info.format_version == "2"
    record = face.to_dict()
    cases = {
        "missing.pt": {k: v for k, v in record.items() if k != "skin_mask"},
        "shape.pt": dict(record, landmarks=torch.zeros(1, 5, 2)),
        "info.pt": dict(record, info={"source": 3}),
        "tensor.pt": torch.zeros(3),
    }
    messages = {
        "missing.pt": r"missing keys \['skin_mask'\]",
        "shape.pt": r"'landmarks' is \(1, 5, 2\)",
        "info.pt": "'info' must be a dict",
        "tensor.pt": "expected a dict",
    }
    for name, content in cases.items():
        torch.save(content, tmp_path / name)
        with pytest.raises(FileFormatError, match=messages[name]):
            ProcessedFace.load(tmp_path / name)


@pytest.mark.slow
def test_no_face_in_photos_without_faces():
    """Every detection pass, the last-resort low threshold included, stays silent on a cup, a cat and a rocket."""
    skimage_data = pytest.importorskip("skimage.data")
    detector = FaceDetector("auto")
    for name in ("coffee", "chelsea", "rocket"):
        image = np.ascontiguousarray(getattr(skimage_data, name)()[..., :3])
        assert detector.detect(image) == [], name


def test_facemesh_points_are_recorded_and_agree_with_dlib(processed, tmp_path):
    dlib_only = Preprocessor(PreprocessConfig(landmarks="dlib", masks="landmarks",
                                              checkpoints_dir=str(tmp_path / "none")))
    for name, (image, face) in processed.items():
        assert face.dense_valid[0] == 1 and face.info.landmarks.startswith("facemesh"), name
        dense = face.dense_landmarks[0, :, :2].numpy()
        lm = face.landmarks[0].numpy()
        # the 478 points cover the face: from the brows' height to below the chin, between the jaw corners
        assert dense[:, 0].min() < lm[36, 0] and dense[:, 0].max() > lm[45, 0], name
        assert dense[:, 1].max() > lm[57, 1], name
        (reference,) = dlib_only(image, source=name)
        eyes = np.linalg.norm(reference.landmarks[0, 36] - reference.landmarks[0, 45])
        inner = list(range(17, 68))  # brows, nose, eyes and mouth: the same points in both conventions
        error = np.linalg.norm(face.landmarks[0, inner] - reference.landmarks[0, inner], axis=1) / eyes
        assert np.median(error) < 0.06, (name, np.median(error))
        assert reference.dense_valid[0] == 0 and reference.info.landmarks.startswith("dlib")


def test_facemesh_falls_back_to_dlib_where_it_finds_no_face(preprocessor, faces_dir, monkeypatch):
    monkeypatch.setattr(preprocessor, "facemesh", lambda image, box: None)
    (face,) = preprocessor(read_image(faces_dir / "single" / PHOTOS[0]), source="x")
    assert face.dense_valid[0] == 0 and face.dense_landmarks.abs().max() == 0
    assert face.info.landmarks.startswith("dlib") and "FaceMesh found no face" in face.info.landmarks


def test_mediapipe_finds_a_face_under_a_mask_that_dlib_misses(faces_dir):
    image = read_image(faces_dir / "single" / "0384_maskdet.jpg")
    assert FaceDetector("hog").detect(image) == []
    (found,) = FaceDetector("auto").detect(image)[:1]
    assert found.method == "mediapipe" and found.size > 100


def test_version_1_processed_files_still_load(tmp_path, processed):
    _, face = processed[PHOTOS[0]]
    old = {k: v for k, v in face.to_dict().items() if k not in ("dense_landmarks", "dense_valid")}
    old["info"] = {**old["info"], "format_version": "1"}
    torch.save(old, tmp_path / "old.pt")
    loaded = ProcessedFace.load(tmp_path / "old.pt")
    assert loaded.dense_valid[0] == 0 and loaded.dense_landmarks.shape == (1, 478, 3)
    torch.testing.assert_close(loaded.landmarks, face.landmarks)
