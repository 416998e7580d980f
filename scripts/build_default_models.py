"""Build the default UV albedo model and detail generator from a folder of photos.

    python scripts/build_default_models.py --photos ../shared/data/faces/single \\
        --work_dir /tmp/uvapm_build --output_dir checkpoints/default [--steps all]

Steps (each caches its results in ``--work_dir``; ``--steps`` runs a subset):

``split``
    Seeded split of the photos: 70 % train, 15 % validation (choosing the
    UVAPM's resolution and K), 15 % test (only for the reported numbers).
``fit``
    Preprocessing, stage 1 and texture unwrapping of every photo with the
    toolkit's own pipeline (``fitting.run --stages 1``).
``light``
    Fits the light/skin prior (``light_prior_ict.npz``) to the training
    photos' stage-1 mean face colours (``scripts/default_models/light.py``).
``select``
    Rejects bad unwraps (thresholds in :data:`scripts.default_models.data.THRESHOLDS`): a poor landmark
    fit, low confidence coverage, a strong occlusion of the face, or an
    extreme lighting residual (the stage-1 re-render PSNR).
``normalise``
    Removes colour casts: each texture's median skin chromaticity is pulled
    toward the training population's median when it lies further than
    ``CHROMA_SPREAD`` robust standard deviations from it (luminance, and so
    skin tone, is kept). Writes the maps the models are built from.
``uvapm``
    Builds the per-channel PCA at 256 px with robust rounds (each leaves out
    the texels the previous model finds to be outliers), measures the
    validation prediction PSNR of every K that fits the size budget after
    each round, keeps the best of the last, and saves it (float16 basis).
``detail``
    Measures how much of the high-frequency detail is chromatic (deciding
    luminance vs RGB detail), trains the detail generator on the training
    maps and saves it (float16).
``report``
    Held-out numbers on the test photos and the model cards.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils.cli import add_logging_args, setup_logging  # noqa: E402

STEPS = ("split", "fit", "light", "select", "normalise", "uvapm", "detail", "report")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=str(REPO.parent / "shared" / "data" / "faces" / "single"))
    parser.add_argument("--work_dir", default="/tmp/uvapm_build")
    parser.add_argument("--output_dir", default=str(REPO / "checkpoints" / "default"))
    parser.add_argument("--steps", default="all", help=f"comma-separated subset of {','.join(STEPS)}")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="redo the fit step for faces already fitted")
    parser.add_argument("--epochs", type=int, default=20, help="detail generator epochs")
    parser.add_argument("--lr", type=float, default=1e-3, help="detail generator learning rate")
    parser.add_argument("--kl_weight", type=float, default=2e-5,
                        help="detail generator KL weight (2 sigma^2: sigma = 0.003, a third of the detail's std)")
    parser.add_argument("--latent_dim", type=int, default=4, help="detail latent values per grid cell")
    parser.add_argument("--latent_grid", type=int, default=64, help="side of the detail latent grid")
    parser.add_argument("--base_channels", type=int, default=16)
    add_logging_args(parser)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    from scripts.default_models.data import step_fit, step_normalise, step_select, step_split
    from scripts.default_models.detail import step_detail
    from scripts.default_models.light import step_light
    from scripts.default_models.report import step_report
    from scripts.default_models.uvapm import step_uvapm
    from utils.runtime import seed_everything

    seed_everything(args.seed)
    args.work, args.output_dir = Path(args.work_dir), Path(args.output_dir)
    args.work.mkdir(parents=True, exist_ok=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    steps = STEPS if args.steps == "all" else tuple(args.steps.split(","))
    split = step_split(args) if "split" in steps else json.loads((args.work / "split.json").read_text())
    if "fit" in steps:
        step_fit(args)
    if "light" in steps:
        step_light(args, split)
    table = None
    if "select" in steps:
        table = step_select(args, split)
    elif {"normalise", "report"} & set(steps):
        table = json.loads((args.work / "selection.json").read_text())
    if "normalise" in steps:
        step_normalise(args, table)
    if "uvapm" in steps:
        step_uvapm(args)
    if "detail" in steps:
        step_detail(args)
    if "report" in steps:
        step_report(args, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
