"""The benchmarks: the synthetic ground-truth scoring is right, and each benchmark runs in --quick mode.

The scoring tests feed the scoring functions the truth itself (near-perfect
numbers), the truth under the albedo/light scale ambiguity (still perfect,
the gain is part of the definition) and deliberately wrong estimates (bad
numbers). The quick runs go through ``main(argv)`` with the results folder
redirected to ``tmp_path`` and check that the tables hold sane values.
"""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from benchmarks import common, landmarks, light_invariance, multi_photo, real_photos, speed, synthetic_gt, texture_asset
from benchmarks.synthetic_gt import (
    Estimate,
    GroundTruth,
    channel_gain,
    lighting_error,
    score,
    uv_masks,
)
from models.camera import PinholeCamera
from models.shading import AMBIENT_OFFSET
from models.uv_layout import UVLayout
from testing.synthetic import make_synthetic_faces, smooth_albedo_map


@pytest.fixture(scope="module")
def synthetic_truth(ict_model):
    """Two rendered faces (yaw up to 40 deg) with detailed albedo, their truth and UV masks at 64 texels."""
    generator = torch.Generator().manual_seed(3)
    albedo = smooth_albedo_map(2, 64, generator) + 0.05 * torch.randn(2, 3, 64, 64, generator=generator)
    faces = make_synthetic_faces(ict_model, 2, seed=5, max_yaw_deg=40.0, albedo_map=albedo.clamp(0, 1))
    crop_vertices = PinholeCamera(ict_model.camera_distance, faces.image.shape[-1]).project(faces.vertices)
    truth = GroundTruth(faces.params, faces.vertices, faces.landmarks, faces.albedo_map, crop_vertices, faces.image)
    return truth, uv_masks(ict_model, faces.params, faces.image, UVLayout(ict_model, 64))


def _perfect(truth: GroundTruth) -> Estimate:
    return Estimate(albedo=truth.albedo, vertices=truth.vertices, landmarks=truth.landmarks, gamma=truth.params.gamma)


def test_truth_scores_near_perfect(ict_model, synthetic_truth):
    truth, masks = synthetic_truth
    scores = score(ict_model, truth, _perfect(truth), masks)
    assert (scores["psnr_visible"] > 40).all() and (scores["psnr_unseen"] > 40).all()
    assert (scores["ssim_visible"] > 0.99).all()
    torch.testing.assert_close(scores["albedo_gain"], torch.ones(2))
    assert (scores["vertex_mm"] < 0.1).all()
    assert (scores["registration_error"] < 1e-4).all()
    assert (scores["landmark_error"] < 1e-4).all()
    assert (scores["lighting_error"] < 1e-4).all()


def test_gain_absorbs_the_albedo_light_scale(ict_model, synthetic_truth):
    """Albedo x k with shading / k renders the same image: the scores stay perfect."""
    truth, masks = synthetic_truth
    k = torch.tensor([0.8, 0.9, 1.15])
    gamma = truth.params.gamma.view(-1, 3, 9).clone()
    gamma[:, :, 0] += AMBIENT_OFFSET
    gamma = (gamma / k[None, :, None])
    gamma[:, :, 0] -= AMBIENT_OFFSET
    estimate = Estimate(albedo=truth.albedo * k[None, :, None, None], gamma=gamma.reshape(-1, 27))
    gain = channel_gain(truth.albedo, estimate.albedo, masks.visible)
    torch.testing.assert_close(gain, (1 / k).expand(2, 3), rtol=1e-4, atol=1e-4)
    scores = score(ict_model, truth, estimate, masks)
    assert (scores["psnr_visible"] > 40).all()
    assert (scores["lighting_error"] < 1e-4).all()


def test_wrong_estimates_score_badly(ict_model, synthetic_truth):
    truth, masks = synthetic_truth
    noise = torch.rand(truth.albedo.shape, generator=torch.Generator().manual_seed(0))
    other_face = truth.albedo.flip(0)  # each face gets the other's albedo
    mean_shape = ict_model(rotation=truth.params.rotation, translation=truth.params.translation).vertices
    wrong = score(ict_model, truth, Estimate(albedo=noise, vertices=mean_shape, gamma=truth.params.gamma.flip(0)),
                  masks)
    assert (wrong["psnr_visible"] < 20).all() and (wrong["ssim_visible"] < 0.3).all()
    assert (wrong["vertex_mm"] > 1.0).all()
    assert (wrong["registration_error"] > 0.01).all()  # the mean shape lands off the true surface
    assert (wrong["lighting_error"] > 0.02).all()
    swapped = score(ict_model, truth, Estimate(albedo=other_face), masks)
    perfect = score(ict_model, truth, _perfect(truth), masks)
    assert (swapped["psnr_visible"] < perfect["psnr_visible"] - 10).all()
    assert (swapped["ssim_visible"] < 0.8).all()


@pytest.mark.slow
def test_masks_follow_the_pose(ict_model):
    """A frontal face shows both sides alike; turned by 45 degrees, it shows one side and hides the other."""
    layout = UVLayout(ict_model, 32)
    symmetry = []
    for yaw in (0.0, 45.0):
        faces = make_synthetic_faces(ict_model, 1, seed=1, max_yaw_deg=1e-6, max_pitch_deg=1e-6)
        faces.params.angles[:, 1] = math.radians(yaw)
        masks = uv_masks(ict_model, faces.params, faces.image, layout)
        assert not (masks.visible * masks.unseen).any()
        assert masks.visible.sum() > 0.2 * masks.face.sum()
        # share of the visible texels whose mirror image is visible too
        symmetry.append(((masks.visible * layout.mirrored(masks.visible)).sum() / masks.visible.sum()).item())
    assert symmetry[0] > 0.85 and symmetry[1] < symmetry[0] - 0.2


def test_masks_keep_to_where_the_truth_is_known(ict_model, synthetic_truth):
    """Scores are taken only where the truth is an albedo: a photo texture's hair, background and inpainting
    are left out of both the visible and the unseen texels."""
    truth, masks = synthetic_truth
    known = torch.zeros(2, 1, 64, 64)
    known[..., 32:, :] = 1.0
    kept = uv_masks(ict_model, truth.params, truth.photo, UVLayout(ict_model, 64), known)
    torch.testing.assert_close(kept.visible, masks.visible * known)
    torch.testing.assert_close(kept.unseen, masks.unseen * known)
    assert kept.visible.sum() > 0 and kept.unseen.sum() > 0


@pytest.mark.slow
def test_photo_albedo_truths_know_the_face_not_the_hair(ict_model, faces_dir):
    """A photo texture is known where its photo showed the face: the cheeks, not the texels outside the face
    region, nor the ears, neck and scalp the texture also holds."""
    from testing.textures import photo_albedo_truths

    photo = faces_dir / "single" / "0003_d3dfr.jpg"
    (texture, known), = photo_albedo_truths(ict_model, [photo], resolution=128)
    assert texture.shape == (3, 128, 128) and known.shape == (1, 128, 128)
    face = UVLayout(ict_model, 128).mask[0]
    assert set(known.unique().tolist()) <= {0.0, 1.0}
    assert (known * (1 - face)).sum() == 0
    assert 0.15 < float((known * face).sum() / face.sum()) < 0.6  # the layout's face region has ears and neck too
    assert known[0, 60:72, 36:48].mean() > 0.9  # a cheek
    assert known[0, 110:].sum() == 0  # the neck


def test_lighting_error_is_relative_and_symmetric_in_scale():
    gamma = torch.zeros(1, 27)
    brighter = gamma.clone()
    brighter.view(1, 3, 9)[:, :, 0] += 0.1 * AMBIENT_OFFSET  # shading x 1.1
    error = lighting_error(gamma, brighter, torch.ones(1, 3))
    torch.testing.assert_close(error, torch.tensor([0.1]), rtol=1e-4, atol=1e-5)
    assert lighting_error(gamma, brighter, torch.full((1, 3), 1.1)).item() < 1e-5


@pytest.fixture()
def results_dir(tmp_path, monkeypatch):
    folder = tmp_path / "results"
    monkeypatch.setattr(common, "RESULTS", folder)
    return folder


def _rows(folder, name):
    table = json.loads((folder / f"{name}.json").read_text())
    assert (folder / f"{name}.md").read_text().startswith("### ")
    return table["rows"]


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.slow
def test_synthetic_gt_quick(results_dir, faces_dir, ict_model):
    assert synthetic_gt.main(["--quick", "-q", "--backgrounds", str(faces_dir / "multi")]) == 0
    rows = _rows(results_dir, "synthetic_gt_quick")
    assert {r["difficulty"] for r in rows} == {"easy", "medium", "hard"}
    assert {r["method"] for r in rows} == {*synthetic_gt.METHODS, *synthetic_gt.INSTRUMENTS}
    for row in rows:
        assert row["faces"] == "1/1", row  # the real preprocessing found the rendered face
        assert 8 < row["psnr_visible"] < 60 and 0 < row["ssim_visible"] <= 1, row
        assert 0 <= row["unseen_share"] < 1 and row["albedo_gain"] > 0
        # the truth is the model's fixed landmark vertices; detectors put the jaw of a turned head on the
        # silhouette, so a found face is within a third of the eye distance, not exactly on it
        assert 0 < row["input_landmark_error"] < 0.3
        if row["method"] in synthetic_gt.INSTRUMENTS:
            assert row["vertex_mm"] == "" and row["registration_error"] == "", row  # albedo only
        elif row["method"] != "unwrapped photo texture":
            assert 0 < row["vertex_mm"] < 20 and 0 < row["registration_error"] < 0.3, row
        if row["method"].startswith("stage"):
            assert 0 < row["landmark_error"] < 0.3 and 0 < row["lighting_error"] < 2, row
    for level in ("easy", "medium", "hard"):  # the true geometry unwraps the photo far better than the fitted one
        by_method = {r["method"]: r for r in rows if r["difficulty"] == level}
        assert by_method[synthetic_gt.INSTRUMENTS[0]]["psnr_visible"] > by_method["unwrapped photo texture"][
            "psnr_visible"] + 3
    per_face = list(csv.DictReader((results_dir / "synthetic_gt_quick.csv").open()))
    assert len(per_face) == 3 * (len(synthetic_gt.METHODS) + len(synthetic_gt.INSTRUMENTS))
    # the same face under two scene lights: colours scored against the truth, and their spread
    lights = _rows(results_dir, "synthetic_lights_quick")
    assert [r["method"] for r in lights] == list(synthetic_gt.LIGHT_METHODS)
    for row in lights:
        assert row["faces"] == 1 and 0 < row["mean dE to truth"] < 100 and 0 <= row["spread across lights"] < 100
    photo = lights[0]  # tungsten light moves the photo's skin colour
    assert photo["spread across lights"] > 3
    # the same face with and without drawn glasses and hair: both fitted and scored
    occluders = _rows(results_dir, "synthetic_occluders_quick")
    assert [r["method"] for r in occluders] == list(synthetic_gt.OCCLUDER_METHODS)
    for row in occluders:
        assert row["faces"] == 1 and 8 < row["psnr_visible plain"] < 60, row
        assert row["difference (dB)"] == pytest.approx(row["psnr_visible with glasses and hair"]
                                                       - row["psnr_visible plain"], abs=1e-3)


def test_light_invariance_pairs_people(tmp_path):
    (tmp_path / "identities.tsv").write_text("file\tperson\tnote\na.jpg\tp1\t\nb.jpg\tp1\t\nc.jpg\tp2\t\n"
                                             "d.jpg\tp2\t\ne.jpg\tp3\t\n")
    people = light_invariance.read_identities(tmp_path / "identities.tsv")
    assert {k: [p.name for p in v] for k, v in people.items()} == {"p1": ["a.jpg", "b.jpg"], "p2": ["c.jpg", "d.jpg"]}
    lab = {"a": np.array([60.0, 10, 10]), "b": np.array([60.0, 10, 13]), "c": np.array([40.0, 10, 10]),
           "d": np.array([44.0, 10, 10])}
    person = {"a": "p1", "b": "p1", "c": "p2", "d": "p2"}
    out = light_invariance.colour_differences(lab, person)
    assert out["same person dE"] == pytest.approx(3.5) and (out["same pairs"], out["different pairs"]) == (2, 4)
    assert out["different people dE"] == pytest.approx(np.mean([20.22375, 16.0, 20.0, 16.27882]), abs=1e-4)


def test_nme_and_yaw_bins_follow_the_aflw_protocol():
    truth = np.array([[0.0, 0.0], [40.0, 0.0], [40.0, 10.0], [0.0, 10.0]])
    # every point 2 px off; the box is 40 x 10, so the normaliser is sqrt(400) = 20
    assert landmarks.nme(truth + np.array([2.0, 0.0]), truth) == pytest.approx(10.0)
    assert [landmarks.yaw_bin(y) for y in (-29.9, 30.0, -59.9, 60.0, 90.0)] == [
        "[0,30)", "[30,60)", "[30,60)", "[60,90]", "[60,90]"]


@pytest.mark.slow
def test_landmarks_quick(results_dir, faces_dir, tmp_path):
    aflw = faces_dir.parent / "landmarks" / "aflw2000_dev"
    if not (aflw / "gt.json").is_file():
        pytest.skip(f"{aflw} not found")
    assert landmarks.main(["--quick", "-q", "--aflw", str(aflw), "--texture_photos", str(faces_dir / "single"),
                           "--backgrounds", str(faces_dir / "multi"), "--overlays", str(tmp_path / "o")]) == 0
    rows = _rows(results_dir, "landmarks_quick")
    real = {r["method"]: r for r in rows if r["set"] == "AFLW2000-3D dev (real)"}
    assert set(real) == {"dlib 68 detections", "stage 1 fit to dlib 68", "FaceMesh 478 -> 68 (table)",
                         "stage 1 fit to FaceMesh (pipeline default)"}
    fit = real["stage 1 fit to FaceMesh (pipeline default)"]
    assert fit["n [0,30)"] == "7/7" and 1.0 < fit["[0,30)"] < 8.0, fit  # seven near-frontal photos, all found
    published = [r for r in rows if r["set"].endswith("(published)")]
    assert [r["[0,30)"] for r in published] == [2.63, 2.65]
    synthetic = [r for r in rows if r["set"] == "synthetic heads" and r["method"].startswith("stage 1")]
    assert synthetic and all(_finite(r["[0,30)"]) and _finite(r["mm [0,30)"]) for r in synthetic)
    assert len(list((tmp_path / "o").glob("aflw_*.png"))) == 8


@pytest.mark.slow
def test_real_photos_quick(results_dir, faces_dir, tmp_path):
    out = tmp_path / "real"
    assert real_photos.main(["--quick", "-q", "--input_dir", str(faces_dir / "single"), "--output_dir", str(out)]) == 0
    rows = {r["measure"]: r for r in _rows(results_dir, "real_photos_quick")}
    assert rows["detection rate"]["mean"] == 1.0 and rows["fit success rate"]["mean"] == 1.0
    assert 0 < rows["landmark_residual"]["mean"] < 0.1
    assert 10 < rows["psnr"]["mean"] < 50 and 0 < rows["ssim"]["mean"] <= 1
    assert 10 < rows["psnr_detail"]["mean"] < 50
    assert 0 < rows["id_distance"]["mean"] < 1.5 and 0 < rows["impostor_distance"]["mean"] < 1.5
    per_photo = list(csv.DictReader((results_dir / "real_photos_quick.csv").open()))
    assert len(per_photo) == 2 and all(r["fitted"] == "1" for r in per_photo)
    assert all((out / "fit" / r["photo"].rsplit(".", 1)[0] / "render.png").is_file() for r in per_photo)


def test_seam_score_sees_a_seam_and_only_a_seam(ict_model):
    """A uniform atlas has no seam; a head tile of another colour than the face tile shows at the border."""
    R = 64
    sides = texture_asset._seam_sides(ict_model, 2, R)
    uniform = torch.full((3, R, 2 * R), 0.6)
    assert texture_asset.seam_colour_difference(uniform, sides).max() < 1e-3
    split = uniform.clone()
    split[:, :, R:] = torch.tensor([0.5, 0.4, 0.3])[:, None, None]
    difference = texture_asset.seam_colour_difference(split, sides)
    border = difference > 1.0
    assert 0.5 < border.float().mean() < 1.0  # the face/head border (most seams), not the seams inside a tile
    assert difference[border].min() > 10
    used = torch.ones(R, 2 * R, dtype=torch.bool)
    assert texture_asset.flat_fill_share(uniform, used) == 1.0
    noisy = uniform + 0.05 * torch.rand(3, R, 2 * R, generator=torch.Generator().manual_seed(0))
    assert texture_asset.flat_fill_share(noisy, used) == 0.0


@pytest.mark.slow
def test_texture_asset_quick(results_dir, faces_dir, tmp_path):
    sheets = tmp_path / "sheets"
    assert texture_asset.main(["--quick", "-q", "--input_dir", str(faces_dir / "single"), "--output_dir",
                               str(tmp_path / "fit"), "--sheet_dir", str(sheets), "--set", "outputs.uv_1024=true"]) == 0
    rows = _rows(results_dir, "texture_asset_quick")
    face, summary = rows
    assert face["fitted"] == 1 and summary["fitted"] == "1/1"
    assert face["face_px"] > 50 and face["band_1024"] > 1.5 * face["band_1024_enlarged"]  # the photo's own detail
    assert 0 < face["seam_dE_median"] < 30 and face["seam_dE_p90"] >= face["seam_dE_median"]
    assert 0 <= face["flat_fill_share"] < 0.5 and face["seam_edges"] > 100
    assert (sheets / "contact_sheet.png").is_file()


@pytest.mark.slow
def test_multi_photo_quick(results_dir, tmp_path):
    """One synthetic person in four scenes and two real people, each fitted alone and jointly."""
    sheets = tmp_path / "sheets"
    assert multi_photo.main(["--quick", "-q", "--output_dir", str(tmp_path / "fit"), "--sheet_dir", str(sheets)]) == 0
    rows = {r["method"]: r for r in _rows(results_dir, "multi_photo_quick")}
    single, pair, four = (rows[k] for k in ("single photo (each of the 4 scenes)", "joint, 2 photos (scenes 0+1, 2+3)",
                                            "joint, 4 photos"))
    for row in (single, pair, four):
        assert 5 < row["albedo PSNR seen (dB)"] < 40 and 0 < row["coverage"] <= 1
    assert single["coverage"] < pair["coverage"] < four["coverage"]  # what one photo hides another shows
    assert [rows[f"seconds per person, {n} photos"]["people"] for n in (2, 4, 8)] == [2, 1, 1]
    real = rows["joint, 2 photos"]
    assert real["people"] == 2 and real["coverage"] > rows["single photo"]["coverage"]
    assert (sheets / "contact_sheet.png").is_file()


@pytest.mark.slow
def test_speed_quick(results_dir, faces_dir):
    assert speed.main(["--quick", "-q", "--input_dir", str(faces_dir / "single")]) == 0
    rows = _rows(results_dir, "speed_quick")
    assert [r["faces"] for r in rows if r["experiment"].startswith("scaling")] == [2, 4]
    for row in rows:
        assert _finite(row["wall_s"]) and row["wall_s"] > 0 and row["peak_rss_mb"] > 100
    stages = [r for r in rows if r["experiment"] == "all stages"]
    assert [r["faces"] for r in stages] == [1, 1, 2]
    for row in stages:
        assert all(_finite(row[k]) and row[k] > 0 for k in ("stage1", "unwrap", "stage2", "stage3"))
    losses = [r["final_photo_loss"] for r in rows if r["experiment"].startswith("stage-2 fit")]
    assert len(losses) == 3
    # the same fit with each renderer: pytorch3d renders the same image as ours
    assert max(losses) - min(losses) < 0.02 * max(losses)
    resolutions = {r["setting"]: r for r in rows if r["experiment"].startswith("output resolution")}
    assert len(resolutions) == 2
    assert resolutions["with --uv_1024"]["uv1024"] > 0 and not _finite(resolutions["final albedo 512 (default)"].get(
        "uv1024"))
