"""A contact sheet of UV albedo maps and new-light renders, to look at what a change does to the albedo.

    python scripts/albedo_contact_sheet.py [--photos P1 P2 ...] [--output_dir DIR] [--resume]

Fits each photo with the full pipeline (:func:`fitting.runner.run_folder`,
as ``fitting.run``) and writes ``DIR/albedo_sheet.png``: one row per face
with the aligned crop, the de-lit unwrapped texture, the final UV albedo and
renders of the reconstruction from -60, 0 and +60 degrees under the studio
light (:func:`fitting.views.render`), labelled with the photo's and the
albedo's skin tone (ITA angle, ``metrics.json``). The default photos are 12
of the shared set chosen to be hard for an albedo: glasses, dark and
coloured scenes, dark and light skin, turned heads.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.fit_setup import add_fitting_args, fit_photos  # noqa: E402

logger = logging.getLogger("uvapm.scripts")

#: Shared photos and why each is in the sheet.
DEFAULT_PHOTOS = {
    "0020_d3dfr.png": "glasses, three-quarter view",
    "0097_deepface.jpg": "glasses, South Asian",
    "0276_gpen.png": "glasses, beard, microphone",
    "0417_maskdet.jpg": "glasses, low-light selfie",
    "0207_simswap.jpg": "green-tinted low-light still",
    "0211_simswap.jpg": "dark movie still",
    "0203_simswap.jpg": "darker skin, low light",
    "0162_stargan2.jpg": "darker skin",
    "0130_facerec.jpg": "darker skin, three-quarter view",
    "0001_d3dfr.jpg": "red hair, three-quarter view",
    "0259_beautygan.png": "light skin, freckles",
    "0152_stargan2.jpg": "blonde, three-quarter view",
}
TILE = 192
VIEWS = (-60.0, 0.0, 60.0)


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python scripts/albedo_contact_sheet.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", nargs="+", help="photos to fit (default: 12 of the shared set, see the source)")
    parser.add_argument("--output_dir", default=str(Path(tempfile.gettempdir()) / "uvapm_albedo_sheet"),
                        help="fitting outputs and albedo_sheet.png (default: <tmp>/uvapm_albedo_sheet)")
    parser.add_argument("--resume", action="store_true", help="keep faces already complete in --output_dir")
    add_fitting_args(parser)
    return parser.parse_args(argv)


def _tile(image, size: int = TILE):
    """A float image in [0, 1] (RGBA composited on mid grey) as a (size, size, 3) uint8 tile."""
    import cv2
    import numpy as np

    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[2] == 4:
        image = image[..., :3] * image[..., 3:] + 0.5 * (1 - image[..., 3:])
    tile = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
    return (np.clip(tile, 0, 1) * 255 + 0.5).astype(np.uint8)


def _label(tile, text: str):
    import cv2

    out = tile.copy()
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(out, text, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def sheet_row(face_dir: Path, processed: Path, views_dir: Path, render_config):
    """One row, a (TILE, 6 TILE, 3) uint8 array: crop | unwrapped | albedo | the three views."""
    import numpy as np

    from fitting.structures import ProcessedFace
    from fitting.views import render
    from utils.image_io import read_image

    crop = ProcessedFace.load(processed).image[0].permute(1, 2, 0).numpy()
    unwrapped = read_image(face_dir / "uv_unwrapped.png").astype(np.float32) / 255.0
    albedo = read_image(face_dir / "uv_albedo.png").astype(np.float32) / 255.0
    render(render_config, face_dir / "uv_albedo.png", views_dir, None, face_dir / "coeffs.pt")
    views = [read_image(views_dir / f"view_{int(round(yaw)):+04d}.png").astype(np.float32) / 255.0 for yaw in VIEWS]
    metrics = json.loads((face_dir / "metrics.json").read_text())
    tone = f"ITA photo {metrics.get('photo_skin_ita_deg', float('nan')):.0f}"
    tone_albedo = f"ITA albedo {metrics.get('albedo_skin_ita_deg', float('nan')):.0f}"
    tiles = [_label(_tile(crop), face_dir.name), _label(_tile(unwrapped), "unwrapped"),
             _label(_tile(albedo), tone_albedo), _label(_tile(views[0]), tone), *[_tile(v) for v in views[1:]]]
    return np.concatenate(tiles, 1)


def run(args) -> Path:
    """Fit the photos and write the sheet; returns its path."""
    import numpy as np

    from fitting.config import RenderConfig
    from utils.errors import ToolkitError
    from utils.image_io import write_image

    shared = Path(os.environ.get("UVAPM_SHARED", REPO.parent / "shared")) / "data" / "faces" / "single"
    photos = [Path(p) for p in args.photos] if args.photos else [shared / name for name in DEFAULT_PHOTOS]
    missing = [str(p) for p in photos if not p.is_file()]
    if missing:
        raise ToolkitError(f"{missing[0]}: not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    output_dir = Path(args.output_dir)
    fit_dir, _ = fit_photos(args, photos, output_dir)
    render_config = replace(RenderConfig(), views=list(VIEWS), light="studio", resolution=TILE * 2,
                            device=args.device)
    rows = []
    for photo in photos:
        face_dir = fit_dir / photo.stem
        if not (face_dir / "metrics.json").is_file():
            logger.warning("%s: the fit failed; left out of the sheet", photo.name)
            continue
        rows.append(sheet_row(face_dir, fit_dir / "processed_data" / f"{photo.stem}.pt", face_dir / "views",
                              render_config))
    if not rows:
        raise ToolkitError("no face was fitted; nothing to show")
    sheet = output_dir / "albedo_sheet.png"
    write_image(sheet, np.concatenate(rows, 0))
    logger.info("wrote %s (%d faces)", sheet, len(rows))
    return sheet


def main(argv=None) -> int:
    from utils.cli import run_main, setup_logging

    args = _parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    return run_main(lambda: run(args) and 0, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
