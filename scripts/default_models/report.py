"""Step ``report``: held-out numbers on the test photos, the pictures of the models and their model cards."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from skimage.color import rgb2lab

from fitting.config import FittingConfig
from fitting.run import DEFAULT_CONFIG
from fitting.runner import run_folder
from models.config import UVAPMBuildConfig
from models.uv_albedo_model import UVAlbedoModel
from utils.atomic import write_json, write_text
from utils.config import load_config
from utils.image_io import list_images, read_image, write_image

from .data import CHROMA_SPREAD, load_maps
from .uvapm import EVALUATION_RESOLUTION, ROBUST_ROUNDS, UVAPM_BUDGET_MB, reconstruction_psnr

__all__ = ["ITA_GROUPS", "skin_tone_group", "step_report", "write_model_cards"]

logger = logging.getLogger("uvapm.build")

#: The model cards' text, with ``{fields}`` filled by :func:`write_model_cards`.
TEMPLATES = Path(__file__).resolve().parent / "templates"

#: Individual typology angle (ITA, degrees) bounds of the skin-tone groups (Chardon et al.), lightest first.
ITA_GROUPS = (("very light", 55), ("light", 41), ("intermediate", 28), ("tan", 10), ("brown", -30),
              ("dark", -90))


def skin_tone_group(texture: np.ndarray, confidence: np.ndarray) -> tuple[str, float]:
    """ITA group of the median skin colour of a UV map's confident texels."""
    sure = confidence > 0.7
    pixels = texture[sure] if sure.sum() > 100 else texture.reshape(-1, 3)
    L, _, b = rgb2lab(np.median(pixels, 0)[None, None].astype(np.float64))[0, 0]
    ita = math.degrees(math.atan2(L - 50, b))
    return next(name for name, bound in ITA_GROUPS if ita > bound), ita


def _pictures(args, model: UVAlbedoModel) -> None:
    """Mean, the first five components at -2/+2 sigma per channel jointly, and random samples."""
    with torch.no_grad():
        rows = [model(torch.zeros(1, model.num_coeffs))]
        K = model.num_components
        for k in range(5):
            for sign in (-2.0, 2.0):
                c = torch.zeros(1, model.num_coeffs)
                c[0, [k, K + k, 2 * K + k]] = sign
                rows.append(model(c))
        samples = model.sample(6, torch.Generator().manual_seed(args.seed))
    grid = torch.cat([torch.cat(rows[1:], 3)[0], torch.cat([rows[0][0]] * 10, 2)], 1)
    write_image(args.work / "report" / "uvapm_components.png", grid.clamp(0, 1).permute(1, 2, 0).numpy())
    write_image(args.work / "report" / "uvapm_samples.png",
                torch.cat(list(samples), 2).clamp(0, 1).permute(1, 2, 0).numpy())


def _normalisation_picture(args, rows: int = 5, size: int = 192) -> None:
    """Before | after | confidence for the training maps with the largest colour correction, then the
    confidence-weighted mean of all training maps before | after."""
    gains = json.loads((args.work / "normalisation.json").read_text())["gains"]
    train = {p.stem for p in (args.work / "uv" / "train").glob("*.png")}
    ranked = sorted((n for n in gains if n in train), key=lambda n: -np.abs(np.array(gains[n]) - 1).max())
    load = lambda path: F.interpolate(torch.from_numpy(read_image(path).copy()).permute(2, 0, 1)[None].float()  # noqa: E731
                                      / 255, size=size, mode="area")[0]
    tiles, sums = [], {"raw": 0.0, "normalised": 0.0, "weight": 0.0}
    for i, name in enumerate(ranked):
        raw = load(args.work / "uv" / "train_raw" / f"{name}.png")
        after = load(args.work / "uv" / "train" / f"{name}.png")
        conf = load(args.work / "uv" / "train" / f"{name}_conf.png")[:1]
        sums["raw"] += conf * raw
        sums["normalised"] += conf * after
        sums["weight"] += conf
        if i < rows:
            tiles.append(torch.cat([raw, after, conf.expand(3, -1, -1)], 2))
    weight = sums["weight"].clamp_min(1e-6)
    tiles.append(torch.cat([sums["raw"] / weight, sums["normalised"] / weight, torch.ones(3, size, size)], 2))
    write_image(args.work / "report" / "normalisation.png", torch.cat(tiles, 1).permute(1, 2, 0).numpy())


def _run_variant(args, names: list[str], variant: str, sets: list[str]) -> dict:
    """Reconstruct the test photos with one configuration; per-face metrics."""
    photos = args.work / "test_photos"
    photos.mkdir(exist_ok=True)
    source = {p.stem: p for p in list_images(Path(args.photos))}
    for name in names:
        link = photos / source[name].name
        if not link.exists():
            link.symlink_to(source[name].resolve())
    config = load_config(FittingConfig, DEFAULT_CONFIG, [f"uvapm={args.output_dir / 'uvapm_ict.npz'}",
                                                         f"detail_model={args.output_dir / 'detail_ict.pt'}", *sets])
    out = args.work / "test_runs" / variant
    run_folder(photos, out, config, progress=not args.quiet)
    done = [n for n in names if (out / n / "metrics.json").is_file()]
    return {n: json.loads((out / n / "metrics.json").read_text()) for n in done}


def step_report(args, table) -> dict:
    report = args.work / "report"
    report.mkdir(exist_ok=True)
    selection = json.loads((args.work / "uvapm_selection.json").read_text())
    model = UVAlbedoModel.from_file(args.output_dir / "uvapm_ict.npz")
    _pictures(args, model)
    _normalisation_picture(args)
    maps, confs, names = load_maps(args.work / "uv" / "test", EVALUATION_RESOLUTION)
    fit_psnr, psnr = reconstruction_psnr(model, maps, confs)
    groups: dict[str, list[float]] = {}
    for name, value in zip(names, psnr.tolist()):
        texture = read_image(args.work / "uv" / "test" / f"{name}.png").astype(np.float32) / 255
        conf = read_image(args.work / "uv" / "test" / f"{name}_conf.png")[..., 0].astype(np.float32) / 255
        groups.setdefault(skin_tone_group(texture, conf)[0], []).append(value)
    per_group = {g: {"count": len(v), "psnr": float(np.mean(v))} for g, v in groups.items()}
    test_names = [n for n, r in table.items() if r["subset"] == "test" and r["kept"]]
    # Stages run in order and are seeded, so "stage 3 off" is the full run read after stage 2.
    full = _run_variant(args, test_names, "full", [])
    mean_only = _run_variant(args, test_names, "uvapm_mean",
                             ["stages=[1,2]", "albedo.optim.steps=0", "albedo.init_from_unwrap=false"])
    generated_only = _run_variant(args, test_names, "generated_detail", ["detail.observed_detail=false"])
    variants = {"full (stages 1-3)": (full, "stage3"), "stage 3, generated detail only": (generated_only, "stage3"),
                "stage 3 off": (full, "stage2"), "UVAPM mean only": (mean_only, "stage2")}
    pipeline = {}
    for variant, (metrics, stage) in variants.items():
        keys = [f"{stage}_psnr", f"{stage}_ssim", f"{stage}_high_freq_psnr", f"{stage}_psnr_512",
                f"{stage}_high_freq_psnr_512", "landmark_residual"]
        pipeline[variant] = {k: float(np.nanmean([m[k] for m in metrics.values() if m.get(k) is not None]))
                             for k in keys}
        pipeline[variant]["faces"] = len(metrics)
        pipeline[variant]["seconds_per_face"] = float(np.mean(
            [sum(v for k, v in m["seconds"].items() if stage == "stage3" or k != "stage3") for m in metrics.values()]))
    summary = {"uvapm": selection["chosen"], "test_reconstruction_psnr": float(psnr.mean()),
               "test_fit_psnr": float(fit_psnr.mean()),
               "test_maps": len(names), "per_skin_tone": per_group, "pipeline": pipeline}
    write_json(report / "report.json", summary)
    logger.info("test UVAPM reconstruction PSNR %.2f dB over %d maps", summary["test_reconstruction_psnr"], len(names))
    write_model_cards(args, table, summary)
    return summary


def _count(table: dict, subset: str) -> tuple[int, int]:
    rows = [r for r in table.values() if r["subset"] == subset]
    return sum(r["kept"] for r in rows), len(rows)


def write_model_cards(args, table: dict, summary: dict) -> None:
    """``MODEL_CARD_uvapm_ict.md`` and ``MODEL_CARD_detail_ict.md`` beside the models, from ``templates/``."""
    selection = json.loads((args.work / "uvapm_selection.json").read_text())
    detail = json.loads((args.work / "detail_summary.json").read_text())
    chosen, pipe = selection["chosen"], summary["pipeline"]
    (train_kept, train_all), (val_kept, val_all), (test_kept, test_all) = (
        _count(table, s) for s in ("train", "val", "test"))
    command = (f"python scripts/build_default_models.py --photos ../shared/data/faces/single --seed {args.seed} "
               f"--epochs {args.epochs} --lr {args.lr} --kl_weight {args.kl_weight} --latent_dim {args.latent_dim} "
               f"--latent_grid {args.latent_grid} --base_channels {args.base_channels}")
    data = (
        f"{train_all + val_all + test_all} public example photographs with one main face, collected from the "
        "example and test folders of public face-analysis repositories (a manifest of sources and licences ships "
        "with the photo set; no photo or personal name is stored here). Seeded split: "
        f"{train_all} train ({train_kept} kept after selection), {val_all} validation ({val_kept} kept; choosing "
        f"resolution and K), {test_all} test ({test_kept} kept; reported numbers only). Known skews of the photo set: "
        "many young adults and celebrities, fewer dark-skinned, elderly and infant faces, few true profiles and "
        "low-light photos."
    )
    candidates = "\n".join(f"| {c['resolution']} | {c['K']} | {c['val_psnr']:.2f} | {c['val_fit_psnr']:.2f} | "
                            f"{c['size_mb']:.1f} |" for c in selection["candidates"])
    rounds = "\n".join(f"| {r['round']} | {100 * r['rejected']:.2f} % | {r['K']} | {r['val_psnr']:.2f} | "
                        f"{r['val_fit_psnr']:.2f} |" for r in selection["rounds"] if r["K"] == chosen["K"])
    groups = "\n".join(f"| {g} | {v['count']} | {v['psnr']:.2f} |" for g, v in summary["per_skin_tone"].items())
    pipe_rows = []
    for name, v in pipe.items():
        stage = "stage2" if name.startswith(("stage 3 off", "UVAPM")) else "stage3"
        pipe_rows.append(f"| {name} | {v['faces']} | {v[stage + '_psnr']:.2f} | {v[stage + '_ssim']:.3f} | "
                         f"{v[stage + '_high_freq_psnr_512']:.2f} | {v['landmark_residual']:.4f} | "
                         f"{v['seconds_per_face']:.1f} |")
    evr = np.array(selection["explained_variance"])
    uvapm_card = (TEMPLATES / "MODEL_CARD_uvapm.md").read_text().format(
        command=command, data=data, chroma_spread=CHROMA_SPREAD, resolution=chosen["resolution"], K=chosen["K"],
        robust_rounds=ROBUST_ROUNDS, robust_components=UVAPMBuildConfig.robust_components,
        outlier_threshold=UVAPMBuildConfig.outlier_threshold, rounds=rounds,
        budget_mb=UVAPM_BUDGET_MB, evaluation_resolution=EVALUATION_RESOLUTION, candidates=candidates,
        explained_variance=", ".join(f"{v:.3f}" for v in evr), test_psnr=summary["test_reconstruction_psnr"],
        test_fit_psnr=summary["test_fit_psnr"], test_maps=summary["test_maps"], groups=groups)
    history = detail["history"]
    best = min(history, key=lambda h: h["val_loss"])
    detail_card = (TEMPLATES / "MODEL_CARD_detail.md").read_text().format(
        low_pass_resolution=chosen["resolution"], command=command, train_maps=train_kept, data=data,
        channels=detail["channels"], channel_kind="luminance" if detail["channels"] == 1 else "RGB",
        chroma_percent=detail["chroma_share"] * 100, latent_grid=args.latent_grid, latent_dim=args.latent_dim,
        latent_size=args.latent_grid**2 * args.latent_dim, base_channels=args.base_channels, epochs=len(history),
        best_val_loss=best["val_loss"], best_epoch=best["epoch"], best_train_loss=best["train_loss"],
        pipeline_rows="\n".join(pipe_rows))
    write_text(args.output_dir / "MODEL_CARD_uvapm_ict.md", uvapm_card)
    write_text(args.output_dir / "MODEL_CARD_detail_ict.md", detail_card)
