"""Glasses found on real photos: how often the frame detector is right.

The shared photo manifest (``MANIFEST.tsv``) notes which photos show
glasses. This benchmark preprocesses the photos noted with glasses worn on
the eyes (not "on head") and every ``--stride``-th of the rest (detection,
FaceMesh, the aligned crop at the detail resolution, as the pipeline does),
runs :func:`fitting.glasses.detect_glasses` and reports, for each group,
how many faces it found glasses on, the mean rim score and the mean share
of the crop the frame mask covers. Photos without FaceMesh points (no glasses
can be found) are counted apart.

Usage::

    python -m benchmarks.glasses [--stride 6] [--limit N]

Results: ``benchmarks/results/glasses.{json,md,csv}`` (the CSV per photo).
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import tempfile
from pathlib import Path

from utils.errors import ToolkitError

from . import common

__all__ = ["read_glasses_notes", "main"]

logger = logging.getLogger("uvapm.benchmarks")


def read_glasses_notes(manifest: Path) -> dict[Path, bool]:
    """Photo path -> whether the manifest's notes say glasses are worn (photos of ``single/`` only)."""
    photos = {}
    with manifest.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if not row["file"].startswith("single/"):
                continue
            notes = row["notes"].lower()
            photos[manifest.parent / row["file"]] = "glasses" in notes and "on head" not in notes
    return photos


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.glasses", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--manifest", default=str(common.SHARED / "data" / "faces" / "MANIFEST.tsv"),
                        help="the shared photos' manifest (default: the shared MANIFEST.tsv)")
    parser.add_argument("--stride", type=int, default=6, help="every N-th photo without glasses (default 6)")
    parser.add_argument("--limit", type=int, default=0, help="at most this many photos of each group (0: all)")
    parser.add_argument("--quick", action="store_true", help="4 photos of each group")
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.add_argument("--quiet", "-q", action="store_true")
    return parser.parse_args(argv)


def run(args, argv: list[str]) -> list[dict]:
    """The benchmark; returns the summary rows."""
    from fitting.config import FittingConfig, PreprocessConfig
    from fitting.glasses import detect_glasses
    from fitting.preprocess.preprocessor import Preprocessor
    from fitting.structures import FaceBatch
    from utils.image_io import read_image

    manifest = Path(args.manifest)
    if not manifest.is_file():
        raise ToolkitError(f"{manifest}: not found (see --manifest)")
    notes = read_glasses_notes(manifest)
    limit = 4 if args.quick else args.limit
    groups = {True: [p for p, g in notes.items() if g], False: [p for p, g in notes.items() if not g][::args.stride]}
    if limit:
        groups = {k: v[:limit] for k, v in groups.items()}
    config = FittingConfig()
    preprocessor = Preprocessor(PreprocessConfig(masks="landmarks", checkpoints_dir=tempfile.mkdtemp()))
    records = []
    for glasses, photos in groups.items():
        for path in photos:
            photo = read_image(path)
            faces = preprocessor(photo, source=path.name)
            if not faces:
                logger.warning("%s: no face found; left out", path.name)
                continue
            batch = FaceBatch.from_faces([path.stem], faces[:1], [photo], config.detail_crop_size)
            found = detect_glasses(batch.detail_image, batch.dense_landmarks, batch.dense_valid,
                                   batch.image.shape[-1], config.unwrap.glasses)
            records.append({"photo": path.stem, "glasses (manifest)": int(glasses),
                            "facemesh": int(batch.dense_valid[0] > 0.5), "score": float(found.score[0]),
                            "found": int(found.present[0]), "mask share": float(found.mask.mean())})
    rows = []
    for glasses, label in ((True, "glasses worn"), (False, "no glasses")):
        group = [r for r in records if r["glasses (manifest)"] == glasses]
        measured = [r for r in group if r["facemesh"]]
        found = [r for r in measured if r["found"]]
        rows.append({"photos": label, "faces": len(group), "with FaceMesh": len(measured),
                     "glasses found": len(found), "share found": len(found) / max(len(measured), 1),
                     "mean score": sum(r["score"] for r in measured) / max(len(measured), 1),
                     "mean mask share (found)": sum(r["mask share"] for r in found) / max(len(found), 1)})
    name = "glasses_quick" if args.quick else "glasses"
    notes_text = (f"Photos of {manifest.parent / 'single'} whose manifest notes say glasses (not 'on head'), and every "
                  f"{args.stride}-th of the others. Detector: fitting.glasses.detect_glasses with the default "
                  "unwrap.glasses settings on the 512-px aligned crop. 'share found' is over the faces with FaceMesh "
                  f"points. Per-photo values: {name}.csv.")
    columns = ["photos", "faces", "with FaceMesh", "glasses found", "share found", "mean score",
               "mean mask share (found)"]
    common.report(name, "Glasses found on real photos", rows, columns,
                  "python -m benchmarks.glasses " + " ".join(argv), notes_text)
    common.write_csv(name, records, list(records[0]) if records else ["photo"])
    return rows


def main(argv=None) -> int:
    return common.benchmark_main(argv, _parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
