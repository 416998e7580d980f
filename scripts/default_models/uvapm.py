"""Step ``uvapm``: the UV albedo model, robust, its K chosen by validation prediction PSNR."""

from __future__ import annotations

import logging

import numpy as np
import torch

from assets import load_installed_face_model
from models.uv_albedo_model import UVAlbedoModel, UVAlbedoModelData, build_uv_albedo_model, save_uv_albedo_model
from utils.atomic import write_json

from .data import load_maps

__all__ = ["UVAPM_BUDGET_MB", "RESOLUTION", "CANDIDATE_K", "ROBUST_ROUNDS", "EVALUATION_RESOLUTION",
           "reconstruction_psnr", "step_uvapm"]

logger = logging.getLogger("uvapm.build")

#: Size budget of the UVAPM's float16 basis (MB).
UVAPM_BUDGET_MB = 24.0
#: The model's side: 256 at least, since a 128-texel model shows as a staircase along the UV islands' edges
#: once rendered.
RESOLUTION = 256
CANDIDATE_K = (5, 10, 20, 30, 40, 60, 80, 100, 120, 150)
#: Robust rebuilds (:func:`models.uv_albedo_model.build_uv_albedo_model`): each leaves out the texels the
#: previous model finds to be outliers (glasses frames, hair strands, highlights the unwrapping let through).
ROBUST_ROUNDS = 2
#: Resolution at which every candidate is compared with the validation maps.
EVALUATION_RESOLUTION = RESOLUTION


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
                             coefficient_covariance=None if data.coefficient_covariance is None
                             else data.coefficient_covariance[np.ix_(keep, keep)])


def step_uvapm(args) -> dict:
    uv = args.work / "uv"
    layout_id = load_installed_face_model("ict").uv_layout_id
    results = []
    maps, confs, _ = load_maps(uv / "val", EVALUATION_RESOLUTION)
    train_count = len(list((uv / "train").glob("*_conf.png")))
    resolution, rounds = RESOLUTION, []
    max_k = max(k for k in CANDIDATE_K if 3 * k * resolution**2 * 2 / 1e6 <= UVAPM_BUDGET_MB and k < 0.8 * train_count)

    def validate(round_: int, data: UVAlbedoModelData, rejected: float) -> None:
        for k in CANDIDATE_K:
            if k > max_k:
                continue
            fit, predict = reconstruction_psnr(UVAlbedoModel(_truncate(data, k)), maps, confs)
            row = {"resolution": resolution, "K": k, "val_psnr": float(predict.mean()),
                   "val_fit_psnr": float(fit.mean()), "size_mb": 3 * k * resolution**2 * 2 / 1e6}
            rounds.append({"round": round_, "rejected": rejected, **row})
            if round_ == ROBUST_ROUNDS:
                results.append(row)
            logger.info("R=%d K=%d round %d: validation prediction PSNR %.2f dB (in-sample %.2f dB)", resolution, k,
                        round_, row["val_psnr"], row["val_fit_psnr"])

    data, skipped = build_uv_albedo_model(uv / "train", components=max_k, resolution=resolution,
                                          uv_layout_id=layout_id, robust_rounds=ROBUST_ROUNDS, seed=args.seed,
                                          progress=not args.quiet, on_round=validate)
    if skipped:
        logger.warning("%d training maps skipped: %s", len(skipped), skipped)
    best_psnr = max(r["val_psnr"] for r in results)
    # the smallest model within 0.1 dB of the best prediction of the last round
    chosen = min((r for r in results if r["val_psnr"] >= best_psnr - 0.1), key=lambda r: r["size_mb"])
    data = _truncate(data, chosen["K"])
    save_uv_albedo_model(args.output_dir / "uvapm_ict.npz", data, basis_dtype=np.float16)
    summary = {"candidates": results, "rounds": rounds, "chosen": chosen,
               "explained_variance": data.explained_variance_ratio.sum(1).tolist(), "num_maps": data.num_maps}
    write_json(args.work / "uvapm_selection.json", summary)
    logger.info("chosen R=%d K=%d (%.2f dB)", chosen["resolution"], chosen["K"], chosen["val_psnr"])
    return summary


