"""Landmark and shape accuracy against ground truth, per yaw bin, for each landmark source and the fit.

    python -m benchmarks.landmarks [--n 8] [--quick] [--overlays DIR]

Two sets, both scored by the AFLW2000-3D protocol: the 68-point 2D NME,
the mean point error divided by sqrt(w * h) of the ground-truth points'
bounding box, in percent, averaged per |yaw| bin [0, 30), [30, 60), [60, 90].

* **Real** (``--aflw``, default ``../shared/data/landmarks/aflw2000_dev``):
  AFLW2000-3D photos with their original 68-point annotation, which are the
  68 landmark vertices of a fitted 3D model projected into the photo (on a
  turned head the far jaw points lie on the hidden surface). Rows: dlib's
  68 detections; FaceMesh's 478 points mapped to the 68 by the project's
  table (:mod:`fitting.preprocess.facemesh`); and stage 1 of the pipeline
  fitted to each source, scored by the face model's own 68 landmark
  vertices projected into the photo (the same kind of point as the truth).
  The development sample has 7 faces in [0, 30), none in [30, 60) and one
  in [60, 90]: per-bin values rest on very few photos.
* **Synthetic**: ICT-FaceKit heads drawn from the model's prior, ``--n``
  per yaw bin (|yaw| uniform in the bin), pitch within +-15 deg, a coloured
  SH light, textured with the full unwrapped textures of real frontal photos
  (eyes, brows and lips included: ``--texture_photos``), composited on
  crops of real group photos, 512x512, JPEG 90. The detectors run on the
  render exactly as on a photo (the whole preprocessing); the truth is the
  model's 68 landmark vertices projected.

On both sets the scored face is the detected face whose box overlaps the
truth's box the most (other people in the photo or the background are not
the face being scored); none overlapping it counts as not detected, the
``n`` columns. Also the vertex error of the fit
  (mm over the face region after rigid alignment).

Published numbers (all 2000 AFLW2000-3D images, original annotation) are
printed beside: 3DDFA_V2 2.63 / 3.42 / 4.48, SynergyNet 2.65 / 3.30 / 4.27.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from tqdm import tqdm

from assets import load_installed_face_model
from fitting.config import FittingConfig, PreprocessConfig
from fitting.landmark_fit import LandmarkTargets
from fitting.pipeline import default_model_path
from fitting.preprocess.alignment import apply_affine
from fitting.preprocess.detection import box_iou
from fitting.preprocess.preprocessor import PreprocessError, Preprocessor
from fitting.shape import ShapeFitter
from fitting.structures import FaceBatch, FitState, ProcessedFace
from models.face_model import FaceModel
from models.surface_points import load_surface_points
from testing.synthetic import make_synthetic_faces, vertex_error_mm
from testing.textures import photo_textures
from utils.image_io import list_images, read_image, write_image
from utils.runtime import seed_everything

from . import common

__all__ = ["BINS", "PUBLISHED", "nme", "yaw_bin", "main"]

logger = logging.getLogger("uvapm.benchmarks")

BINS = ("[0,30)", "[30,60)", "[60,90]")
#: Published NME (%) on all 2000 AFLW2000-3D images, original annotation (SynergyNet's README table).
PUBLISHED = {"3DDFA_V2 (published)": (2.63, 3.42, 4.48), "SynergyNet (published)": (2.65, 3.30, 4.27)}
#: Frontal shared photos whose unwrapped textures dress the synthetic heads (none of them is an AFLW photo).
TEXTURE_PHOTOS = ("0002_d3dfr.jpg", "0003_d3dfr.jpg", "0016_d3dfr.jpg", "0041_deca.jpg", "0097_deepface.jpg",
                  "0107_deepface.jpg", "0162_stargan2.jpg", "0209_simswap.jpg", "0221_simswap.jpg",
                  "0284_gpen.png", "0331_human.jpg", "0044_deca.jpg")
SYNTHETIC_SIZE = 512


def nme(predicted: np.ndarray, truth: np.ndarray) -> float:
    """68-point NME in percent: mean point error / sqrt(w * h) of the truth's bounding box."""
    extent = truth.max(0) - truth.min(0)
    return float(100.0 * np.linalg.norm(predicted - truth, axis=1).mean() / math.sqrt(extent[0] * extent[1]))


def yaw_bin(yaw_deg: float) -> str:
    magnitude = abs(yaw_deg)
    return BINS[0] if magnitude < 30 else BINS[1] if magnitude < 60 else BINS[2]


@dataclass
class Fitters:
    """What the benchmark fits with: preprocessors per landmark source and stage 1."""

    face_model: FaceModel
    preprocessors: dict[str, Preprocessor]
    shape: ShapeFitter


def _fitters(device: torch.device) -> Fitters:
    config = FittingConfig()
    face_model = FaceModel(load_installed_face_model(config.face_model)).to(device)
    path = default_model_path("dense_points", config.face_model)
    dense = load_surface_points(path, face_model.num_vertices) if path.is_file() else None
    if dense is None:
        logger.warning("%s missing: the fit uses the 68 points of every source", path)
    preprocessors = {source: Preprocessor(PreprocessConfig(landmarks=source, checkpoints_dir="checkpoints",
                                                           device=str(device), visualise=False, all_faces=True))
                     for source in ("dlib", "facemesh")}
    return Fitters(face_model, preprocessors, ShapeFitter(face_model, config.shape, dense_points=dense))


def _fit_photo(fitters: Fitters, face: ProcessedFace, device) -> tuple[np.ndarray, object]:
    """Stage 1 of one processed face: the model's 68 landmark vertices in photo pixels, and the parameters."""
    batch = FaceBatch.from_faces(["face"], [face], [None], 224, device)
    state = fitters.shape(batch, FitState())
    model = fitters.face_model
    fixed = fitters.shape.landmark_fitter.project(state.params, model.landmark_indices[None])[0].cpu().numpy()
    return apply_affine(face.inverse_transform[0].double().numpy(), fixed), state.params


def _process(fitters: Fitters, source: str, image: np.ndarray, name: str,
             truth: np.ndarray | None = None) -> ProcessedFace | None:
    """The processed face; with ``truth`` (68, 2), the detected face whose box overlaps the truth's the most
    (None when none does: other people in the photo are not the face being scored)."""
    try:
        faces = fitters.preprocessors[source](image, source=name)
    except PreprocessError:
        return None
    if truth is None:
        return faces[0]
    box = np.concatenate([truth.min(0), truth.max(0)])
    overlaps = [box_iou(f.face_box[0].numpy(), box) for f in faces]
    best = int(np.argmax(overlaps))
    return faces[best] if overlaps[best] > 0.2 else None


def _score_photo(fitters: Fitters, image: np.ndarray, truth: np.ndarray, name: str, device) -> dict:
    """NME per row for one photo (NaN where a source found no face), the faces processed and their fits."""
    scores, faces, fits = {}, {}, {}
    for source in ("dlib", "facemesh"):
        face = _process(fitters, source, image, name, truth)
        faces[source] = face
        label = "dlib 68 detections" if source == "dlib" else "FaceMesh 478 -> 68 (table)"
        scores[label] = nme(face.landmarks_original[0].numpy(), truth) if face is not None else float("nan")
        fitted = "stage 1 fit to dlib 68" if source == "dlib" else "stage 1 fit to FaceMesh (pipeline default)"
        if face is not None:
            fits[source] = _fit_photo(fitters, face, device)
        scores[fitted] = nme(fits[source][0], truth) if face is not None else float("nan")
    return {"scores": scores, "faces": faces, "fits": fits}


def real_records(fitters: Fitters, folder: Path, device, overlays: Path | None) -> list[dict]:
    meta = json.loads((folder / "gt.json").read_text())
    records = []
    for entry in tqdm(meta["images"], desc="AFLW2000 dev", unit="photo"):
        image = read_image(folder / entry["file"])
        truth = np.asarray(entry["pts68_original"], np.float64)
        out = _score_photo(fitters, image, truth, entry["file"], device)
        records += [{"set": "AFLW2000-3D dev (real)", "item": entry["file"], "yaw_deg": entry["yaw_deg"],
                     "bin": yaw_bin(entry["yaw_deg"]), "method": k, "nme": v} for k, v in out["scores"].items()]
        if overlays is not None:
            _overlay(overlays / f"aflw_{Path(entry['file']).stem}.png", image, out["faces"], out["fits"], fitters,
                     truth)
    return records


def synthetic_records(fitters: Fitters, n: int, textures: list[torch.Tensor], backgrounds: list[Path], seed: int,
                      device, overlays: Path | None) -> list[dict]:
    model = fitters.face_model
    records = []
    jobs = [(b, i) for b in range(len(BINS)) for i in range(n)]
    for bin_index, index in tqdm(jobs, desc="synthetic heads", unit="face"):
        rng = np.random.default_rng([seed, bin_index, index])
        low, high = (0, 30, 60)[bin_index], (30, 60, 90)[bin_index]
        background = read_image(backgrounds[rng.integers(len(backgrounds))])
        side = int(rng.uniform(0.4, 1.0) * min(background.shape[:2]))
        y, x = rng.integers(0, background.shape[0] - side + 1), rng.integers(0, background.shape[1] - side + 1)
        background = cv2.resize(background[y : y + side, x : x + side], (SYNTHETIC_SIZE, SYNTHETIC_SIZE),
                                interpolation=cv2.INTER_AREA)
        synthetic = make_synthetic_faces(
            model, 1, seed=int(rng.integers(2**31)), max_pitch_deg=15.0, light_strength=0.15, light_jitter=0.02,
            albedo_map=textures[int(rng.integers(len(textures)))][None].to(device),
            background=torch.from_numpy(background).permute(2, 0, 1)[None].float().div(255).to(device),
            image_size=SYNTHETIC_SIZE, yaw_range_deg=(low, high), head=True)
        photo = (synthetic.image[0].permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)
        _, jpeg = cv2.imencode(".jpg", cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        photo = cv2.cvtColor(cv2.imdecode(jpeg, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        camera_scale = SYNTHETIC_SIZE / 224  # the synthetic camera renders the 224 reference view at 512
        vertices = synthetic.params.posed(model).vertices
        truth = fitters.shape.camera.project(vertices[:, model.landmark_indices])[0].cpu().numpy() * camera_scale
        yaw = float(synthetic.params.angles[0, 1]) * 180 / math.pi
        name = f"synthetic_{BINS[bin_index]}_{index:02d}"
        scores, vertex_mm, faces, fits = {}, {}, {}, {}
        for source in ("dlib", "facemesh"):
            face = _process(fitters, source, photo, name, truth)
            faces[source] = face
            label = "dlib 68 detections" if source == "dlib" else "FaceMesh 478 -> 68 (table)"
            scores[label] = nme(face.landmarks_original[0].numpy(), truth) if face is not None else float("nan")
            fitted = "stage 1 fit to dlib 68" if source == "dlib" else "stage 1 fit to FaceMesh (pipeline default)"
            if face is None:
                scores[fitted], vertex_mm[fitted] = float("nan"), float("nan")
                continue
            points, params = fits[source] = _fit_photo(fitters, face, device)
            scores[fitted] = nme(points, truth)
            vertex_mm[fitted] = float(vertex_error_mm(model, params.posed(model).vertices.cpu(),
                                                      vertices.cpu())[0])
        for method, value in scores.items():
            records.append({"set": "synthetic heads", "item": name, "yaw_deg": yaw, "bin": BINS[bin_index],
                            "method": method, "nme": value, "vertex_mm": vertex_mm.get(method, float("nan"))})
        if overlays is not None and index < 2:
            _overlay(overlays / f"{name}.png", photo, faces, fits, fitters, truth)
    return records


def _overlay(path: Path, image: np.ndarray, faces: dict, fits: dict, fitters: Fitters, truth=None) -> None:
    """The photo around the face, 384 px wide, with FaceMesh (green dots), dlib (blue), the fit of the pipeline's
    source's 68 fixed landmark vertices (red), its 68 points with the jaw on the silhouette (yellow rings) and the
    truth (white rings). ``fits``: source -> (68 fixed points in photo pixels, parameters)."""
    source = "facemesh" if faces.get("facemesh") is not None else "dlib"
    face = faces.get(source)
    if face is None:
        return
    x0, y0, x1, y1 = face.face_box[0].numpy()
    pad = 0.6 * max(x1 - x0, y1 - y0)
    top, left = max(0, int(y0 - pad)), max(0, int(x0 - pad))
    crop = image[top : int(y1 + pad), left : int(x1 + pad)]
    scale = 384 / max(crop.shape[1], 1)
    canvas = np.ascontiguousarray(cv2.resize(crop, (384, max(1, round(crop.shape[0] * scale)))))

    def draw(points: np.ndarray, radius: int, colour: tuple, thickness: int = -1) -> None:
        for x, y in (np.asarray(points, np.float64) - [left, top]) * scale:
            cv2.circle(canvas, (int(round(x)), int(round(y))), radius, colour, thickness, cv2.LINE_AA)

    inverse = face.inverse_transform[0].double().numpy()
    if face.dense_valid[0] > 0:
        draw(apply_affine(inverse, face.dense_landmarks[0, :, :2].double().numpy()), 1, (40, 220, 40))
    if faces.get("dlib") is not None:
        draw(faces["dlib"].landmarks_original[0].numpy(), 3, (40, 90, 255))
    fitted, params = fits[source]
    draw(fitted, 3, (255, 40, 40))
    fitter = fitters.shape.landmark_fitter
    contour = fitter.project(params, fitter.select_contour(params))[0].cpu().numpy()
    draw(apply_affine(inverse, contour)[:17], 4, (255, 230, 0), 1)
    if truth is not None:
        draw(truth, 4, (255, 255, 255), 1)
    write_image(path, canvas)


def turned_head_overlays(fitters: Fitters, photo_dir: Path, count: int, out: Path, device) -> list[str]:
    """Overlays of ``count`` photos of ``photo_dir`` whose fitted |yaw| exceeds 30 deg (spread over the yaws);
    returns their names with the yaw."""
    candidates = []
    for photo in tqdm(list_images(photo_dir), desc="turned heads", unit="photo"):
        image = read_image(photo)
        face = _process(fitters, "facemesh", image, str(photo))
        if face is None:
            continue
        batch = FaceBatch.from_faces(["face"], [face], [None], 224, device)
        params, _ = fitters.shape.landmark_fitter.fit(LandmarkTargets.from_batch(batch))  # the yaw, quickly
        yaw = float(params.angles[0, 1]) * 180 / math.pi
        if abs(yaw) > 30:
            candidates.append((abs(yaw), photo, image))
    candidates.sort(key=lambda c: c[0])
    spread = [round(i * (len(candidates) - 1) / max(count - 1, 1)) for i in range(min(count, len(candidates)))]
    picked = [candidates[i] for i in dict.fromkeys(spread)]
    names = []
    for yaw, photo, image in picked:
        faces = {source: _process(fitters, source, image, str(photo)) for source in ("dlib", "facemesh")}
        fits = {source: _fit_photo(fitters, face, device) for source, face in faces.items() if face is not None}
        _overlay(out / f"turned_{photo.stem}.png", image, faces, fits, fitters)
        names.append(f"{photo.name} ({yaw:.0f} deg)")
    return names


def summary_rows(records: list[dict]) -> list[dict]:
    rows = []
    for dataset in dict.fromkeys(r["set"] for r in records):
        methods = dict.fromkeys(r["method"] for r in records if r["set"] == dataset)
        for method in methods:
            row = {"set": dataset, "method": method}
            chosen = [r for r in records if r["set"] == dataset and r["method"] == method]
            means = []
            for b in BINS:
                values = np.array([r["nme"] for r in chosen if r["bin"] == b], np.float64)
                ok = values[np.isfinite(values)]
                row[b] = float(ok.mean()) if len(ok) else ""
                row[f"n {b}"] = f"{len(ok)}/{len(values)}"
                means.append(row[b])
            row["mean of bins"] = float(np.mean(means)) if all(isinstance(m, float) for m in means) else ""
            for b in BINS:
                mm = np.array([r.get("vertex_mm", float("nan")) for r in chosen if r["bin"] == b], np.float64)
                row[f"mm {b}"] = float(np.nanmean(mm)) if np.isfinite(mm).any() else ""
            rows.append(row)
        if dataset.endswith("(real)"):
            rows += [{"set": "AFLW2000-3D, all 2000 (published)", "method": name, **dict(zip(BINS, values)),
                      "mean of bins": float(np.mean(values))} for name, values in PUBLISHED.items()]
    return rows


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.landmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aflw", default=str(common.SHARED / "data" / "landmarks" / "aflw2000_dev"),
                        help="AFLW2000-3D folder with gt.json (default: the shared development sample)")
    parser.add_argument("--n", type=int, help="synthetic heads per yaw bin (default 8; 1 with --quick)")
    parser.add_argument("--texture_photos", default=str(common.SHARED / "data" / "faces" / "single"),
                        help="folder holding the frontal photos whose textures dress the synthetic heads")
    parser.add_argument("--backgrounds", default=str(common.SHARED / "data" / "faces" / "multi"),
                        help="photos cropped for backgrounds (default: the shared group photos)")
    parser.add_argument("--overlays", help="write pictures of the landmarks on every photo and some renders here")
    parser.add_argument("--turned_heads", type=int, default=0,
                        help="with --overlays: also draw this many turned heads (|yaw| > 30 deg) of --texture_photos")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one synthetic head per bin, two textures")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true")
    return parser.parse_args(argv)


def run(args, argv: list[str]) -> list[dict]:
    from utils.runtime import resolve_device

    device = resolve_device(args.device)
    seed_everything(args.seed)
    fitters = _fitters(device)
    overlays = Path(args.overlays) if args.overlays else None
    records = []
    aflw = Path(args.aflw)
    if (aflw / "gt.json").is_file():
        records += real_records(fitters, aflw, device, overlays)
    else:
        logger.warning("%s/gt.json not found: the real-photo rows are left out", aflw)
    n = args.n if args.n is not None else (1 if args.quick else 8)
    photos = [Path(args.texture_photos) / name for name in TEXTURE_PHOTOS]
    photos = [p for p in photos if p.is_file()][: 2 if args.quick else None]
    textures = (photo_textures(fitters.face_model, photos, fitters.shape.landmark_fitter.dense_points,
                               device=device) if photos else [])
    backgrounds = list_images(args.backgrounds) if Path(args.backgrounds).is_dir() else []
    if n > 0 and textures and backgrounds:
        records += synthetic_records(fitters, n, textures, backgrounds, args.seed, device, overlays)
    if overlays is not None and args.turned_heads:
        turned = turned_head_overlays(fitters, Path(args.texture_photos), args.turned_heads, overlays, device)
        logger.info("turned heads drawn: %s", ", ".join(turned))
    name = "landmarks_quick" if args.quick else "landmarks"
    rows = summary_rows(records)
    columns = ["set", "method", *BINS, "mean of bins", *(f"n {b}" for b in BINS), *(f"mm {b}" for b in BINS)]
    notes = (f"NME (%) of 68 points / sqrt(w h) of the truth's box, per |yaw| bin; 'n' = faces scored / faces in "
             f"the bin (a detector that finds no face is not scored). Real: {aflw} (original annotation). "
             f"Synthetic: {n} ICT heads per bin, textures unwrapped from {len(textures)} frontal shared photos, "
             "backgrounds from the shared group photos, detectors run on the renders; mm: mean vertex error of "
             "the fit over the face region after rigid alignment, per bin. Per-face values: "
             f"{name}.csv.")
    common.report(name, "Landmarks and shape against ground truth, per yaw bin", rows, columns,
                  "python -m benchmarks.landmarks " + " ".join(argv), notes)
    if records:
        common.write_csv(name, records, ["set", "item", "yaw_deg", "bin", "method", "nme", "vertex_mm"])
    return rows


def main(argv=None) -> int:
    return common.benchmark_main(argv, _parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
