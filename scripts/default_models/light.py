"""Step ``light``: the light/skin prior from the training photos' stage-1 face colours.

Stage 1 (the ``fit`` step) records each face's mean colour before any
split (``face_colour_r/g/b`` in ``metrics.json``). The prior
(:class:`models.light_prior.LightSkinPrior`) is fitted to the log colours
of the training photos; photos of the people listed in
``identities.tsv`` beside the photo folder are left out wherever they fell
in the split, because the light-invariance benchmark measures on them.
Photos whose eyes were closed, hidden or not found are left out. Held-out
check: on the validation photos, the whites of the eyes' colour (its part
orthogonal to the level) predicted from the face's colour through the
learned light, against their mean.
"""

from __future__ import annotations

import csv
import json
import logging
import math
from pathlib import Path

import numpy as np

from fitting.config import FittingConfig
from fitting.eye_probe import sclera_colour
from fitting.structures import FaceBatch, ProcessedFace
from models.light_prior import LightSkinPrior
from utils.atomic import write_json, write_text
from utils.image_io import list_images, read_image

from .data import THRESHOLDS

__all__ = ["step_light", "load_face_colours", "identity_photo_names"]

logger = logging.getLogger("uvapm.build")

TEMPLATE = Path(__file__).parent / "templates" / "MODEL_CARD_light_prior.md"


def identity_photo_names(photos: Path) -> set[str]:
    """Stems of the photos that ``identities.tsv`` (next to the photo folder) lists; empty when it is absent."""
    table = photos.parent / "identities.tsv"
    if not table.is_file():
        return set()
    with table.open(newline="") as f:
        return {Path(row["file"]).stem for row in csv.DictReader(f, delimiter="\t")}


def load_face_colours(fit_dir: Path, photos: Path, names: list[str]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The names with a usable stage-1 fit and observed whites of the eyes, their mean face colours (N, 3) and
    their sclera colours (N, 3), measured on the photo re-warped at the pipeline's detail resolution."""
    by_stem = {p.stem: p for p in list_images(photos)}
    detail_size = FittingConfig().detail_crop_size
    kept, colours, scleras = [], [], []
    for name in names:
        path = fit_dir / name / "metrics.json"
        if not path.is_file() or name not in by_stem:
            continue
        metrics = json.loads(path.read_text())
        if metrics["landmark_residual"] > THRESHOLDS["landmark_residual"]:
            continue
        face = ProcessedFace.load(fit_dir / "processed_data" / f"{name}.pt")
        batch = FaceBatch.from_faces([name], [face], [read_image(by_stem[name])], detail_size)
        sclera, observed = sclera_colour(batch.detail_image, batch.dense_landmarks, batch.dense_valid,
                                         batch.image.shape[-1])
        if not observed[0]:
            continue
        kept.append(name)
        colours.append([metrics[f"face_colour_{c}"] for c in "rgb"])
        scleras.append(sclera[0].tolist())
    return kept, np.asarray(colours, np.float64).reshape(-1, 3), np.asarray(scleras, np.float64).reshape(-1, 3)


def _srgb_hex(log_colour: np.ndarray) -> str:
    rgb = np.clip(np.exp(log_colour), 0, 1)
    return "#" + "".join(f"{round(float(v) * 255):02x}" for v in rgb)


def _std_row(cov: np.ndarray) -> str:
    level, chroma = _level_chroma_std(cov)
    return " | ".join(f"{v:.3f}" for v in np.sqrt(np.diag(cov))) + f" | {level:.3f} | {chroma:.3f}"


def _level_chroma_std(cov: np.ndarray) -> tuple[float, float]:
    """Spread along the level axis (1, 1, 1)/sqrt(3) and the root mean spread in the colour plane."""
    axis = np.ones(3) / math.sqrt(3.0)
    level = float(axis @ cov @ axis)
    return math.sqrt(level), math.sqrt(max(float(np.trace(cov)) - level, 0.0) / 2)


def _matrix_rows(matrix: np.ndarray) -> str:
    return "\n".join("| " + " | ".join(f"{v:+.2f}" for v in row) + " |" for row in matrix)


def step_light(args, split: dict) -> LightSkinPrior:
    fit, photos = args.work / "fit", Path(args.photos)
    held_out = identity_photo_names(photos)
    train_names, train_c, train_s = load_face_colours(fit, photos, [n for n in split["train"] if n not in held_out])
    val_names, val_c, val_s = load_face_colours(fit, photos, [n for n in split["val"] if n not in held_out])
    if len(train_names) < 12:
        raise RuntimeError(f"{fit}: only {len(train_names)} training photos have a stage-1 face colour and observed "
                           "eyes; run the fit step")
    log = lambda x: np.log(np.clip(x, 1e-3, None))  # noqa: E731
    prior = LightSkinPrior.fit(log(train_c), log(train_s))
    prior.save(args.output_dir / "light_prior_ict.npz")
    # Held out: the whites of the eyes predicted from the face's colour alone (through the shared light),
    # against their population mean.
    _, face_only = prior.light_gains()
    predicted = prior.sclera_mean + (log(val_c) - prior.skin_mean) @ face_only.T
    colour_plane = np.eye(3) - np.full((3, 3), 1 / 3)  # the check is on colour: the light's level is not learned
    rmse = lambda e: float(np.sqrt(((e @ colour_plane) ** 2).sum(1).mean())) if len(e) else float("nan")  # noqa: E731
    summary = {
        "train_photos": len(train_names), "val_photos": len(val_names), "held_out_identity_photos": len(held_out),
        "samples_after_trim": prior.samples,
        "val_sclera_rmse_predicted": rmse(log(val_s) - predicted),
        "val_sclera_rmse_mean": rmse(log(val_s) - prior.sclera_mean),
        "skin_share_of_level": 1.0 - float(np.ones(3) @ face_only @ np.ones(3) / 3),
    }
    write_json(args.work / "light_prior_summary.json", summary)
    with_eyes, _ = prior.light_gains()
    card = TEMPLATE.read_text().format(
        train=summary["train_photos"], samples=prior.samples, val=summary["val_photos"], held_out=len(held_out),
        skin_mean=_srgb_hex(prior.skin_mean), sclera_mean=_srgb_hex(prior.sclera_mean),
        skin_row=_std_row(prior.skin_cov), sclera_row=_std_row(prior.sclera_cov), light_row=_std_row(prior.light_cov),
        skin_share_of_level=summary["skin_share_of_level"] * 100, face_only=_matrix_rows(face_only),
        with_eyes=_matrix_rows(with_eyes), rmse_predicted=summary["val_sclera_rmse_predicted"],
        rmse_mean=summary["val_sclera_rmse_mean"])
    write_text(args.output_dir / "MODEL_CARD_light_prior_ict.md", card)
    logger.info("light/skin prior from %d photos: spreads (R, G, B, level, colour) skin %s, light %s", prior.samples,
                _std_row(prior.skin_cov), _std_row(prior.light_cov))
    return prior
