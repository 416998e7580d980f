"""The pipeline on real photos: detection, fit quality and identity preservation.

Runs ``fitting.run`` (:func:`fitting.run.run_folder`, the same code as
``python -m fitting.run``) on a folder of photos, then measures per photo:

* **detected**: preprocessing found a face (``processed_data/<name>.pt``);
  **fitted**: the face's ``metrics.json`` was written;
* **landmark residual** of the fit: mean distance between the fitted and the
  detected landmarks over the outer-eye-corner distance (``metrics.json``;
  agreement with the detector, not accuracy);
* **re-render PSNR / SSIM / high-frequency PSNR** of the last stage that ran,
  inside the skin mask (rendered face x skin x parse masks), on the 224 crop
  and on the detail crop (``metrics.json``);
* **identity preservation**: dlib's face recognition network
  (``face_recognition_models``' ResNet, 128-d descriptors of 150x150 chips
  aligned by dlib's 68-point shape predictor, run on each image inside the
  detected face box) gives the descriptor distance between the photo and
  ``render.png`` (the re-rendered face composited on the photo), and whether
  it is below dlib's same-person threshold 0.6. The chip includes the hair
  and background, which the composite shares with the photo, so distances
  are lower than between two photos; for scale, the same distance between
  each render and every *other* photo (different people, mostly) is
  reported as the impostor distance.

Photos: every photo of ``--input_dir``, or ``--limit`` of them evenly
spaced in name order (the shared folder is sorted by source, so this mixes
sources). Outputs of the fit go to ``--output_dir``; complete faces are
redone unless ``--resume``.

Usage::

    python -m benchmarks.real_photos [--input_dir DIR] [--limit 40] [--output_dir DIR] [--quick]

Results: ``benchmarks/results/real_photos[_quick].{json,md,csv}`` (the CSV per photo).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from fitting.structures import ProcessedFace
from utils.errors import ToolkitError
from utils.image_io import list_images, read_image

from . import common
from .fit_setup import add_fitting_args, add_photo_folder_args, fit_photos, photo_output_dir

__all__ = ["SAME_PERSON_THRESHOLD", "IdentityEmbedder", "select_photos", "main"]

logger = logging.getLogger("uvapm.benchmarks")

#: dlib's documented threshold: descriptors of the same person are closer than this.
SAME_PERSON_THRESHOLD = 0.6
METRICS = ("landmark_residual", "psnr", "ssim", "high_freq_psnr", "psnr_detail", "ssim_detail", "high_freq_psnr_detail",
           "id_distance", "impostor_distance")


class IdentityEmbedder:
    """dlib's face descriptor of a face in a given box."""

    def __init__(self):
        import dlib
        import face_recognition_models

        self.dlib = dlib
        self.predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self.network = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def __call__(self, image: np.ndarray, box) -> np.ndarray:
        """(128,) descriptor of the face of ``image`` (H, W, 3) uint8 RGB inside ``box`` (x0, y0, x1, y1)."""
        rect = self.dlib.rectangle(*(int(round(float(v))) for v in box))
        shape = self.predictor(image, rect)
        return np.asarray(self.network.compute_face_descriptor(image, shape), np.float64)


def select_photos(folder: Path, limit: int) -> list[Path]:
    """Every photo of ``folder`` (name order), or ``limit`` of them evenly spaced."""
    photos = list_images(folder)
    if not photos:
        raise ToolkitError(f"{folder}: no photos found")
    if 0 < limit < len(photos):
        photos = [photos[i] for i in np.unique(np.linspace(0, len(photos) - 1, limit).round().astype(int))]
    return photos


def _last_stage(metrics: dict) -> str:
    return f"stage{max(metrics['stages'])}"


def measure(photos: list[Path], fit_dir: Path, embedder: IdentityEmbedder) -> list[dict]:
    """Per-photo records (see the module docstring) from a finished run in ``fit_dir``."""
    records, descriptors = [], {}
    for photo in photos:
        name = photo.stem
        record = {"photo": photo.name, "detected": 0, "fitted": 0, **{k: float("nan") for k in METRICS}}
        processed = fit_dir / "processed_data" / f"{name}.pt"
        metrics_path = fit_dir / name / "metrics.json"
        if processed.is_file():
            record["detected"] = 1
        if metrics_path.is_file():
            metrics = json.loads(metrics_path.read_text())
            stage = _last_stage(metrics)
            size = next((k.rsplit("_", 1)[1] for k in metrics if k.startswith(f"{stage}_psnr_")), None)
            record.update({"fitted": 1, "stage": stage, "landmark_residual": metrics["landmark_residual"],
                           "seconds": sum(metrics["seconds"].values())})
            for key in ("psnr", "ssim", "high_freq_psnr"):
                record[key] = metrics[f"{stage}_{key}"]
                if size is not None:
                    record[f"{key}_detail"] = metrics[f"{stage}_{key}_{size}"]
            box = ProcessedFace.load(processed).face_box[0].tolist()
            descriptors[name] = (embedder(read_image(photo), box), embedder(read_image(fit_dir / name / "render.png"),
                                                                            box))
            record["id_distance"] = float(np.linalg.norm(descriptors[name][0] - descriptors[name][1]))
        records.append(record)
    for record in records:
        name = Path(record["photo"]).stem
        others = [d[0] for n, d in descriptors.items() if n != name]
        if name in descriptors and others:
            distances = np.linalg.norm(np.stack(others) - descriptors[name][1], axis=1)
            record["impostor_distance"] = float(distances.mean())
            record["impostor_below_threshold"] = float((distances < SAME_PERSON_THRESHOLD).mean())
    return records


def summary(records: list[dict]) -> list[dict]:
    """Rows of the table: rates, then each metric's mean, median and 10/90th percentiles over fitted photos."""
    count = len(records)
    fitted = [r for r in records if r["fitted"]]
    rows = [
        {"measure": "detection rate", "photos": count, "mean": sum(r["detected"] for r in records) / count},
        {"measure": "fit success rate", "photos": count, "mean": len(fitted) / count},
    ]
    for key in METRICS:
        values = np.array([r[key] for r in fitted], np.float64)
        values = values[np.isfinite(values)]
        if len(values):
            p10, median, p90 = np.percentile(values, [10, 50, 90])
            rows.append({"measure": key, "photos": len(values), "mean": float(values.mean()),
                         "median": float(median), "p10": float(p10), "p90": float(p90)})
    same = [r["id_distance"] < SAME_PERSON_THRESHOLD for r in fitted if np.isfinite(r["id_distance"])]
    if same:
        rows.append({"measure": f"share id_distance < {SAME_PERSON_THRESHOLD}", "photos": len(same),
                     "mean": float(np.mean(same))})
    impostors = [r["impostor_below_threshold"] for r in fitted if "impostor_below_threshold" in r]
    if impostors:
        rows.append({"measure": f"share impostor pairs < {SAME_PERSON_THRESHOLD}", "photos": len(impostors),
                     "mean": float(np.mean(impostors))})
    return rows


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.real_photos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_photo_folder_args(parser, "real_photos", "0 for all (default 40; 2 with --quick)")
    add_fitting_args(parser)
    return parser.parse_args(argv)


def run(args, argv: list[str]) -> list[dict]:
    """The benchmark; returns the summary rows."""
    name = "real_photos_quick" if args.quick else "real_photos"
    limit = args.limit if args.limit is not None else (2 if args.quick else 40)
    output_dir = photo_output_dir(args, name)
    photos = select_photos(Path(args.input_dir), limit)
    _, models = fit_photos(args, photos, output_dir)
    records = measure(photos, output_dir / "fit", IdentityEmbedder())
    rows = summary(records)
    notes = (
        f"{len(photos)} photos from {args.input_dir}; fitting outputs in {output_dir / 'fit'}. Landmark residual: "
        "fitted vs detected landmarks / outer-eye-corner distance (agreement with the detector, not accuracy: "
        "python -m benchmarks.landmarks scores against ground truth). psnr/ssim/high_freq_psnr: the last "
        "stage's re-render in the skin mask on the 224 crop; *_detail: the same on the detail crop. id_distance: "
        "dlib face descriptor distance between the photo and render.png (the re-render composited on the photo; "
        "the chip shares hair and background with the photo); impostor_distance: between each render and all "
        f"other photos. {models.description} Per-photo values: {name}.csv."
    )
    common.report(name, "Real photos: detection, fit quality, identity preservation", rows,
                  ["measure", "photos", "mean", "median", "p10", "p90"], "python -m benchmarks.real_photos "
                  + " ".join(argv), notes)
    fields = ["photo", "detected", "fitted", "stage", "seconds", *METRICS, "impostor_below_threshold"]
    common.write_csv(name, records, fields)
    return rows


def main(argv=None) -> int:
    return common.benchmark_main(argv, _parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
