"""Building a UV albedo model: streamed, confidence-weighted per-channel PCA.

The data never sits in memory at once: every step is a pass over the maps in
batches, and what is kept between passes is O(D (K + p)) per channel
(D = R*R texels, K components, p oversampling).

1. **Mean pass.** Per texel, the confidence-weighted mean ``sum c x / sum c``;
   texels no map sees (``sum c = 0``) take the channel's weighted global mean.
2. **Sketch pass.** With A the centred (and imputed, below) data, N x D per
   channel, accumulate ``Y = A^T A Omega = sum_b A_b^T (A_b Omega)`` for a
   Gaussian D x (K+p) matrix Omega; ``Q = orth(Y)``.
3. **Power passes** (``power_iters``, plus ``em_passes`` when some
   confidence is below 1): ``Y = A^T A Q``, ``Q = orth(Y)``. Each also
   accumulates ``Q^T A^T A Q``, whose eigen-decomposition (Rayleigh-Ritz)
   is the current estimate the next pass imputes with.
4. **Final pass**: ``B = Q^T A^T A Q`` and the total sum of squares;
   ``B = U diag(lambda) U^T`` gives the components ``Q U`` (K leading),
   ``std = sqrt(lambda / (N - 1))`` and ``explained_variance_ratio =
   lambda / trace(A^T A)``.

**Confidence.** A map ``x.png`` may come with ``x<suffix>.png`` (grayscale,
weight c in [0, 1] per texel). Low-confidence texels must not pull the
model, so every covariance pass imputes them: ``a = c (x - mean) + (1 - c) f``.

* ``imputation="mean"``: f = 0 (the mean). Cheap, but biased: a texel hidden
  in some maps loses variance and correlation with the rest, and the missing
  half of each strong component shows up as a spurious "ghost" direction
  that can displace the weaker true ones.
* ``imputation="em"`` (default): from the first Rayleigh-Ritz estimate on, f
  is the posterior mean under the current low-rank Gaussian model (all
  K + p Ritz components V with variances s^2, isotropic noise sigma^2 from
  the unexplained variance): per map, ``z = (V diag(c) V^T + sigma^2
  diag(1/s^2))^-1 V (c a)`` and ``f = V^T z`` (an EM step of probabilistic
  PCA without the posterior-covariance term). ``V diag(c) V^T = I - V
  diag(1 - c) V^T``, so the cost is O((K + p)^2 m) per map for its m
  low-confidence texels; maps with confidence 1 everywhere cost nothing.
  EM converges at a rate set by the fraction of missing information, so
  when some confidence is below 1 the build runs ``em_passes`` more passes.

**Robust rounds** (``robust_rounds``). A map's confidence says where its
photo showed the face, not whether what it showed is skin: glasses frames,
hair strands, specular highlights and shadows the unwrapping did not reject
enter the model as variation of their own (the "ghosts" of glasses in its
samples). After a build, every map is projected on the model's first
``robust_components`` components (the population's common structure; the
later components are where single maps' oddities live) and each texel's
residual is compared with the spread of the residuals of all maps at that
texel (1.4826 x their median absolute value, per channel, smoothed over 5x5
texels). Texels beyond ``outlier_threshold`` times that spread in any
channel, grown into neighbours beyond half of it (the edges and blur of a
frame), get confidence 0; each map is projected again without them (an
occluder biases its map's whole projection) and judged again, three times.
The model is then built again with those texels imputed like unseen ones.
Each round recomputes the rejection from the original confidences with the
latest model.

EM converges at a rate set by the fraction of missing information; with
heavily masked data raise ``em_passes`` (each is a full pass over the maps).
How well each setting recovers a known model, and the cost per map and pass,
are measured by ``python -m benchmarks.bm_uvapm_build`` (numbers in README).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from utils.cli import count
from utils.config import ConfigError
from utils.errors import FileFormatError, ToolkitError
from utils.image_io import list_images, read_image, read_png_text

from .model import UVAlbedoModel, UVAlbedoModelData

__all__ = ["UVMapFolder", "ChannelPCA", "streaming_channel_pca", "outlier_weights", "build_uv_albedo_model"]

logger = logging.getLogger("uvapm.uv_albedo_model")

#: A batch: maps (n, 3, R, R) float in [0, 1] and confidence (n, 1, R, R) in [0, 1] or None (all 1).
Batch = tuple[torch.Tensor, torch.Tensor | None]


class UVMapFolder:
    """The UV maps of a folder (recursive) as a re-iterable stream of batches.

    Each map is area-resized to ``resolution``, weighted by its confidence. ``x<suffix>.<ext>`` next to
    ``x.<ext2>`` is its confidence map (first channel / 255, same size as the
    map; the same pairing as the detail generator's dataset); maps without
    one get confidence 1. Maps that cannot be used (unreadable, not square,
    or with an unreadable or mis-sized confidence map) are reported, one
    warning line each, during the first complete pass and skipped
    afterwards; see :attr:`failed`.

    Args:
        folder: searched recursively for images.
        resolution: R.
        confidence_suffix: "" to ignore confidence maps.
        batch_size: maps per batch.
        workers: threads decoding images.
    """

    def __init__(self, folder: str | os.PathLike, resolution: int, confidence_suffix: str = "_conf",
                 batch_size: int = 32, workers: int = 2):
        folder = Path(folder)
        if not folder.is_dir():
            raise FileFormatError(folder, "not a folder")
        self.folder = folder
        self.resolution = resolution
        self.batch_size = batch_size
        self.workers = max(1, workers)
        images = list_images(folder, recursive=True)
        stems = {(p.parent, p.stem) for p in images}
        confidence = {}
        for p in images:
            owner = (p.parent, p.stem[: -len(confidence_suffix)])
            if confidence_suffix and p.stem.endswith(confidence_suffix) and owner in stems:
                confidence[owner] = p
        conf_files = set(confidence.values())
        self.paths = [p for p in images if p not in conf_files]
        self.confidence_paths = {p: confidence[(p.parent, p.stem)] for p in self.paths
                                 if (p.parent, p.stem) in confidence}
        #: path -> one-line reason, for every map left out.
        self.failed: dict[Path, str] = {}
        self._checked = False

    def uv_layout_id(self) -> str:
        """The ``uv_layout_id`` the maps carry (PNG text written by this toolkit).

        Maps that carry none are assumed to share the others' layout (with a
        warning); unreadable files are left to the build, which reports them.

        Raises:
            ConfigError: the maps name different layouts, or none names one.
        """
        found: dict[str, list[Path]] = {}
        for path in self.paths:
            found.setdefault(read_png_text(path).get("uv_layout_id", ""), []).append(path)
        unnamed = found.pop("", [])
        if not found:
            raise ConfigError(f"{self.folder}: no map carries a uv_layout_id; pass --uv_layout_id "
                              "(python -m assets list shows each face model's)")
        if len(found) > 1:
            listing = ", ".join(f"{layout} ({len(paths)} maps, e.g. {paths[0].name})"
                                for layout, paths in found.items())
            raise ConfigError(f"{self.folder}: the maps use different UV layouts: {listing}")
        layout = next(iter(found))
        if unnamed:
            logger.warning("%s without a uv_layout_id (e.g. %s): assuming layout %s like the other %d",
                           count(len(unnamed), "map"), unnamed[0], layout, len(found[layout]))
        return layout

    @property
    def num_maps(self) -> int:
        """Maps each pass yields (known exactly after the first complete pass)."""
        return len(self.paths) - len(self.failed)

    def _read(self, path: Path, like: tuple[int, int] | None = None) -> tuple[np.ndarray, tuple[int, int]]:
        """(R, R, 3) float image in [0, 1] and the original (height, width)."""
        image = read_image(path)
        size = image.shape[:2]
        if like is None and size[0] != size[1]:
            raise FileFormatError(path, f"UV map is {size[1]}x{size[0]}, expected a square image")
        if like is not None and size != like:
            raise FileFormatError(path, f"confidence map is {size[1]}x{size[0]}, its UV map is {like[1]}x{like[0]}")
        return image.astype(np.float32) / 255.0, size

    def _resize(self, image: np.ndarray) -> np.ndarray:
        return cv2.resize(image, (self.resolution, self.resolution), interpolation=cv2.INTER_AREA)

    def load(self, path: Path) -> tuple[np.ndarray, np.ndarray]:
        """(3, R, R) map and (1, R, R) confidence of one file.

        The map is resized weighted by its confidence (a texel of the model that straddles the edge of what a
        photo showed, or of a UV island, takes the colour of the part seen, not a blend with what lies beyond),
        the confidence by its area."""
        image, size = self._read(path)
        conf_path = self.confidence_paths.get(path)
        conf = np.ones(size, np.float32) if conf_path is None else self._read(conf_path, like=size)[0][..., 0]
        if size != (self.resolution, self.resolution):
            area = self._resize(image)
            weighted = self._resize(image * conf[..., None])
            conf = self._resize(conf)
            image = np.where(conf[..., None] > 1e-4, weighted / np.maximum(conf[..., None], 1e-4), area)
        return image.transpose(2, 0, 1), conf[None]

    def _try_load(self, path: Path):
        try:
            return self.load(path)
        except FileFormatError as err:
            return err

    def __iter__(self) -> Iterator[Batch]:
        paths = [p for p in self.paths if p not in self.failed]
        with ThreadPoolExecutor(self.workers) as pool:
            for start in range(0, len(paths), self.batch_size):
                chunk = paths[start: start + self.batch_size]
                maps, confs = [], []
                for path, result in zip(chunk, pool.map(self._try_load, chunk)):
                    if isinstance(result, FileFormatError):
                        if self._checked:
                            raise ToolkitError(f"{result} (it was readable in an earlier pass; files changed?)")
                        logger.warning("skipped %s", result)
                        self.failed[path] = result.reason
                        continue
                    maps.append(result[0])
                    confs.append(result[1])
                if maps:
                    yield torch.from_numpy(np.stack(maps)), torch.from_numpy(np.stack(confs))
        self._checked = True


@dataclass
class ChannelPCA:
    """Result of :func:`streaming_channel_pca` (tensors on the build device).

    Attributes:
        mean: (3, D). basis: (3, K, D) orthonormal rows. eigenvalues: (3, K)
        of A^T A. std: (3, K). explained_variance_ratio: (3, K).
        num_maps: N.
    """

    mean: torch.Tensor
    basis: torch.Tensor
    eigenvalues: torch.Tensor
    std: torch.Tensor
    explained_variance_ratio: torch.Tensor
    num_maps: int


def _flat(batch: Batch, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    maps, conf = batch
    maps = maps.to(device, torch.float32).flatten(2)
    return maps, None if conf is None else conf.to(device, torch.float32).flatten(2)


@dataclass
class _LowRankPrior:
    """The current estimate used to impute: Ritz components (3, L, D) and ridge sigma^2 / variance (3, L)."""

    components: torch.Tensor
    ridge: torch.Tensor

    @classmethod
    def from_ritz(cls, components: torch.Tensor, eigenvalues: torch.Tensor, total: torch.Tensor,
                  num_maps: int) -> _LowRankPrior:
        L, D = components.shape[1:]
        variance = eigenvalues / (num_maps - 1)
        noise = (total - eigenvalues.sum(1)).clamp_min(0) / ((num_maps - 1) * max(D - L, 1))
        ridge = noise.clamp_min(1e-12)[:, None] / variance.clamp_min(1e-20)
        return cls(components, ridge.float())


def _impute(centred: torch.Tensor, conf: torch.Tensor | None, prior: _LowRankPrior | None) -> torch.Tensor:
    """Centred maps (n, 3, D) with low-confidence texels filled (see module docstring)."""
    if conf is None:
        return centred
    known = conf * centred
    if prior is None:
        return known
    weak = conf[:, 0] < 1  # (n, D)
    rows = weak.any(1).nonzero().flatten()
    if len(rows) == 0:
        return known
    rhs = torch.einsum("cld,ncd->ncl", prior.components, known[rows]).double()  # V (c a) for every row at once
    identity = torch.diag_embed(1 + prior.ridge.double())
    for row, i in zip(rhs, rows.tolist()):
        texels = weak[i].nonzero().flatten()
        gap = 1 - conf[i, 0, texels]  # (m,)
        weak_rows = prior.components[:, :, texels]  # (3, L, m)
        # V diag(c) V^T = I - V diag(1 - c) V^T: only the low-confidence texels cost anything.
        gram = identity - ((weak_rows * gap) @ weak_rows.transpose(1, 2)).double()
        coeffs = torch.linalg.solve(gram, row.unsqueeze(-1)).float()
        known[i][:, texels] += gap * (weak_rows.transpose(1, 2) @ coeffs).squeeze(-1)
    return known


def _progress(batches, desc: str, enabled: bool) -> tqdm:
    return tqdm(total=getattr(batches, "num_maps", None), desc=desc, unit="map", disable=not enabled, leave=False)


def _weighted_mean(batches: Iterable[Batch], device: torch.device, desc: str, progress: bool):
    """Confidence-weighted mean (3, D), the number of maps, and whether any texel has confidence < 1."""
    sum_cx = sum_c = None
    num_maps, partial = 0, False
    with _progress(batches, desc, progress) as bar:
        for batch in batches:
            maps, conf = _flat(batch, device)
            maps = maps.double()
            conf = torch.ones_like(maps[:, :1]) if conf is None else conf.double()
            if sum_cx is None:
                sum_cx, sum_c = torch.zeros_like(maps[0]), torch.zeros_like(conf[0])
            sum_cx += (conf * maps).sum(0)
            sum_c += conf.sum(0)
            num_maps += maps.shape[0]
            partial = partial or bool((conf < 1).any())
            bar.update(maps.shape[0])
    if num_maps == 0:
        raise ToolkitError("no usable UV maps")
    if sum_c.sum() == 0:
        raise ToolkitError("every texel of every map has confidence 0")
    global_mean = sum_cx.sum(1, keepdim=True) / sum_c.sum()
    mean = torch.where(sum_c > 0, sum_cx / sum_c.clamp_min(1e-300), global_mean)
    logger.debug("weighted mean from %d maps; %d texels unseen by every map", num_maps, int((sum_c == 0).sum()))
    return mean.float(), num_maps, partial


def _covariance_pass(batches, mean, Q, prior, need_y: bool, desc: str, progress: bool):
    """Y = A^T A Q (if need_y), B = Q^T A^T A Q and trace(A^T A), per channel, in float64."""
    C, D, L = Q.shape
    Y = torch.zeros(C, D, L, dtype=torch.float64, device=Q.device) if need_y else None
    B = torch.zeros(C, L, L, dtype=torch.float64, device=Q.device)
    total = torch.zeros(C, dtype=torch.float64, device=Q.device)
    with _progress(batches, desc, progress) as bar:
        for batch in batches:
            maps, conf = _flat(batch, Q.device)
            centred = _impute(maps - mean, conf, prior).transpose(0, 1)  # (3, n, D)
            projected = centred @ Q  # (3, n, L)
            if need_y:
                Y.add_(centred.transpose(1, 2) @ projected)
            B.add_(projected.transpose(1, 2).double() @ projected.double())
            total.add_(centred.double().square().sum((1, 2)))
            bar.update(centred.shape[1])
    return Y, B, total


def _orthonormal(Y: torch.Tensor) -> torch.Tensor:
    """Orthonormal basis (3, D, L) float32 of the columns of Y (3, D, L).

    CholeskyQR2 (two Gram matrices and triangular solves: several times faster
    than Householder QR for tall matrices); Householder QR when Y is too
    ill-conditioned for it (rank-deficient, e.g. fewer maps than columns).
    """
    Q = Y
    for _ in range(2):
        R, info = torch.linalg.cholesky_ex(Q.transpose(1, 2) @ Q, upper=True)
        if info.any():
            return torch.linalg.qr(Y)[0].float()
        Q = torch.linalg.solve_triangular(R, Q, upper=True, left=False)
    identity = torch.eye(Q.shape[2], dtype=Q.dtype, device=Q.device)
    if (Q.transpose(1, 2) @ Q - identity).abs().max() > 1e-6:
        return torch.linalg.qr(Y)[0].float()
    return Q.float()


def _rayleigh_ritz(Q: torch.Tensor, B: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of A^T A in span(Q), descending: eigenvalues (3, L), components (3, L, D) with a fixed sign."""
    eigenvalues, vectors = torch.linalg.eigh(B)
    eigenvalues, vectors = eigenvalues.flip(-1), vectors.flip(-1)
    components = (Q.double() @ vectors).transpose(1, 2)  # (3, L, D)
    largest = components.abs().argmax(-1, keepdim=True)
    components = components * torch.sign(components.gather(-1, largest))
    return eigenvalues.clamp_min(0), components.float()


def streaming_channel_pca(
    batches: Iterable[Batch],
    num_components: int,
    oversample: int = 10,
    power_iters: int = 2,
    imputation: str = "em",
    em_passes: int = 6,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> ChannelPCA:
    """Confidence-weighted per-channel PCA by a streamed randomised SVD.

    Args:
        batches: re-iterable (a list, :class:`UVMapFolder`, ...) of
            ``(maps (n, 3, R, R), confidence (n, 1, R, R) or None)``; it is
            read ``power_iters + 3`` times (``+ em_passes`` when some
            confidence is below 1) and must yield the same maps each time.
        num_components: K per channel; needs more than K maps.
        oversample: p extra sketch columns.
        power_iters: extra passes refining the subspace.
        imputation: ``"em"`` or ``"mean"`` (see module docstring).
        em_passes: further passes when some confidence is below 1, each
            re-imputing with the latest estimate (EM converges slowly).
        seed: seeds the sketch matrix.
        device: where the arithmetic runs.
        progress: tqdm bar per pass.
    """
    if min(num_components - 1, oversample, power_iters, em_passes) < 0:
        raise ValueError("num_components must be >= 1 and oversample, power_iters, em_passes >= 0")
    if imputation not in ("em", "mean"):
        raise ValueError(f"imputation must be 'em' or 'mean', got {imputation!r}")
    device = torch.device(device)
    mean, num_maps, partial = _weighted_mean(batches, device, "pass 1: mean", progress)
    C, D = mean.shape
    if num_maps <= num_components or num_components > D:
        raise ToolkitError(f"{num_components} components need more than {num_components} maps "
                           f"(and at most {D} texels); got {num_maps} maps")
    iterations = power_iters + (em_passes if partial and imputation == "em" else 0)
    passes = iterations + 3
    width = min(num_components + oversample, num_maps, D)
    generator = torch.Generator().manual_seed(seed)
    Q = torch.randn(C, D, width, generator=generator).to(device)
    prior = None
    for step in range(iterations + 2):
        final = step == iterations + 1
        name = "final" if final else "sketch" if step == 0 else "power iteration"
        Y, B, total = _covariance_pass(batches, mean, Q, prior, need_y=not final,
                                       desc=f"pass {step + 2}/{passes}: {name}", progress=progress)
        em = partial and imputation == "em"
        if final or (step > 0 and em):
            eigenvalues, components = _rayleigh_ritz(Q, B)
            if em:
                prior = _LowRankPrior.from_ritz(components, eigenvalues, total, num_maps)
        if not final:
            Q = _orthonormal(Y)
    eigenvalues = eigenvalues[:, :num_components].float()
    return ChannelPCA(
        mean=mean,
        basis=components[:, :num_components],
        eigenvalues=eigenvalues,
        std=(eigenvalues / (num_maps - 1)).sqrt(),
        explained_variance_ratio=(eigenvalues / total.float().clamp_min(1e-30)[:, None]),
        num_maps=num_maps,
    )


class _Reweighted:
    """A batch stream whose confidences are multiplied by per-map weights (N, 1, R, R), in stream order."""

    def __init__(self, batches: Iterable[Batch], weights: torch.Tensor):
        self.batches, self.weights = batches, weights

    @property
    def num_maps(self) -> int:
        return len(self.weights)

    def __iter__(self) -> Iterator[Batch]:
        start = 0
        for maps, conf in self.batches:
            weight = self.weights[start: start + len(maps)]
            start += len(maps)
            yield maps, weight if conf is None else conf * weight


def _hysteresis(score: torch.Tensor, high: float, low: float, resolution: int, grow: int = 4) -> torch.Tensor:
    """(n, 1, D) bool: texels whose score (n, 1, D) is above ``high``, grown by up to ``grow`` texels into
    neighbours above ``low``."""
    candidate = (score > low).view(-1, 1, resolution, resolution)
    core = (score > high).view(-1, 1, resolution, resolution).float()
    for _ in range(grow):
        core = F.max_pool2d(core, 3, 1, 1) * candidate
    return core.bool().flatten(2)


def outlier_weights(batches: Iterable[Batch], pca: ChannelPCA, components: int = 20, threshold: float = 4.0,
                    seen: float = 0.5, ridge: float = 1e-3, iterations: int = 3, progress: bool = False
                    ) -> tuple[torch.Tensor, float]:
    """Per-texel weights (N, 1, R, R) in {0, 1}, 0 where a map is an outlier to the model (see module docstring),
    and the share of the judged texels that are.

    Args:
        batches: the maps the model was built from, in the same order (read twice).
        pca: the model.
        components: leading components per channel the maps are projected on.
        threshold: a residual beyond this many robust spreads of the texel's residuals (in any channel) is an
            outlier, and so are its neighbours beyond half of it (the edges of an occluder).
        seen: texels with confidence above this are judged (and estimate the spreads); the others keep 1.
        ridge: the projection's ridge (noise variance of a texel, std units).
        iterations: projections per map, each without the outliers the previous one found (an occluder biases
            the projection of the whole map).
    """
    C, D = pca.mean.shape
    R = math.isqrt(D)
    k = min(components, pca.basis.shape[1])
    leading = UVAlbedoModel(UVAlbedoModelData(mean=pca.mean.view(C, R, R).cpu().numpy(),
                                              basis=pca.basis[:, :k].cpu().numpy(),
                                              std=pca.std[:, :k].cpu().numpy())).to(pca.mean.device)

    def judged(batch):
        maps, conf = (x.to(pca.mean.device, torch.float32) if x is not None else None for x in batch)
        conf = torch.ones_like(maps[:, :1]) if conf is None else conf
        return maps, conf, (conf > seen).flatten(2)

    def residual(maps, weight):
        """(n, 3, D) the maps minus their weighted projection on the leading components."""
        with torch.no_grad():
            return (maps - leading(leading.encode(maps, weight, ridge=ridge))).flatten(2)

    residuals = []
    with _progress(batches, "robust pass 1/2: residual spreads", progress) as bar:
        for batch in batches:
            maps, conf, sure = judged(batch)
            residuals.append(torch.where(sure, residual(maps, conf), torch.nan).half().cpu())
            bar.update(len(maps))
    residuals = torch.cat(residuals).float()  # (N, 3, D), NaN where not judged
    spread = 1.4826 * residuals.abs().nanmedian(0).values  # (3, D)
    known = ~spread.isnan()
    fallback = torch.stack([s[m].median() if m.any() else s.new_tensor(1.0) for s, m in zip(spread, known)])
    spread = torch.where(known, spread, fallback[:, None]).view(1, C, R, R)
    spread = F.avg_pool2d(spread, 5, 1, 2, count_include_pad=False).clamp_min(1e-3).view(1, C, D).to(pca.mean.device)
    del residuals

    weights, outliers, seen_texels = [], 0, 0
    with _progress(batches, "robust pass 2/2: outliers", progress) as bar:
        for batch in batches:
            maps, conf, sure = judged(batch)
            outlier = torch.zeros_like(sure)
            for _ in range(iterations):
                kept = conf * ~outlier.view_as(conf)
                score = (residual(maps, kept).abs() / spread).amax(1, keepdim=True)
                outlier = _hysteresis(score, threshold, threshold / 2, R) & sure
            weights.append((~outlier).float().view(-1, 1, R, R).cpu())
            outliers, seen_texels = outliers + int(outlier.sum()), seen_texels + int(sure.sum())
            bar.update(len(maps))
    share = outliers / max(seen_texels, 1)
    logger.info("%.2f%% of the %d texels seen in the maps are outliers to the model (%d components, %.1f spreads)",
                100 * share, seen_texels, k, threshold)
    return torch.cat(weights), share


def build_uv_albedo_model(
    input_dir: str | os.PathLike,
    components: int = 100,
    resolution: int = 256,
    confidence_suffix: str = "_conf",
    uv_layout_id: str = "",
    batch_size: int = 32,
    workers: int = 2,
    oversample: int = 10,
    power_iters: int = 2,
    imputation: str = "em",
    em_passes: int = 6,
    robust_rounds: int = 0,
    robust_components: int = 20,
    outlier_threshold: float = 4.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    on_round: Callable[[int, UVAlbedoModelData, float], None] | None = None,
) -> tuple[UVAlbedoModelData, dict[Path, str]]:
    """Build a UV albedo model from the maps of a folder (see module docstring).

    ``uv_layout_id`` "" takes the layout the maps carry (:meth:`UVMapFolder.uv_layout_id`).
    ``on_round(round, model, rejected)``, when given, sees the model of every robust round (0: the plain PCA)
    before the next one, without its coefficient covariance, and the share of the seen texels it was built
    without.

    Returns:
        The model and the skipped files (path -> reason).
    """
    if resolution < 2 or batch_size < 1:
        raise ValueError(f"resolution must be >= 2 and batch_size >= 1, got {resolution} and {batch_size}")
    source = UVMapFolder(input_dir, resolution, confidence_suffix, batch_size, workers)
    if not source.paths:
        raise ToolkitError(f"{input_dir}: no UV maps found (images searched recursively)")
    uv_layout_id = uv_layout_id or source.uv_layout_id()
    logger.info("%d UV maps (%d with confidence maps) under %s", len(source.paths), len(source.confidence_paths),
                input_dir)

    def build(batches) -> ChannelPCA:
        return streaming_channel_pca(batches, components, oversample=oversample, power_iters=power_iters,
                                     imputation=imputation, em_passes=em_passes, seed=seed, device=device,
                                     progress=progress)

    def model_data(pca: ChannelPCA) -> UVAlbedoModelData:
        return UVAlbedoModelData(mean=pca.mean.reshape(3, resolution, resolution).cpu().numpy(),
                                 basis=pca.basis.cpu().numpy(), std=pca.std.cpu().numpy(),
                                 explained_variance_ratio=pca.explained_variance_ratio.cpu().numpy(),
                                 uv_layout_id=uv_layout_id, num_maps=pca.num_maps)

    batches, rejected = source, 0.0
    try:
        pca = build(source)
        for round_ in range(robust_rounds):
            if on_round is not None:
                on_round(round_, model_data(pca), rejected)
            logger.info("robust round %d of %d", round_ + 1, robust_rounds)
            weights, rejected = outlier_weights(source, pca, robust_components, outlier_threshold, progress=progress)
            batches = _Reweighted(source, weights)
            pca = build(batches)
    finally:
        if source.failed:
            logger.warning("%d of %d files skipped (unreadable or not a UV map)", len(source.failed), len(source.paths))
    explained = pca.explained_variance_ratio.sum(1).tolist()
    logger.info("built from %d maps: %d components per channel at %dx%d explain %.1f%% / %.1f%% / %.1f%% (R/G/B)",
                pca.num_maps, components, resolution, resolution, *(100 * e for e in explained))
    data = model_data(pca)
    if on_round is not None:
        on_round(robust_rounds, data, rejected)
    data.coefficient_covariance = coefficient_covariance(data, batches, device, progress)
    return data, dict(source.failed)


def coefficient_covariance(data: UVAlbedoModelData, batches: Iterable[Batch], device: str | torch.device = "cpu",
                           progress: bool = False, ridge: float = 1e-3) -> np.ndarray:
    """Covariance (3K, 3K) of the maps' coefficients (std units), one more pass over the maps.

    Each map is projected with its confidence (:meth:`UVAlbedoModel.encode`);
    the channels' coefficients are strongly correlated, which a per-channel
    N(0, 1) prior ignores.
    """
    model = UVAlbedoModel(data).to(device)
    total, outer, count = None, None, 0
    with _progress(batches, "pass: coefficient covariance", progress) as bar:
        for maps, confidence in batches:
            with torch.no_grad():
                coeffs = model.encode(maps.to(device), None if confidence is None else confidence.to(device),
                                      ridge=ridge).double()
            total = coeffs.sum(0) if total is None else total + coeffs.sum(0)
            outer = coeffs.T @ coeffs if outer is None else outer + coeffs.T @ coeffs
            count += len(coeffs)
            bar.update(len(coeffs))
    mean = total / count
    return ((outer - count * torch.outer(mean, mean)) / max(count - 1, 1)).cpu().numpy()
