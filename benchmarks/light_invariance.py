"""Light invariance of the recovered albedo on real photos of the same person in different scenes.

An albedo is the skin's colour without the scene's light: two photos of one
person under different lights should give the same albedo, while the raw
photos differ. ``--identities`` (default: the shared ``identities.tsv``,
columns file, person) lists such photos. The benchmark runs the pipeline
(:func:`fitting.runner.run_folder`, as ``fitting.run``) on them and reads
from each face's ``metrics.json``:

* the **photo's skin tone**: median colour of the crop's skin-mask pixels;
* the **albedo's skin tone**: median colour of the final UV albedo over the
  texels where the photo showed skin (the unwrapping's skin confidence above
  0.5: brows, lips and eyelids out, as in the photo's skin mask),

both in CIELAB (D65) with the ITA angle (:mod:`models.colour`). Reported,
for the photos and for the albedo: the mean CIE76 colour difference between
photos of the same person (``same person dE``), between photos of different
people (``different people dE``), their ratio, and the spread (standard
deviation) of the ITA angle within a person. A light-invariant albedo has a
same-person difference well below the photos' own, and a ratio to the
different-people difference well below 1.

Usage::

    python -m benchmarks.light_invariance [--identities TSV] [--output_dir DIR] [--resume] [--quick]

Results: ``benchmarks/results/light_invariance[_quick].{json,md,csv}`` (the CSV per photo).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from utils.errors import ToolkitError

from . import common
from .fit_setup import add_fitting_args, fit_photos

__all__ = ["read_identities", "colour_differences", "main"]

logger = logging.getLogger("uvapm.benchmarks")

KINDS = ("photo_skin", "albedo_skin")


def read_identities(path: Path) -> dict[str, list[Path]]:
    """person -> photos, from a TSV with columns ``file`` (relative to the TSV's folder) and ``person``;
    people with a single photo are left out."""
    people: dict[str, list[Path]] = {}
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            people.setdefault(row["person"], []).append(path.parent / row["file"])
    return {person: photos for person, photos in people.items() if len(photos) > 1}


def colour_differences(lab: dict[str, np.ndarray], person: dict[str, str]) -> dict[str, float]:
    """Mean CIE76 difference over same-person and over different-people pairs of photos.

    Args:
        lab: photo name -> (3,) CIELAB colour.
        person: photo name -> person label.
    """
    same, different = [], []
    for a, b in itertools.combinations(sorted(lab), 2):
        distance = float(np.linalg.norm(lab[a] - lab[b]))
        (same if person[a] == person[b] else different).append(distance)
    return {"same person dE": float(np.mean(same)) if same else float("nan"),
            "different people dE": float(np.mean(different)) if different else float("nan"),
            "same pairs": len(same), "different pairs": len(different)}


def _ita_spread(ita: dict[str, float], person: dict[str, str]) -> float:
    """Mean over people of the standard deviation of their photos' ITA angles."""
    groups: dict[str, list[float]] = {}
    for name, value in ita.items():
        groups.setdefault(person[name], []).append(value)
    return float(np.mean([np.std(v) for v in groups.values() if len(v) > 1]))


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.light_invariance", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--identities", default=str(common.SHARED / "data" / "faces" / "identities.tsv"),
                        help="TSV of photos of the same people (default: the shared identities.tsv)")
    parser.add_argument("--output_dir", help="fitting outputs (default: <tmp>/uvapm_benchmarks/light_invariance)")
    parser.add_argument("--resume", action="store_true", help="keep faces already complete in --output_dir")
    add_fitting_args(parser)
    return parser.parse_args(argv)


def run(args, argv: list[str]) -> list[dict]:
    """The benchmark; returns the summary rows."""
    name = "light_invariance_quick" if args.quick else "light_invariance"
    identities = Path(args.identities)
    if not identities.is_file():
        raise ToolkitError(f"{identities}: not found (see --identities)")
    people = read_identities(identities)
    if args.quick:
        people = dict(list(people.items())[:2])
    if len(people) < 2:
        raise ToolkitError(f"{identities}: needs at least two people with two photos each")
    output_dir = Path(args.output_dir or Path(tempfile.gettempdir()) / "uvapm_benchmarks" / name)
    person = {photo.stem: label for label, photos in people.items() for photo in photos}
    _, models = fit_photos(args, [photo for photos in people.values() for photo in photos], output_dir)
    records, lab, ita = [], {k: {} for k in KINDS}, {k: {} for k in KINDS}
    for photo in sorted(person):
        path = output_dir / "fit" / photo / "metrics.json"
        if not path.is_file():
            logger.warning("%s: no metrics.json (the fit failed); left out", photo)
            continue
        metrics = json.loads(path.read_text())
        record = {"photo": photo, "person": person[photo]}
        for kind in KINDS:
            values = [metrics.get(f"{kind}_{c}") for c in ("L", "a", "b")]
            if any(v is None for v in values):
                continue
            lab[kind][photo] = np.asarray(values, np.float64)
            ita[kind][photo] = float(metrics[f"{kind}_ita_deg"])
            record.update({f"{kind}_{c}": v for c, v in zip(("L", "a", "b"), values)})
            record[f"{kind}_ita_deg"] = ita[kind][photo]
        records.append(record)
    rows = []
    for kind, label in zip(KINDS, ("photo skin (input)", "recovered albedo")):
        scored = {p: person[p] for p in lab[kind]}
        differences = colour_differences(lab[kind], scored)
        rows.append({"colour of": label, "photos": len(lab[kind]), "people": len(set(scored.values())),
                     **differences,
                     "same / different": differences["same person dE"] / differences["different people dE"],
                     "ITA spread per person (deg)": _ita_spread(ita[kind], scored)})
    if len(rows) == 2 and rows[0]["same person dE"] > 0:
        rows[1]["same / photos' same"] = rows[1]["same person dE"] / rows[0]["same person dE"]
    notes = (
        f"{len(person)} photos of {len(people)} people from {identities}; fitting outputs in {output_dir / 'fit'}. "
        "Colour: median over the crop's skin-mask pixels (photo) or over the final UV albedo's texels where the "
        "photo showed skin (unwrap skin confidence > 0.5; albedo), sRGB -> CIELAB (D65); dE: CIE76, mean over "
        "pairs of photos; ITA: "
        f"atan((L - 50) / b). {models.description} Per-photo values: {name}.csv."
    )
    columns = ["colour of", "photos", "people", "same person dE", "different people dE", "same / different",
               "same / photos' same", "ITA spread per person (deg)", "same pairs", "different pairs"]
    common.report(name, "Light invariance of the albedo: the same person under different scenes", rows, columns,
                  "python -m benchmarks.light_invariance " + " ".join(argv), notes)
    common.write_csv(name, records, list(dict.fromkeys(k for r in records for k in r)))
    return rows


def main(argv=None) -> int:
    return common.benchmark_main(argv, _parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
