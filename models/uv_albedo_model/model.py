"""UV Albedo Parametric Model (UVAPM): per-channel PCA of UV albedo maps.

As in Dai et al. 2025, R, G and B each have their own mean and K principal
components over the UV image. Coefficients are laid out like the paper's
300-vector, channel-major: ``R[0:K], G[K:2K], B[2K:3K]``, and are in units of
standard deviation (a coefficient of 1 moves the map by one standard deviation
along that component), so N(0, 1) is the model's prior::

    map_c = mean_c + sum_k coeffs_c[k] * std_c[k] * basis_c[k]      (c in R, G, B)

UV maps follow :mod:`models` (row 0 is v = 1), values in [0, 1]. Decoded maps
are **not clamped**: clamping would zero the gradient of every texel at the
bounds, and the paper does not clamp either; whoever needs [0, 1] (the
renderer, the image writer) clamps.

Two files load:

* our ``.npz`` (built by ``python -m models.uv_albedo_model build``):

  ============================  ============  ==============================================
  key                           shape         meaning
  ============================  ============  ==============================================
  ``format_version``            ()            :data:`FORMAT_VERSION`; newer files are refused
  ``mean``                      (3, R, R)     per-channel mean map, [0, 1]
  ``basis``                     (3, K, R*R)   orthonormal rows per channel (row-major texels)
  ``std``                       (3, K)        standard deviation of each component (sqrt of
                                              the eigenvalue), [0, 1] intensity units
  ``explained_variance_ratio``  (3, K)        eigenvalue / total variance of the channel
  ``resolution``                ()            R
  ``uv_layout_id``              () str        UV layout the maps were unwrapped in
                                              (:func:`models.face_model_format.uv_layout_id`)
  ``num_maps``                  ()            number of maps the model was built from
  ``coefficient_covariance``    (3K, 3K)      optional: covariance of the training maps'
                                              coefficients (std units). The channels share
                                              most of their variation (skin tone moves R, G
                                              and B together); without it, independent
                                              N(0, 1) coefficients per channel give random
                                              colours, so sampling and the fitting prior use it
  ============================  ============  ==============================================

* the paper's ``model_{R}.pkl`` (``official_formats.md`` §11.2), through the
  restricted unpickler. It has no standard deviations, so its coefficients
  stay in the paper's raw units: ``std`` is set to the column norm of ``base``
  divided by 255, which makes ``forward(c)`` equal ``(mean + base @ c) / 255``
  exactly, so a coefficient vector fitted with the paper's code can be used
  as is. Nothing is estimated: a caller who knows the standard deviations of
  the raw coefficients passes them as ``std`` (0-255 units) and the
  coefficients become standard-deviation units. The file does not say its UV
  layout either (it is HiFi3D++'s); pass ``uv_layout_id`` (from an installed
  ``hifi3dpp`` face model) or :meth:`UVAlbedoModel.check_layout` refuses it.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils.atomic import save_npz
from utils.errors import FileFormatError, ToolkitError
from utils.safe_load import load_npz, load_restricted_pickle

__all__ = [
    "FORMAT_VERSION",
    "UVLayoutError",
    "UVAlbedoModelData",
    "UVAlbedoModel",
    "decode_albedo",
    "load_uv_albedo_model",
    "save_uv_albedo_model",
]

logger = logging.getLogger("uvapm.uv_albedo_model")

FORMAT_VERSION = 1
_CHANNELS = 3


class UVLayoutError(ToolkitError, ValueError):
    """A UV albedo model and a face model use different UV layouts."""


@dataclass
class UVAlbedoModelData:
    """In-memory form of a UV albedo model (NumPy arrays, float32).

    Attributes:
        mean: (3, R, R) mean map in [0, 1].
        basis: (3, K, R*R) unit-norm rows per channel (orthonormal for models
            built by this toolkit).
        std: (3, K) scale of each coefficient, [0, 1] intensity units.
        explained_variance_ratio: (3, K), or None when unknown (paper's pkl).
        uv_layout_id: the UV layout, "" when unknown.
        num_maps: maps the model was built from, 0 when unknown.
        coefficient_units: ``"std"`` (N(0, 1) prior) or ``"raw"`` (the
            paper's pkl without known standard deviations).
        coefficient_covariance: (3K, 3K) joint covariance of the coefficients
            (std units), or None (then the prior is N(0, I)).
    """

    mean: np.ndarray
    basis: np.ndarray
    std: np.ndarray
    explained_variance_ratio: np.ndarray | None = None
    uv_layout_id: str = ""
    num_maps: int = 0
    coefficient_units: str = "std"
    coefficient_covariance: np.ndarray | None = None

    @property
    def resolution(self) -> int:
        return int(self.mean.shape[-1])

    @property
    def num_components(self) -> int:
        return int(self.basis.shape[1])

    def validate(self, source: str | os.PathLike = "<UV albedo model>") -> None:
        """Raise :class:`FileFormatError` on inconsistent shapes or non-finite values."""

        def fail(reason: str):
            raise FileFormatError(source, reason)

        if self.mean.ndim != 3 or self.mean.shape[0] != _CHANNELS or self.mean.shape[1] != self.mean.shape[2]:
            fail(f"mean has shape {self.mean.shape}, expected (3, R, R)")
        R = self.mean.shape[1]
        if self.basis.ndim != 3 or self.basis.shape[0] != _CHANNELS or self.basis.shape[2] != R * R:
            fail(f"basis has shape {self.basis.shape}, expected (3, K, {R * R}) for resolution {R}")
        K = self.basis.shape[1]
        if K < 1:
            fail("basis has no components")
        if self.std.shape != (_CHANNELS, K):
            fail(f"std has shape {self.std.shape}, expected (3, {K})")
        evr = self.explained_variance_ratio
        if evr is not None and evr.shape != (_CHANNELS, K):
            fail(f"explained_variance_ratio has shape {evr.shape}, expected (3, {K})")
        for key in ("mean", "basis", "std"):
            if not np.isfinite(getattr(self, key)).all():
                fail(f"{key} holds NaN or Inf")
        if (self.std < 0).any():
            fail("std holds negative values")
        cov = self.coefficient_covariance
        if cov is not None and (cov.shape != (_CHANNELS * K, _CHANNELS * K) or not np.isfinite(cov).all()):
            fail(f"coefficient_covariance has shape {cov.shape} or non-finite values, expected ({3 * K}, {3 * K})")
        if self.coefficient_units not in ("std", "raw"):
            fail(f"coefficient_units is {self.coefficient_units!r}, expected 'std' or 'raw'")


def save_uv_albedo_model(path: str | os.PathLike, data: UVAlbedoModelData, basis_dtype=np.float32) -> None:
    """Validate ``data`` and write it atomically as ``.npz`` (see module docstring).

    ``basis_dtype=np.float16`` halves the file; loading always gives float32.
    """
    data.validate(path)
    if data.coefficient_units != "std" or data.explained_variance_ratio is None:
        raise ValueError(f"{path}: only models with standard deviations and explained variance can be saved")
    save_npz(path, {
        "format_version": np.array(FORMAT_VERSION),
        "mean": data.mean.astype(np.float32),
        "basis": data.basis.astype(basis_dtype),
        "std": data.std.astype(np.float32),
        "explained_variance_ratio": data.explained_variance_ratio.astype(np.float32),
        "resolution": np.array(data.resolution),
        "uv_layout_id": np.array(str(data.uv_layout_id)),
        "num_maps": np.array(int(data.num_maps)),
        **({} if data.coefficient_covariance is None
           else {"coefficient_covariance": data.coefficient_covariance.astype(np.float32)}),
    })


def load_uv_albedo_model(
    path: str | os.PathLike, uv_layout_id: str | None = None, std: float | np.ndarray | None = None
) -> UVAlbedoModelData:
    """Load our ``.npz`` or the paper's ``model_{R}.pkl`` (chosen by suffix).

    Args:
        uv_layout_id: the UV layout of a ``.pkl`` (the HiFi3D++ id); for an
            ``.npz`` it must match the stored id when given.
        std: ``.pkl`` only: standard deviation of the raw coefficients, a
            scalar or (3, K), in the file's 0-255 units; None keeps the
            paper's raw coefficient units (see module docstring).
    """
    path = Path(path)
    if path.suffix.lower() == ".pkl":
        return _load_paper_pkl(path, uv_layout_id, std)
    if std is not None:
        raise ValueError(f"{path}: std= applies to the paper's .pkl only; an .npz stores its own")
    data = _load_npz(path)
    if uv_layout_id is not None and uv_layout_id != data.uv_layout_id:
        raise UVLayoutError(f"{path}: built for UV layout {data.uv_layout_id!r}, not {uv_layout_id!r}")
    return data


def _load_npz(path: Path) -> UVAlbedoModelData:
    keys = ["format_version", "mean", "basis", "std", "explained_variance_ratio", "resolution", "uv_layout_id",
            "num_maps"]
    arrays = load_npz(path, required=keys)
    version = int(arrays["format_version"])
    if version > FORMAT_VERSION:
        raise FileFormatError(
            path, f"format version {version} is newer than this toolkit supports ({FORMAT_VERSION}); update the toolkit"
        )
    for key in ("mean", "basis", "std", "explained_variance_ratio"):
        if not np.issubdtype(arrays[key].dtype, np.floating):
            raise FileFormatError(path, f"{key} has dtype {arrays[key].dtype}, expected floating point")
    data = UVAlbedoModelData(
        mean=arrays["mean"].astype(np.float32, copy=False),
        basis=arrays["basis"].astype(np.float32, copy=False),
        std=arrays["std"].astype(np.float32, copy=False),
        explained_variance_ratio=arrays["explained_variance_ratio"].astype(np.float32, copy=False),
        uv_layout_id=str(arrays["uv_layout_id"]),
        num_maps=int(arrays["num_maps"]),
        coefficient_covariance=(arrays["coefficient_covariance"].astype(np.float32)
                                if "coefficient_covariance" in arrays else None),
    )
    data.validate(path)
    if int(arrays["resolution"]) != data.resolution:
        raise FileFormatError(path, f"resolution is {int(arrays['resolution'])} but mean is {data.mean.shape}")
    return data


def _load_paper_pkl(path: Path, uv_layout_id: str | None, std) -> UVAlbedoModelData:
    raw = load_restricted_pickle(path)
    if not isinstance(raw, dict) or any(not isinstance(raw.get(c), dict) for c in "rgb"):
        raise FileFormatError(path, "expected a dict with keys 'r', 'g', 'b', each a dict with 'mean' and 'base'")
    means, bases = [], []
    for c in "rgb":
        entry = raw[c]
        if not isinstance(entry.get("mean"), np.ndarray) or not isinstance(entry.get("base"), np.ndarray):
            raise FileFormatError(path, f"'{c}' needs NumPy arrays 'mean' and 'base'")
        mean, base = entry["mean"].astype(np.float64), entry["base"].astype(np.float64)
        if base.ndim != 2 or mean.size != base.shape[0] or (mean.ndim == 2 and 1 not in mean.shape) or mean.ndim > 2:
            raise FileFormatError(
                path, f"'{c}': mean {mean.shape} and base {base.shape}, expected (R^2, 1) and (R^2, K)"
            )
        means.append(mean.reshape(-1))
        bases.append(base)
    if len({b.shape for b in bases}) != 1:
        raise FileFormatError(path, f"channels have different shapes {[b.shape for b in bases]}")
    D, K = bases[0].shape
    R = math.isqrt(D)
    if R * R != D:
        raise FileFormatError(path, f"{D} texels per channel is not a square UV map")
    if max(float(np.abs(m).max()) for m in means) <= 1.0:
        logger.warning("%s: the mean is within [0, 1], but the paper's model is in 0..255 and is divided by 255 here",
                       path)
    base = np.stack(bases).transpose(0, 2, 1)  # (3, K, D)
    norms = np.linalg.norm(base, axis=2)  # (3, K)
    scale = np.ones((_CHANNELS, K)) if std is None else np.broadcast_to(np.asarray(std, np.float64), (_CHANNELS, K))
    data = UVAlbedoModelData(
        mean=(np.stack(means) / 255.0).reshape(_CHANNELS, R, R).astype(np.float32),
        basis=(base / np.maximum(norms, 1e-12)[:, :, None]).astype(np.float32),
        std=(norms * scale / 255.0).astype(np.float32),
        uv_layout_id=uv_layout_id or "",
        coefficient_units="raw" if std is None else "std",
    )
    data.validate(path)
    logger.debug("%s: paper's UVAPM, %dx%d, %d components per channel, coefficients in %s units",
                 path, R, R, K, data.coefficient_units)
    return data


def decode_albedo(coeffs: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """UV albedo maps from per-channel PCA coefficients (no clamping).

    Args:
        coeffs: (B, 3K) coefficients, channel-major (R, G, B), in units of ``std``.
        mean: (3, R, R) mean map.
        basis: (3, K, R*R) components per channel.
        std: (3, K) scale of each component.

    Returns:
        (B, 3, R, R) maps: ``mean + sum_k coeffs[k] * std[k] * basis[k]`` per channel.
    """
    C, K, D = basis.shape
    if coeffs.ndim != 2 or coeffs.shape[1] != C * K:
        raise ValueError(f"coeffs: expected (B, {C * K}), got {tuple(coeffs.shape)}")
    weights = coeffs.reshape(-1, C, K) * std
    flat = torch.einsum("bck,ckd->bcd", weights, basis) + mean.reshape(1, C, D)
    return flat.reshape(-1, C, *mean.shape[-2:])


def _resize(images: torch.Tensor, resolution: int) -> torch.Tensor:
    if images.shape[-2:] == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


#: Weight of the identity in the coefficient covariance the model uses, ``(1 - a) C + a I``. The covariance
#: of 3K coefficients is estimated from a few hundred maps and is singular (rank below 3K); unshrunk, its
#: near-null directions give the prior a curvature thousands of times that of N(0, I), and it overwhelms the
#: photometric loss of stage 2 (a projected texture scored ~1e5 prior units). With a = 0.1 no direction is
#: penalised more than ten times the independent prior, and samples keep the joint colour structure.
COVARIANCE_SHRINKAGE = 0.1


class UVAlbedoModel(nn.Module):
    """Per-channel PCA UV albedo model as a torch module (buffers only).

    Args:
        data: the model (see :class:`UVAlbedoModelData`).

    Attributes:
        resolution: R. num_components: K per channel. uv_layout_id: layout id
        ("" when unknown). coefficient_units: ``"std"`` or ``"raw"``.
    """

    def __init__(self, data: UVAlbedoModelData):
        super().__init__()
        data.validate()
        self.resolution = data.resolution
        self.num_components = data.num_components
        self.uv_layout_id = data.uv_layout_id
        self.num_maps = data.num_maps
        self.coefficient_units = data.coefficient_units
        self.register_buffer("mean", torch.as_tensor(data.mean, dtype=torch.float32))
        self.register_buffer("basis", torch.as_tensor(data.basis, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(data.std, dtype=torch.float32))
        evr = data.explained_variance_ratio
        self.explained_variance_ratio = None if evr is None else torch.as_tensor(evr, dtype=torch.float32)
        scale_tril = None
        if data.coefficient_covariance is not None:
            cov = torch.as_tensor(data.coefficient_covariance, dtype=torch.float64)
            eye = torch.eye(len(cov), dtype=torch.float64)
            cov = (1 - COVARIANCE_SHRINKAGE) * 0.5 * (cov + cov.T) + COVARIANCE_SHRINKAGE * eye
            scale_tril = torch.linalg.cholesky(cov).float()
        self.register_buffer("scale_tril", scale_tril)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike, uv_layout_id: str | None = None, std: float | np.ndarray | None = None
    ) -> UVAlbedoModel:
        """Load our ``.npz`` or the paper's ``.pkl`` (see :func:`load_uv_albedo_model`)."""
        return cls(load_uv_albedo_model(path, uv_layout_id=uv_layout_id, std=std))

    @property
    def num_coeffs(self) -> int:
        """Length of a coefficient vector, 3K."""
        return _CHANNELS * self.num_components

    def extra_repr(self) -> str:
        return (f"resolution={self.resolution}, components={self.num_components} per channel, "
                f"units={self.coefficient_units}, uv_layout_id={self.uv_layout_id or 'unknown'}")

    def forward(self, coeffs: torch.Tensor, out_resolution: int | None = None) -> torch.Tensor:
        """(B, 3K) coefficients -> (B, 3, R', R') UV maps, differentiable, not clamped.

        ``out_resolution`` (default R) resizes bilinearly, align_corners=False.
        """
        maps = decode_albedo(coeffs, self.mean, self.basis, self.std)
        return _resize(maps, out_resolution or self.resolution)

    def support(self) -> torch.Tensor:
        """(1, 1, R, R) in [0, 1]: how much the model varies each texel: the prior's standard deviation there
        (every component and channel, coefficients independent) relative to its median m across the texels it
        varies at all: 0 up to m / 2, rising to 1 at m. Texels at 0 (where its training maps had little: the
        features left out, the background and hair around the face) hold mostly the mean."""
        spread = (self.basis * self.std[:, :, None]).pow(2).sum((0, 1)).sqrt()
        modelled = spread[spread > 1e-3 * spread.max()]
        median = modelled.median() if len(modelled) else spread.new_tensor(1.0)
        return (2 * spread / median - 1).clamp(0, 1).view(1, 1, self.resolution, self.resolution)

    def encode(
        self, maps: torch.Tensor, confidence: torch.Tensor | None = None, ridge: float = 0.0
    ) -> torch.Tensor:
        """Coefficients (B, 3K) whose decoding best matches ``maps``.

        Weighted least squares per channel, ``min sum_t w_t (decode(c)_t - x_t)^2
        + ridge * |c|^2``: with coefficients in std units the ridge term is the
        Gaussian prior N(0, 1) and ``ridge`` the noise variance of a texel
        ([0, 1]^2 units). Differentiable.

        Args:
            maps: (B, 3, H, W) UV maps, resized bilinearly to R when H, W differ.
            confidence: optional (B, 1, H, W) per-texel weights in [0, 1].
            ridge: >= 0; needed when the weights leave components undetermined.
        """
        if maps.ndim != 4 or maps.shape[1] != _CHANNELS:
            raise ValueError(f"maps: expected (B, 3, H, W), got {tuple(maps.shape)}")
        B, R, K = maps.shape[0], self.resolution, self.num_components
        centred = (_resize(maps, R) - self.mean).reshape(B, _CHANNELS, R * R)
        design = self.basis * self.std[:, :, None]  # (3, K, D)
        if confidence is None:
            gram = (design @ design.transpose(1, 2)).expand(B, -1, -1, -1)
            rhs = torch.einsum("bcd,ckd->bck", centred, design)
        else:
            if confidence.ndim != 4 or confidence.shape[1] != 1 or confidence.shape[0] != B:
                raise ValueError(f"confidence: expected ({B}, 1, H, W), got {tuple(confidence.shape)}")
            weight = _resize(confidence, R).reshape(B, 1, R * R)
            rhs = torch.einsum("bcd,ckd->bck", centred * weight, design)
            gram = torch.stack([(design * w) @ design.transpose(1, 2) for w in weight])
        eye = torch.eye(K, dtype=gram.dtype, device=gram.device)
        return torch.linalg.solve(gram + ridge * eye, rhs.unsqueeze(-1)).reshape(B, _CHANNELS * K)

    def prior(self, coeffs: torch.Tensor) -> torch.Tensor:
        """Negative log prior (B,) up to a constant: ``|L^-1 c|^2 / 2`` with the coefficient
        covariance ``L L^T`` when the model has one, else ``|c|^2 / 2``."""
        if self.scale_tril is None:
            return 0.5 * (coeffs**2).sum(-1)
        white = torch.linalg.solve_triangular(self.scale_tril, coeffs.T, upper=False).T
        return 0.5 * (white**2).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(n, 3, R, R) maps with coefficients drawn from the prior (joint across channels when known)."""
        if self.coefficient_units != "std":
            raise ToolkitError("this UV albedo model has no standard deviations (paper's .pkl loaded without std=), "
                               "so it has no prior to sample from")
        device = generator.device if generator is not None else self.mean.device
        coeffs = torch.randn(n, self.num_coeffs, generator=generator, device=device).to(self.mean.device)
        if self.scale_tril is not None:
            coeffs = coeffs @ self.scale_tril.T
        return self(coeffs)

    def check_layout(self, face_model_or_layout_id) -> None:
        """Raise :class:`UVLayoutError` unless the face model uses this model's UV layout.

        Args:
            face_model_or_layout_id: a :class:`~models.FaceModel`,
                :class:`~models.face_model_format.FaceModelData`, or a layout id.
        """
        if isinstance(face_model_or_layout_id, str):
            expected, what = face_model_or_layout_id, f"UV layout {face_model_or_layout_id!r}"
        else:
            expected = face_model_or_layout_id.uv_layout_id
            what = f"face model {face_model_or_layout_id.name!r} (UV layout {expected!r})"
        if not self.uv_layout_id:
            raise UVLayoutError(
                f"the UV albedo model's UV layout is unknown, so it cannot be checked against {what}; load the "
                "paper's .pkl with uv_layout_id= set to the installed hifi3dpp face model's uv_layout_id"
            )
        if self.uv_layout_id != expected:
            raise UVLayoutError(
                f"the UV albedo model was built for UV layout {self.uv_layout_id!r}, but {what} differs; use the "
                "matching face model or build a model for it (python -m models.uv_albedo_model build)"
            )

