"""Several photos of one person: the joint fit (``--group_by``) against each photo fitted alone.

**Synthetic truth.** ``--faces`` synthetic heads (identity, expression and
albedo truth as in :mod:`benchmarks.synthetic_gt`, easy-level noise), each
rendered in the four scenes of :data:`VIEWS` (turned left and right, frontal,
each under another coloured directional light). Each render is fitted alone;
the person is fitted jointly from the scene pairs (0, 1) and (2, 3) and from all
four. Scores of each albedo against the truth: PSNR over the texels the
photo(s) showed and over every face texel (one least-squares gain per channel,
as in synthetic_gt), the CIE76 colour difference of its median colour over the
face from the truth's (``dE truth``), and the **light spread**: the colour
difference between albedos of the same face recovered from different scenes
(single: the four single-photo albedos pairwise; joint: the pair (0, 1) against
the pair (2, 3)). Coverage: the share of face texels the unwrapping saw.
Seconds per person for 2, 4 and 8 photos (8: the four scenes and their mirror
images).

**Real photos.** The people of ``--identities`` (two photos each in the
shared set) are fitted alone and jointly with ``fitting.run --group_by
folder``; reported: coverage, the colour difference between the two
single-photo albedos of a person (the spread a single-photo user gets, against
the photos' own), and the joint albedo's difference from each. ``--sheet_dir``
writes a contact sheet: per person its two photos, their single-photo albedos
and the joint albedo.

Usage::

    python -m benchmarks.multi_photo [--faces 3] [--identities TSV] [--sheet_dir DIR] [--quick]

Results: ``benchmarks/results/multi_photo[_quick].{json,md,csv}``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import common
from .fit_setup import add_fitting_args, fit_photos, fitting_config

__all__ = ["VIEWS", "main"]

logger = logging.getLogger("uvapm.benchmarks")

#: The synthetic scenes: name, head yaw (deg), light direction (SH band 1, x y z) and light colour (R, G, B).
VIEWS = (
    ("left, tungsten", -25.0, (-0.25, 0.05, 0.25), (1.25, 1.0, 0.7)),
    ("right, shade", 25.0, (0.25, 0.05, 0.25), (0.8, 0.95, 1.25)),
    ("frontal, flash", 0.0, (0.0, 0.1, 0.35), (1.0, 1.0, 1.0)),
    ("turned left, dim warm", -12.0, (-0.15, 0.25, 0.15), (0.75, 0.62, 0.5)),
)


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.multi_photo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--faces", type=int, help="synthetic faces (default 3; 1 with --quick; 0 skips)")
    parser.add_argument("--identities", default=str(common.SHARED / "data" / "faces" / "identities.tsv"),
                        help="photos of the same people (file, person); '' skips the real photos")
    parser.add_argument("--people", type=int, help="people of --identities to fit (default all; 2 with --quick)")
    parser.add_argument("--photos", default=str(common.SHARED / "data" / "faces" / "single"),
                        help="the default models' photo set, whose test split gives the albedo truths")
    parser.add_argument("--backgrounds", default=str(common.SHARED / "data" / "faces" / "multi"))
    parser.add_argument("--output_dir", help="fitting outputs of the real photos (default: <tmp>/uvapm_benchmarks)")
    parser.add_argument("--resume", action="store_true", help="keep the real photos' fits already in --output_dir")
    parser.add_argument("--sheet_dir", help="write contact_sheet.png of the real people here")
    add_fitting_args(parser)
    return parser.parse_args(argv)


def _sh_light(direction: tuple[float, float, float]):
    import torch

    gamma = torch.zeros(1, 27)
    gamma.view(1, 3, 9)[:, :, 1:4] = torch.tensor(direction)
    return gamma


def _synthetic(args, config) -> tuple[list[dict], list[dict]]:
    """The synthetic experiment: per-estimate records and the summary rows."""
    import torch
    from tqdm import tqdm

    from fitting.pipeline import Pipeline
    from fitting.preprocess import Preprocessor
    from models.uv_layout import UVLayout
    from utils.image_io import list_images
    from utils.runtime import resolve_device, seed_everything

    from . import synthetic_gt as sg

    pipeline = Pipeline(config, resolve_device(args.device))
    face_model = pipeline.face_model
    truths_args = argparse.Namespace(albedo_dir=None, photos=args.photos, textures=2 if args.quick else 12,
                                     quick=args.quick)
    maps, known, _ = sg._albedo_truths(truths_args, face_model, pipeline)
    preprocessor = Preprocessor(replace(config.preprocess, device=config.device,
                                        checkpoints_dir=config.checkpoints_dir, visualise=False))
    maker = sg.SceneMaker(face_model, list_images(args.backgrounds), maps, pipeline.uvapm, preprocessor, args.seed,
                          known)
    faces = args.faces if args.faces is not None else (1 if args.quick else 3)
    records, seconds = [], {}
    layouts: dict[int, UVLayout] = {}
    for index in tqdm(range(faces), desc="synthetic people", unit="person", disable=args.quiet):
        scenes = list(VIEWS) + ([(f"{n} (mirrored)", -yaw, (-d[0], d[1], d[2]), c) for n, yaw, d, c in VIEWS]
                                if index == 0 else [])
        shots = []
        for view, (scene, yaw, direction, colour) in enumerate(scenes):
            name, photo, face, truth = maker.make("easy", index, light_colour=colour, yaw_deg=yaw,
                                                  light=_sh_light(direction))
            R = truth.albedo.shape[-1]
            layouts.setdefault(R, UVLayout(face_model, R))
            masks = sg.uv_masks(face_model, truth.params, torch.zeros(1, 3, sg.PHOTO_SIZE, sg.PHOTO_SIZE),
                                layouts[R], truth.albedo_known)
            shots.append((f"{name}_view{view}", photo, face, truth, masks, scene))
        if any(s[2] is None for s in shots[:4]):
            logger.warning("synthetic person %d: a render without a detected face; left out", index)
            continue

        def fit(members: list[int], shots=shots):
            seed_everything(args.seed)
            chosen = [shots[m] for m in members]
            batch = pipeline.batch([s[0] for s in chosen], [s[2] for s in chosen], [s[1] for s in chosen],
                                   groups=[0] * len(chosen) if len(chosen) > 1 else None)
            start = time.perf_counter()
            results = pipeline.run(batch)
            return results[0], time.perf_counter() - start

        truth = shots[0][3]
        face_masks = sg.UVMasks(visible=shots[0][4].face, unseen=shots[0][4].face, face=shots[0][4].face)
        true_lab = sg._lab(truth.albedo, shots[0][4].face)
        estimates = {}
        for members in ([0], [1], [2], [3], [0, 1], [2, 3], [0, 1, 2, 3]):
            result, took = fit(members)
            albedo = result.albedo_maps.get("stage3", result.albedo_maps["stage2"])[None]
            seen = [sg.albedo_scores(truth.albedo, albedo, shots[m][4])["psnr_visible"] for m in members]
            lab = sg._lab(albedo, shots[0][4].face)
            estimates[tuple(members)] = lab
            records.append({
                "person": index, "photos": "+".join(str(m) for m in members), "method": "joint" if len(members) > 1
                else "single", "scenes": "; ".join(shots[m][5] for m in members),
                "psnr_seen": float(torch.stack(seen).mean()),
                "psnr_face": float(sg.albedo_scores(truth.albedo, albedo, face_masks)["psnr_visible"][0]),
                "dE_truth": float(np.linalg.norm(lab - true_lab)),
                "coverage": result.metrics.get("unwrap_coverage", float("nan")), "seconds": took,
            })
            if len(members) > 1:
                seconds.setdefault(len(members), []).append(took)
        if len(shots) == 8:
            seconds.setdefault(8, []).append(fit(list(range(8)))[1])
        spread_single = np.mean([np.linalg.norm(estimates[(a,)] - estimates[(b,)])
                                 for a in range(4) for b in range(a + 1, 4)])
        spread_joint = np.linalg.norm(estimates[(0, 1)] - estimates[(2, 3)])
        for record in records[-7:]:
            record["light_spread"] = float(spread_single if record["method"] == "single" else spread_joint)
    rows = []
    for label, chosen in (("single photo (each of the 4 scenes)", [r for r in records if r["method"] == "single"]),
                          ("joint, 2 photos (scenes 0+1, 2+3)", [r for r in records if r["photos"] in ("0+1", "2+3")]),
                          ("joint, 4 photos", [r for r in records if r["photos"] == "0+1+2+3"])):
        if not chosen:
            continue
        mean = lambda key, chosen=chosen: float(np.nanmean([r[key] for r in chosen]))  # noqa: E731
        row = {"set": "synthetic truth", "method": label, "people": len({r["person"] for r in chosen}),
               "albedo PSNR seen (dB)": mean("psnr_seen"), "albedo PSNR face (dB)": mean("psnr_face"),
               "dE to truth": mean("dE_truth"), "coverage": mean("coverage"),
               "seconds per person": mean("seconds")}
        if "4 photos" not in label:
            row["light spread dE"] = mean("light_spread")
        rows.append(row)
    for n in sorted(seconds):
        rows.append({"set": "synthetic truth", "method": f"seconds per person, {n} photos",
                     "people": len(seconds[n]), "seconds per person": float(np.mean(seconds[n]))})
    return records, rows


def _real(args, argv) -> tuple[list[dict], list[dict]]:
    """The real-photo experiment (single-photo and joint runs of ``fitting.run``)."""
    from fitting.runner import run_folder

    from .light_invariance import read_identities

    people = read_identities(Path(args.identities))
    count = args.people if args.people is not None else (2 if args.quick else len(people))
    people = dict(list(people.items())[:count])
    output_dir = Path(args.output_dir or Path(tempfile.gettempdir()) / "uvapm_benchmarks" /
                      ("multi_photo_quick" if args.quick else "multi_photo"))
    single_dir, _ = fit_photos(args, [p for photos in people.values() for p in photos], output_dir / "single")
    groups = output_dir / "groups"
    for person, photos in people.items():
        (groups / person).mkdir(parents=True, exist_ok=True)
        for photo in photos:
            link = groups / person / photo.name
            if link.is_symlink():
                link.unlink()
            link.symlink_to(photo.resolve())
    with tempfile.TemporaryDirectory(prefix="uvapm_fit_") as scratch:
        config, _ = fitting_config(args, Path(scratch))
        config.group_by, config.overwrite = "folder", not args.resume
        run_folder(groups, output_dir / "joint", config, progress=not args.quiet)
    records = []

    def lab(metrics: dict, kind: str) -> np.ndarray:
        return np.array([metrics[f"{kind}_{c}"] for c in ("L", "a", "b")], np.float64)

    for person, photos in people.items():
        joint_path = output_dir / "joint" / person / "metrics.json"
        singles = [single_dir / p.stem / "metrics.json" for p in photos]
        if not joint_path.is_file() or not all(s.is_file() for s in singles):
            logger.warning("%s: a fit failed; left out", person)
            continue
        joint = json.loads(joint_path.read_text())
        single = [json.loads(s.read_text()) for s in singles]
        pairs = list(itertools.combinations(single, 2))
        records.append({
            "person": person, "photos": " ".join(p.stem for p in photos),
            "photos dE": float(np.mean([np.linalg.norm(lab(a, "photo_skin") - lab(b, "photo_skin"))
                                        for a, b in pairs])),
            "single albedos dE": float(np.mean([np.linalg.norm(lab(a, "albedo_skin") - lab(b, "albedo_skin"))
                                                for a, b in pairs])),
            "joint vs single dE": float(np.mean([np.linalg.norm(lab(joint, "albedo_skin") - lab(s, "albedo_skin"))
                                                 for s in single])),
            "coverage single": float(np.mean([s["unwrap_coverage"] for s in single])),
            "coverage joint": float(joint["unwrap_coverage"]),
            "seconds single": float(sum(sum(s["seconds"].values()) for s in single)),
            "seconds joint": float(sum(joint["seconds"].values())),
        })
    if args.sheet_dir:
        _contact_sheet(people, single_dir, output_dir / "joint", Path(args.sheet_dir))
    if not records:
        return records, []
    mean = lambda key: float(np.mean([r[key] for r in records]))  # noqa: E731
    rows = [{"set": "real photos (2 per person)", "method": "photos' skin", "people": len(records),
             "same-person dE": mean("photos dE")},
            {"set": "real photos (2 per person)", "method": "single photo", "people": len(records),
             "same-person dE": mean("single albedos dE"), "coverage": mean("coverage single"),
             "seconds per person": mean("seconds single")},
            {"set": "real photos (2 per person)", "method": "joint, 2 photos", "people": len(records),
             "joint vs single dE": mean("joint vs single dE"), "coverage": mean("coverage joint"),
             "seconds per person": mean("seconds joint")}]
    return records, rows


def _contact_sheet(people: dict, single_dir: Path, joint_dir: Path, sheet_dir: Path) -> None:
    """Per person: its photos' crops, their single-photo albedos and the joint albedo, 192 px each."""
    import cv2

    from fitting.structures import ProcessedFace
    from utils.image_io import read_image, write_image

    def tile(path: Path) -> np.ndarray:
        if not path.is_file():
            return np.full((192, 192, 3), 0.5, np.float32)
        if path.suffix == ".pt":  # the aligned crop
            image = (ProcessedFace.load(path).image[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        else:
            image = read_image(path)
        return cv2.resize(image, (192, 192), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    rows = []
    for person, photos in people.items():
        crops = [tile(single_dir / "processed_data" / f"{p.stem}.pt") for p in photos]
        singles = [tile(single_dir / p.stem / "uv_albedo.png") for p in photos]
        rows.append(np.concatenate([*crops, *singles, tile(joint_dir / person / "uv_albedo.png")], 1))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=1.0)
                            for r in rows], 0)
    sheet_dir.mkdir(parents=True, exist_ok=True)
    write_image(sheet_dir / "contact_sheet.png", sheet)


def run(args, argv: list[str]) -> list[dict]:
    name = "multi_photo_quick" if args.quick else "multi_photo"
    records, rows = [], []
    with tempfile.TemporaryDirectory(prefix="uvapm_bench_") as scratch:
        config, models = fitting_config(args, Path(scratch))
        if (args.faces is None or args.faces > 0) and common.SHARED.is_dir():
            found, summary = _synthetic(args, config)
            records += [{"set": "synthetic", **r} for r in found]
            rows += summary
        if args.identities and Path(args.identities).is_file():
            found, summary = _real(args, argv)
            records += [{"set": "real", **r} for r in found]
            rows += summary
    notes = (
        "Synthetic: easy-level heads (synthetic_gt's truths, noise and JPEG) rendered in the scenes "
        f"{'; '.join(f'{i}: {v[0]}' for i, v in enumerate(VIEWS))}; PSNR after one gain per channel, 'seen': the "
        "texels the fitted photo(s) showed (true confidence > 0.5), 'face': every face texel; dE: CIE76 of the "
        "median colour over the face; light spread: single = the four single-photo albedos pairwise, joint = "
        "pair 0+1 against pair 2+3. Real: the two photos of each person of --identities; dE between the albedos' "
        "median colours over the texels where the photos showed skin (metrics.json's albedo_skin). Coverage: mean "
        "unwrap confidence "
        f"over the face texels. {models.description} Per-estimate values: {name}.csv."
    )
    columns = ["set", "method", "people", "albedo PSNR seen (dB)", "albedo PSNR face (dB)", "dE to truth",
               "light spread dE", "same-person dE", "joint vs single dE", "coverage", "seconds per person"]
    common.report(name, "Several photos of one person: joint fit against single photos", rows, columns,
                  "python -m benchmarks.multi_photo " + " ".join(argv), notes)
    common.write_csv(name, records, list(dict.fromkeys(k for r in records for k in r)))
    return rows


def main(argv=None) -> int:
    return common.benchmark_main(argv, _parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
