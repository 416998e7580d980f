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
``select``
    Rejects bad unwraps (thresholds in :data:`THRESHOLDS`): a poor landmark
    fit, low confidence coverage, a strong occlusion of the face, or an
    extreme lighting residual (the stage-1 re-render PSNR).
``normalise``
    Removes colour casts: each texture's median skin chromaticity is pulled
    toward the training population's median when it lies further than
    ``CHROMA_SPREAD`` robust standard deviations from it (luminance, and so
    skin tone, is kept). Writes the maps the models are built from.
``uvapm``
    Builds the per-channel PCA at each candidate resolution, measures the
    validation reconstruction PSNR of every K that fits the size budget,
    keeps the best, and saves it (float16 basis).
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
import logging
import math
import random
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from fitting.pipeline import FittingConfig  # noqa: E402
from fitting.preprocess import load_processed  # noqa: E402
from fitting.run import run_folder  # noqa: E402
from models.detail_generator import DetailGeneratorConfig, extract_detail, rgb_to_luminance  # noqa: E402
from models.face_model import FaceModel  # noqa: E402
from models.uv_albedo_model import UVAlbedoModel, UVAlbedoModelData, save_uv_albedo_model  # noqa: E402
from models.uv_layout import UVLayout  # noqa: E402
from models.uvapm_build import build_uv_albedo_model  # noqa: E402
from utils.assets import load_installed_face_model  # noqa: E402
from utils.atomic import write_json  # noqa: E402
from utils.cli import add_logging_args, seed_everything, setup_logging  # noqa: E402
from utils.image_io import list_images, read_image, write_image  # noqa: E402

logger = logging.getLogger("uvapm.build")

#: Rejection thresholds of the ``select`` step, set near the tails of the distributions over the shared
#: photos (medians: landmark error 0.019, coverage 0.18 of the whole UV layout, occlusion 0.45 — eyes, brows,
#: lips and nostrils are outside the skin mask by design —, stage-1 PSNR 27.6 dB).
THRESHOLDS = {
    "landmark_error": 0.04,  # mean landmark error / outer-eye-corner distance, at most (~99th percentile)
    "unwrap_coverage": 0.12,  # mean texel confidence over the UV layout, at least (~7th percentile)
    "occlusion": 0.65,  # share of the landmark face region outside the skin mask, at most (~92nd percentile)
    "stage1_psnr": 21.0,  # re-render PSNR (dB) in the skin mask after stage 1, at least (~3rd percentile)
    "skin_chroma": 0.02,  # spread of the skin's median chromaticity from grey, at least (grayscale photos fail)
}
#: Chromaticities further than this many robust standard deviations from the population median are pulled in.
CHROMA_SPREAD = 1.5
#: Size budget of the UVAPM's float16 basis (MB); the detail generator gets the rest of 25 MB.
UVAPM_BUDGET_MB = 16.0
CANDIDATE_RESOLUTIONS = (128, 256)
CANDIDATE_K = (5, 10, 20, 30, 40, 60, 80, 100, 120, 150)
#: Resolution at which every candidate is compared with the validation maps.
EVALUATION_RESOLUTION = max(CANDIDATE_RESOLUTIONS)


def _names(folder: Path) -> list[str]:
    return sorted(p.stem for p in list_images(folder))


def step_split(args) -> dict:
    names = _names(Path(args.photos))
    rng = random.Random(args.seed)
    shuffled = names[:]
    rng.shuffle(shuffled)
    n_test = math.ceil(0.15 * len(names))
    split = {"test": sorted(shuffled[:n_test]), "val": sorted(shuffled[n_test : 2 * n_test]),
             "train": sorted(shuffled[2 * n_test :])}
    write_json(args.work / "split.json", split)
    logger.info("split: %d train, %d validation, %d test", *(len(split[k]) for k in ("train", "val", "test")))
    return split


def step_fit(args) -> None:
    config = FittingConfig(face_model="ict", stages=[1], seed=args.seed)
    config.outputs.glb = False
    run_folder(Path(args.photos), args.work / "fit", config, overwrite=args.overwrite, progress=not args.quiet)


def _occlusion(record: dict) -> float:
    """Share of the landmark face region (jaw + brows hull) not covered by the skin mask."""
    import cv2

    lm = record["landmarks"][0].numpy()
    hull = cv2.convexHull(np.concatenate([lm[:17], lm[17:27]]).astype(np.float32))
    region = np.zeros((224, 224), np.uint8)
    cv2.fillConvexPoly(region, np.round(hull[:, 0]).astype(np.int32), 1)
    skin = record["skin_mask"][0, 0].numpy() > 0.5
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
            record = load_processed(fit / "processed_data" / f"{name}.pt")
            texture = read_image(fit / name / "uv_unwrapped.png").astype(np.float32) / 255.0
            confidence = read_image(fit / name / "uv_confidence.png")[..., 0].astype(np.float32) / 255.0
            stats = {
                "landmark_error": metrics["landmark_error"],
                "unwrap_coverage": metrics["unwrap_coverage"],
                "occlusion": _occlusion(record),
                "stage1_psnr": metrics["stage1_psnr"],
                "skin_chroma": float(np.abs(_median_chroma(texture, confidence) - 1 / 3).max()),
            }
            reasons = [k for k, v in stats.items()
                       if (v > THRESHOLDS[k] if k in ("landmark_error", "occlusion") else v < THRESHOLDS[k])]
            table[name] = {"subset": subset, "kept": not reasons, "reason": ", ".join(reasons), **stats}
    write_json(args.work / "selection.json", table)
    for subset in split:
        rows = [r for r in table.values() if r["subset"] == subset]
        kept = sum(r["kept"] for r in rows)
        logger.info("%s: %d of %d kept", subset, kept, len(rows))
    return table


def _median_chroma(texture: np.ndarray, confidence: np.ndarray) -> np.ndarray:
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
        items[name] = (texture, confidence, _median_chroma(texture, confidence))
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


def _load_maps(folder: Path, resolution: int) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    names = sorted(p.stem for p in folder.glob("*.png") if not p.stem.endswith("_conf"))
    maps, confs = [], []
    for name in names:
        maps.append(torch.from_numpy(read_image(folder / f"{name}.png").copy()).permute(2, 0, 1).float() / 255)
        confs.append(torch.from_numpy(read_image(folder / f"{name}_conf.png")[..., :1].copy()).permute(2, 0, 1)
                     .float() / 255)
    resize = lambda x: F.interpolate(torch.stack(x), size=resolution, mode="area")  # noqa: E731
    return resize(maps), resize(confs), names


def _blocks(resolution: int, block: int = 16) -> torch.Tensor:
    """(1, 1, R, R) checkerboard of ``block``-texel squares (1 on the "fit" squares)."""
    index = torch.arange(resolution) // block
    return ((index[:, None] + index[None, :]) % 2 == 0).float()[None, None]


def reconstruction_psnr(model: UVAlbedoModel, maps: torch.Tensor, confidence: torch.Tensor,
                        ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
    """How well the model represents and predicts maps (PSNR (N,) each, texels with confidence > 0.5).

    * ``fit``: the coefficients are estimated from every seen texel and scored
      on the same texels (in-sample; more components always help);
    * ``predict``: they are estimated from half the texels (a checkerboard of
      16-texel squares) and scored on the other half, so it measures what the
      model knows about texels it was not given: the quantity that matters
      when a fit must complete unseen parts of a face.

    Maps at another resolution than the model's are compared at theirs.
    """
    sure = (confidence > 0.5).float()
    blocks = _blocks(maps.shape[-1]).to(maps)

    def psnr(fit_weights, score_mask):
        with torch.no_grad():
            recon = model(model.encode(maps, fit_weights, ridge=ridge), out_resolution=maps.shape[-1])
        mask = score_mask.expand_as(maps)
        mse = ((recon - maps) ** 2 * mask).flatten(1).sum(1) / mask.flatten(1).sum(1).clamp_min(1)
        return -10 * torch.log10(mse)

    return psnr(confidence, sure), psnr(confidence * blocks, sure * (1 - blocks))


def _truncate(data: UVAlbedoModelData, k: int) -> UVAlbedoModelData:
    """The model with its first k components per channel (PCA components are nested)."""
    K = data.num_components
    keep = np.concatenate([np.arange(c * K, c * K + k) for c in range(3)])
    return UVAlbedoModelData(mean=data.mean, basis=data.basis[:, :k], std=data.std[:, :k],
                             explained_variance_ratio=data.explained_variance_ratio[:, :k],
                             uv_layout_id=data.uv_layout_id, num_maps=data.num_maps,
                             coefficient_covariance=data.coefficient_covariance[np.ix_(keep, keep)])


def step_uvapm(args) -> dict:
    uv = args.work / "uv"
    layout_id = load_installed_face_model("ict").uv_layout_id
    results, built = [], {}
    maps, confs, _ = _load_maps(uv / "val", EVALUATION_RESOLUTION)
    train_count = len(list((uv / "train").glob("*_conf.png")))
    for resolution in CANDIDATE_RESOLUTIONS:
        max_k = max(k for k in CANDIDATE_K
                    if 3 * k * resolution**2 * 2 / 1e6 <= UVAPM_BUDGET_MB and k < 0.8 * train_count)
        data, skipped = build_uv_albedo_model(uv / "train", components=max_k, resolution=resolution,
                                              uv_layout_id=layout_id, seed=args.seed, progress=not args.quiet)
        if skipped:
            logger.warning("%d training maps skipped: %s", len(skipped), skipped)
        built[resolution] = data
        for k in CANDIDATE_K:
            if k > max_k:
                continue
            fit, predict = reconstruction_psnr(UVAlbedoModel(_truncate(data, k)), maps, confs)
            results.append({"resolution": resolution, "K": k, "val_psnr": float(predict.mean()),
                            "val_fit_psnr": float(fit.mean()), "size_mb": 3 * k * resolution**2 * 2 / 1e6})
            logger.info("R=%d K=%d: validation prediction PSNR %.2f dB (in-sample %.2f dB)", resolution, k,
                        results[-1]["val_psnr"], results[-1]["val_fit_psnr"])
    best_psnr = max(r["val_psnr"] for r in results)
    # the smallest model within 0.1 dB of the best prediction
    chosen = min((r for r in results if r["val_psnr"] >= best_psnr - 0.1), key=lambda r: r["size_mb"])
    data = _truncate(built[chosen["resolution"]], chosen["K"])
    save_uv_albedo_model(args.output_dir / "uvapm_ict.npz", data, basis_dtype=np.float16)
    summary = {"candidates": results, "chosen": chosen,
               "explained_variance": data.explained_variance_ratio.sum(1).tolist(), "num_maps": data.num_maps}
    write_json(args.work / "uvapm_selection.json", summary)
    logger.info("chosen R=%d K=%d (%.2f dB)", chosen["resolution"], chosen["K"], chosen["val_psnr"])
    return summary


def chroma_share(folder: Path, low_pass_resolution: int) -> float:
    """Share of the high-frequency detail energy that luminance detail cannot represent."""
    maps, confs, _ = _load_maps(folder, 512)
    detail = extract_detail(maps, low_pass_resolution, 3)
    luminance = rgb_to_luminance(detail)
    weight = (confs > 0.5).float()
    total = ((detail**2) * weight).sum()
    residual = (((detail - luminance) ** 2) * weight).sum()
    return float(residual / total)


def step_detail(args) -> dict:
    from models.detail_generator import load_detail_checkpoint, save_detail_generator
    from models.detail_training import DetailTrainingConfig, train_detail_generator

    uvapm = json.loads((args.work / "uvapm_selection.json").read_text())["chosen"]
    low = uvapm["resolution"]
    share = chroma_share(args.work / "uv" / "train", low)
    channels = 1 if share < 0.15 else 3
    logger.info("chromatic share of the detail energy: %.3f -> %d-channel detail", share, channels)
    config = DetailTrainingConfig()
    config.model = DetailGeneratorConfig(resolution=512, channels=channels, latent_dim=args.latent_dim,
                                         latent_grid=args.latent_grid, base_channels=args.base_channels,
                                         low_pass_resolution=low)
    config.data.dataset_path = str(args.work / "uv" / "train")
    config.data.val_split = 0.1
    config.data.num_workers = 0
    config.epochs, config.batch_size, config.seed = args.epochs, 8, args.seed
    config.lr, config.lr_decay, config.kl_weight = args.lr, 0.95, args.kl_weight
    config.device = "cpu"
    config.output_dir = str(args.work / "detail_run")
    last = Path(config.output_dir) / "last.pt"
    if last.is_file():
        config.resume = str(last)
    result = train_detail_generator(config, progress=not args.quiet)
    model, _ = load_detail_checkpoint(result.best_checkpoint)
    save_detail_generator(args.output_dir / "detail_ict.pt", model.half())
    summary = {"chroma_share": share, "channels": channels, "history": result.history}
    write_json(args.work / "detail_summary.json", summary)
    return summary


#: Individual typology angle (ITA, degrees) bounds of the skin-tone groups (Chardon et al.), lightest first.
ITA_GROUPS = (("very light", 55), ("light", 41), ("intermediate", 28), ("tan", 10), ("brown", -30),
              ("dark", -90))


def skin_tone_group(texture: np.ndarray, confidence: np.ndarray) -> tuple[str, float]:
    """ITA group of the median skin colour of a UV map's confident texels."""
    from skimage.color import rgb2lab

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
    from utils.config import load_config

    photos = args.work / "test_photos"
    photos.mkdir(exist_ok=True)
    source = {p.stem: p for p in list_images(Path(args.photos))}
    for name in names:
        link = photos / source[name].name
        if not link.exists():
            link.symlink_to(source[name].resolve())
    config = load_config(FittingConfig, REPO / "configs" / "fitting.yaml",
                         [f"uvapm={args.output_dir / 'uvapm_ict.npz'}",
                          f"detail_model={args.output_dir / 'detail_ict.pt'}", *sets])
    out = args.work / "test_runs" / variant
    run_folder(photos, out, config, overwrite=False, progress=not args.quiet)
    done = [n for n in names if (out / n / "metrics.json").is_file()]
    return {n: json.loads((out / n / "metrics.json").read_text()) for n in done}


def step_report(args, table) -> dict:
    report = args.work / "report"
    report.mkdir(exist_ok=True)
    selection = json.loads((args.work / "uvapm_selection.json").read_text())
    model = UVAlbedoModel.from_file(args.output_dir / "uvapm_ict.npz")
    _pictures(args, model)
    _normalisation_picture(args)
    maps, confs, names = _load_maps(args.work / "uv" / "test", EVALUATION_RESOLUTION)
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
                f"{stage}_high_freq_psnr_512", "landmark_error"]
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
    """``MODEL_CARD_uvapm_ict.md`` and ``MODEL_CARD_detail_ict.md`` beside the models."""
    from utils.atomic import write_text

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
    groups = "\n".join(f"| {g} | {v['count']} | {v['psnr']:.2f} |" for g, v in summary["per_skin_tone"].items())
    pipe_rows = []
    for name, v in pipe.items():
        stage = "stage2" if name.startswith(("stage 3 off", "UVAPM")) else "stage3"
        pipe_rows.append(f"| {name} | {v['faces']} | {v[stage + '_psnr']:.2f} | {v[stage + '_ssim']:.3f} | "
                         f"{v[stage + '_high_freq_psnr_512']:.2f} | {v['landmark_error']:.4f} | "
                         f"{v['seconds_per_face']:.1f} |")
    evr = np.array(selection["explained_variance"])
    uvapm_card = f"""# Default UV albedo model for ICT-FaceKit (`uvapm_ict.npz`)

Per-channel PCA of UV albedo maps (R, G and B each with its own mean and
components), in the ICT-FaceKit UV layout (`uv_layout_id` in the file),
built by this project's recipe.

- **Recipe**: `{command}` (steps split, fit, select, normalise, uvapm).
- **Data**: {data}
- **Maps**: each photo is fitted (stage 1) and unwrapped into the UV layout
  with a confidence map; mirrored texels count with 0.8 of their mirror's
  confidence, inpainted texels not at all; colour casts beyond
  {CHROMA_SPREAD} robust standard deviations of the training skin
  chromaticities are removed (luminance kept).
- **Resolution {chosen['resolution']}, K = {chosen['K']} per channel**, chosen as the smallest model within
  0.1 dB of the best validation *prediction* PSNR under a {UVAPM_BUDGET_MB:.0f} MB float16 budget. Prediction:
  coefficients estimated from half of a map's seen texels (a checkerboard of 16-texel squares at
  {EVALUATION_RESOLUTION}x{EVALUATION_RESOLUTION}) and scored on the other half, which measures what the model
  knows beyond the texels it is given; in-sample (fit on all seen texels, scored on the same) only grows with K:

| resolution | K | validation prediction PSNR (dB) | in-sample PSNR (dB) | basis size (MB, float16) |
|---|---|---|---|---|
{candidates}

- **Explained variance** (R, G, B): {', '.join(f'{v:.3f}' for v in evr)}.
- **Held-out (test) maps**, texels with confidence > 0.5: prediction PSNR
  **{summary['test_reconstruction_psnr']:.2f} dB**, in-sample PSNR {summary['test_fit_psnr']:.2f} dB, over
  {summary['test_maps']} maps.
- **By skin tone** (ITA group of the map's median skin colour; small groups are noisy):

| group | test maps | prediction PSNR (dB) |
|---|---|---|
{groups}

## Known limitations and biases
- Built from about two hundred photos, not FFHQ-UV's tens of thousands: the
  components capture skin tone, lighting residue and coarse structure, not
  the variety of a large data set.
- The maps are de-lit with a 9-band SH model: hard shadows, specular
  highlights and ambient occlusion the model cannot explain remain partly in
  the albedo (most visibly around the nose and under the brows).
- The photo set has few dark-skinned, elderly and infant faces; the model's
  samples are biased toward the majority (see the table above).
- Low-light and strongly tinted photos are partly normalised, not fully
  (exposure and skin tone are not separable from one photo).
- Unseen regions (ears, neck, under the chin) are completed by mirroring and
  smooth inpainting, so the model holds little information there.
"""
    history = detail["history"]
    best = min(history, key=lambda h: h["val_loss"])
    detail_card = f"""# Default detail generator for ICT-FaceKit (`detail_ict.pt`)

A convolutional VAE over the high-frequency detail of 512x512 UV albedo maps
(`models.detail_generator.DetailVAE`): detail = map - upsample(area-downsample
to {chosen['resolution']}), i.e. the frequencies the UVAPM cannot represent.

- **Recipe**: `{command}` (steps ..., detail).
- **Data**: the same training maps as the UVAPM ({train_kept} maps; 10 % of them held out for validation
  during training). {data}
- **Channels**: {detail['channels']} ({'luminance' if detail['channels'] == 1 else 'RGB'} detail). Measured on the
  training maps: {detail['chroma_share'] * 100:.1f} % of the high-frequency energy (texels with confidence > 0.5)
  is chromatic, i.e. not representable by luminance detail added equally to R, G and B; below 15 % the
  1-channel model is used.
- **Architecture**: a spatial latent of {args.latent_grid}x{args.latent_grid} cells with {args.latent_dim} values
  each ({args.latent_grid**2 * args.latent_dim} in all), base channels {args.base_channels}, stored in float16. A
  single global latent vector (the paper's design) did not generalise from this few maps: on 27 held-out maps
  at 256 px, 60 training steps reduced the validation error by 1.3 % with one 128-d vector, 16 % with a 16x16x8
  grid and 41 % with a 32x32x4 grid.
- **Training**: {len(history)} epochs, batch 8, Adam; best validation reconstruction loss
  {best['val_loss']:.3e} at epoch {best['epoch']} (train {best['train_loss']:.3e}).
- **Held-out effect in the full pipeline** (test photos; PSNR/SSIM of the re-render inside the skin mask at
  224 px, high-frequency PSNR at the 512 px detail crop):

| configuration | faces | PSNR (dB) | SSIM | high-freq PSNR 512 (dB) | landmark error | s/face |
|---|---|---|---|---|---|---|
{chr(10).join(pipe_rows)}

## Known limitations and biases
- Trained on about two hundred unwrapped photo textures whose resolution
  rarely reaches pore level: the generator models wrinkles, brows, stubble
  and blemish-scale structure more than pores.
- The same skews as the photo set (see the UVAPM card).
- With `detail.observed_detail` (default) the final map takes the photo's own
  detail where it was seen confidently and the generator fills the rest, so
  the "full" row measures both; the "generated detail only" row
  (`detail.observed_detail=false`) measures the generator alone.
- Random samples from the prior are stationary skin-like texture without the
  face's layout (the latent grid carries position, and its prior is the same
  in every cell): the generator is made for fitting, not for sampling faces.
"""
    write_text(args.output_dir / "MODEL_CARD_uvapm_ict.md", uvapm_card)
    write_text(args.output_dir / "MODEL_CARD_detail_ict.md", detail_card)


STEPS = ("split", "fit", "select", "normalise", "uvapm", "detail", "report")


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
    seed_everything(args.seed)
    args.work, args.output_dir = Path(args.work_dir), Path(args.output_dir)
    args.work.mkdir(parents=True, exist_ok=True)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    steps = STEPS if args.steps == "all" else tuple(args.steps.split(","))
    split = step_split(args) if "split" in steps else json.loads((args.work / "split.json").read_text())
    if "fit" in steps:
        step_fit(args)
    table = (step_select(args, split) if "select" in steps
             else json.loads((args.work / "selection.json").read_text()))
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
