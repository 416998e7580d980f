"""Steps ``split``, ``fit``, ``select`` and ``normalise``: the photos become training UV maps."""

from __future__ import annotations

import json
import logging
import math
import random
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from assets import load_installed_face_model
from fitting.config import FittingConfig
from fitting.runner import run_folder
from fitting.structures import ProcessedFace
from models.face_model import FaceModel
from models.uv_layout import UVLayout
from utils.atomic import write_json
from utils.image_io import list_images, read_image, write_image

__all__ = ["THRESHOLDS", "CHROMA_SPREAD", "split_names", "step_split", "step_fit", "step_select", "step_normalise",
           "load_maps", "median_chroma"]

logger = logging.getLogger("uvapm.build")

#: Rejection thresholds of the ``select`` step, set near the tails of the distributions over the shared
#: photos (medians: landmark error 0.019, coverage 0.18 of the whole UV layout, occlusion 0.45 — eyes, brows,
#: lips and nostrils are outside the skin mask by design —, stage-1 PSNR 27.6 dB).
THRESHOLDS = {
    "landmark_residual": 0.04,  # mean landmark error / outer-eye-corner distance, at most (~99th percentile)
    "unwrap_coverage": 0.12,  # mean texel confidence over the UV layout, at least (~7th percentile)
    "occlusion": 0.65,  # share of the landmark face region outside the skin mask, at most (~92nd percentile)
    "stage1_psnr": 21.0,  # re-render PSNR (dB) in the skin mask after stage 1, at least (~3rd percentile)
    "skin_chroma": 0.02,  # spread of the skin's median chromaticity from grey, at least (grayscale photos fail)
}
#: Chromaticities further than this many robust standard deviations from the population median are pulled in.
CHROMA_SPREAD = 1.5


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in list_images(folder))


def split_names(names: list[str], seed: int) -> dict[str, list[str]]:
    """The recipe's seeded split of photo names: 15 % test, 15 % validation, the rest train."""
    rng = random.Random(seed)
    shuffled = sorted(names)
    rng.shuffle(shuffled)
    n_test = math.ceil(0.15 * len(names))
    return {"test": sorted(shuffled[:n_test]), "val": sorted(shuffled[n_test : 2 * n_test]),
            "train": sorted(shuffled[2 * n_test :])}


def step_split(args) -> dict:
    split = split_names(_names(Path(args.photos)), args.seed)
    write_json(args.work / "split.json", split)
    logger.info("split: %d train, %d validation, %d test", *(len(split[k]) for k in ("train", "val", "test")))
    return split


def step_fit(args) -> None:
    config = FittingConfig(face_model="ict", stages=[1], seed=args.seed, overwrite=args.overwrite)
    config.outputs.glb = False
    run_folder(Path(args.photos), args.work / "fit", config, progress=not args.quiet)


def _occlusion(face: ProcessedFace) -> float:
    """Share of the landmark face region (jaw + brows hull) not covered by the skin mask."""
    import cv2

    lm = face.landmarks[0].numpy()
    hull = cv2.convexHull(np.concatenate([lm[:17], lm[17:27]]).astype(np.float32))
    region = np.zeros((224, 224), np.uint8)
    cv2.fillConvexPoly(region, np.round(hull[:, 0]).astype(np.int32), 1)
    skin = face.skin_mask[0, 0].numpy() > 0.5
    inside = region.astype(bool)
    return float(1.0 - (skin & inside).sum() / max(inside.sum(), 1))


def step_select(args, split) -> dict:
    fit = args.work / "fit"
    table = {}
    for subset, names in split.items():
        for name in names:
            metrics_path = fit / name / "metrics.json"
            if not metrics_path.is_file():
                table[name] = {"subset": subset, "kept": False, "reason": "no face or fit failed"}
                continue
            metrics = json.loads(metrics_path.read_text())
            face = ProcessedFace.load(fit / "processed_data" / f"{name}.pt")
            texture = read_image(fit / name / "uv_unwrapped.png").astype(np.float32) / 255.0
            confidence = read_image(fit / name / "uv_confidence.png")[..., 0].astype(np.float32) / 255.0
            stats = {
                "landmark_residual": metrics["landmark_residual"],
                "unwrap_coverage": metrics["unwrap_coverage"],
                "occlusion": _occlusion(face),
                "stage1_psnr": metrics["stage1_psnr"],
                "skin_chroma": float(np.abs(median_chroma(texture, confidence) - 1 / 3).max()),
            }
            reasons = [k for k, v in stats.items()
                       if (v > THRESHOLDS[k] if k in ("landmark_residual", "occlusion") else v < THRESHOLDS[k])]
            table[name] = {"subset": subset, "kept": not reasons, "reason": ", ".join(reasons), **stats}
    write_json(args.work / "selection.json", table)
    for subset in split:
        rows = [r for r in table.values() if r["subset"] == subset]
        kept = sum(r["kept"] for r in rows)
        logger.info("%s: %d of %d kept", subset, kept, len(rows))
    return table


def median_chroma(texture: np.ndarray, confidence: np.ndarray) -> np.ndarray:
    sure = confidence > 0.7
    pixels = texture[sure] if sure.sum() > 100 else texture.reshape(-1, 3)
    chroma = pixels / np.clip(pixels.sum(1, keepdims=True), 1e-6, None)
    return np.median(chroma, 0)


def step_normalise(args, table) -> dict:
    fit, out = args.work / "fit", args.work / "uv"
    face_model = FaceModel(load_installed_face_model("ict"))
    layout = UVLayout(face_model, 512)
    items = {}
    for name, row in table.items():
        if not row["kept"]:
            continue
        texture = read_image(fit / name / "uv_unwrapped.png").astype(np.float32) / 255.0
        confidence = read_image(fit / name / "uv_confidence.png")[..., 0].astype(np.float32) / 255.0
        items[name] = (texture, confidence, median_chroma(texture, confidence))
    train = np.stack([c for n, (_, _, c) in items.items() if table[n]["subset"] == "train"])
    centre = np.median(train, 0)
    spread = 1.4826 * np.median(np.abs(train - centre), 0)
    gains = {}
    for name, (texture, confidence, chroma) in items.items():
        target = centre + np.clip(chroma - centre, -CHROMA_SPREAD * spread, CHROMA_SPREAD * spread)
        gain = target / chroma
        luminance = np.array([0.299, 0.587, 0.114])
        gain = gain / (luminance @ (gain * chroma) / (luminance @ chroma))  # keep the skin's luminance
        normalised = np.clip(texture * gain, 0, 1)
        conf = torch.from_numpy(confidence)[None, None]
        filled = (conf + (1 - conf) * 0.8 * layout.mirrored(conf))[0, 0].numpy() * layout.mask[0].numpy()
        subset = table[name]["subset"]
        write_image(out / subset / f"{name}.png", normalised)
        write_image(out / subset / f"{name}_conf.png", filled)
        write_image(out / f"{subset}_raw" / f"{name}.png", texture)
        write_image(out / f"{subset}_raw" / f"{name}_conf.png", filled)
        gains[name] = gain.tolist()
    write_json(args.work / "normalisation.json", {"centre": centre.tolist(), "spread": spread.tolist(),
                                                   "gains": gains})
    changed = sum(np.abs(np.array(g) - 1).max() > 0.02 for g in gains.values())
    logger.info("normalised %d maps (%d with a gain change above 2 %%)", len(gains), changed)
    return gains


def load_maps(folder: Path, resolution: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    names = sorted(p.stem for p in folder.glob("*.png") if not p.stem.endswith("_conf"))
    maps, confs = [], []
    for name in names:
        maps.append(torch.from_numpy(read_image(folder / f"{name}.png").copy()).permute(2, 0, 1).float() / 255)
        confs.append(torch.from_numpy(read_image(folder / f"{name}_conf.png")[..., :1].copy()).permute(2, 0, 1)
                     .float() / 255)
    resize = lambda x: F.interpolate(torch.stack(x), size=resolution, mode="area")  # noqa: E731
    return resize(maps), resize(confs), names


