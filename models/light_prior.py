"""Telling the scene's light from the skin's colour: Gaussians over the face's and the eyes' colour.

A photo shows the skin's reflectance times the light. Stage 1 explains how
the shading varies over the face (the SH light's direction); what it cannot
tell apart is the face's **mean** colour ``c`` (RGB), the product, channel by
channel, of the skin's mean reflectance ``a`` and the light's colour and
level ``l``: a green scene and green skin, or a dim scene and dark skin,
give the same photo. The whites of the eyes resolve much of it
(:mod:`fitting.eye_probe`): their reflectance ``w`` varies little between
people, so their colour in the photo ``s`` is mostly the light. In log
space (optical density) the products are sums,

    log c = log a + log l,    log s = log w + log l,

with independent Gaussians ``log a ~ N(mean_skin, S_skin)``, ``log w ~
N(mean_sclera, S_sclera)`` (the eyes' reflectance, their shadowing by the
lids and the measurement's noise) and ``log l ~ N(0, S_light)`` (the
population's average light is taken as neutral and of unit level: cameras
white-balance and expose for it).

The split of one face is the posterior mean of the light given what was
seen, ``E[log l | log c, log s]`` (or given ``log c`` alone when the eyes
were closed, hidden or not found), and the skin is the rest, so ``skin x
light = c`` exactly and the render does not change.

:meth:`LightSkinPrior.fit` learns all of it from pairs ``(log c, log s)``
of photos of many people in many scenes, without assuming a shape for
either covariance: the skin and the eyes share only the light, so the
cross-covariance of ``log c`` and ``log s`` over the population *is*
``S_light``, and the rest of each one's covariance is its own. By
default only the light's colour is learned and split (a colour cast goes to
the light, the face's overall level stays with the skin: see
:meth:`LightSkinPrior.fit`). ``python
scripts/build_default_models.py --steps split,fit,light`` does this with
the toolkit's own stage 1. Files are ``.npz`` of plain arrays
(``np.load(..., allow_pickle=False)``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from utils.errors import FileFormatError

__all__ = ["LightSkinPrior", "LIGHT_PRIOR_FORMAT"]

#: ``format`` entry of the saved file.
LIGHT_PRIOR_FORMAT = "uvapm-light-skin-prior-1"

#: Smallest variance kept in a fitted covariance (log units squared): about a 1 % spread.
MIN_VARIANCE = 1e-4
#: Projection onto the level axis (1, 1, 1) / sqrt(3) of log RGB.
_LEVEL = np.full((3, 3), 1.0 / 3.0)


def _nearest_psd(matrix: np.ndarray, floor: float = MIN_VARIANCE) -> np.ndarray:
    """The symmetric part of ``matrix`` with its eigenvalues raised to at least ``floor``."""
    sym = 0.5 * (matrix + matrix.T)
    values, vectors = np.linalg.eigh(sym)
    return (vectors * np.maximum(values, floor)) @ vectors.T


@dataclass
class LightSkinPrior:
    """The skin, sclera and light Gaussians over log RGB (see the module docstring).

    Attributes:
        skin_mean, sclera_mean: (3,) mean log colour of the face's skin and of the whites of the eyes.
        skin_cov, sclera_cov, light_cov: (3, 3) covariances of the skin's, the eyes' and the light's log colour.
        samples: number of photos the prior was learned from (0: not learned).
    """

    skin_mean: np.ndarray
    sclera_mean: np.ndarray
    skin_cov: np.ndarray
    sclera_cov: np.ndarray
    light_cov: np.ndarray
    samples: int = 0

    def light_gains(self) -> tuple[np.ndarray, np.ndarray]:
        """The linear maps from deviations to the light's posterior mean: (3, 6) from ``[log c; log s]`` and
        (3, 3) from ``log c`` alone."""
        joint = np.block([[self.skin_cov + self.light_cov, self.light_cov],
                          [self.light_cov, self.sclera_cov + self.light_cov]])
        with_eyes = np.hstack([self.light_cov, self.light_cov]) @ np.linalg.inv(joint)
        face_only = self.light_cov @ np.linalg.inv(self.skin_cov + self.light_cov)
        return with_eyes, face_only

    def split(self, colour: torch.Tensor, sclera: torch.Tensor | None = None,
              sclera_observed: torch.Tensor | None = None, floor: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor]:
        """Split faces' mean colours into skin and light.

        Args:
            colour: (B, 3) mean face colours in (0, 1].
            sclera: (B, 3) the whites of the eyes' colours, or None (not observed).
            sclera_observed: (B,) bool, where ``sclera`` holds a measurement (None: everywhere, when given).
            floor: colours are clamped to at least this before the log.

        Returns:
            The skin's mean reflectance (B, 3) and the light's per-channel gain
            (B, 3), with ``skin * light == colour``.
        """
        kw = {"dtype": colour.dtype, "device": colour.device}
        with_eyes, face_only = (torch.as_tensor(g, **kw) for g in self.light_gains())
        skin_dev = colour.clamp_min(floor).log() - torch.as_tensor(self.skin_mean, **kw)
        log_light = skin_dev @ face_only.T
        if sclera is not None:
            observed = (torch.ones(len(colour), dtype=torch.bool, device=colour.device)
                        if sclera_observed is None else sclera_observed.bool())
            sclera_dev = sclera.clamp_min(floor).log() - torch.as_tensor(self.sclera_mean, **kw)
            both = torch.cat([skin_dev, sclera_dev], 1) @ with_eyes.T
            log_light = torch.where(observed[:, None], both, log_light)
        light = log_light.exp()
        return colour.clamp_min(floor) / light, light

    @classmethod
    def fit(cls, log_colours: np.ndarray, log_scleras: np.ndarray, trim: float = 3.5,
            light_level: bool = False) -> LightSkinPrior:
        """Learn the prior from photos of many people in many scenes.

        Args:
            log_colours: (N, 3) log mean face colours.
            log_scleras: (N, 3) log colours of the whites of the eyes of the same photos.
            trim: photos further than this many Mahalanobis units from the first estimate (6-D) are left
                out and the fit repeated once.
            light_level: whether the light may change the face's overall level. Off: ``S_light`` keeps only
                its colour part (the plane orthogonal to (1, 1, 1)), so only colour casts are taken out of the
                skin and a dark face stays dark. Photos are exposed for the face, so they show little of the
                level's true spread and the eyes measure it poorly; a level split learned from them takes
                darker skin for dimmer light.

        The means are the averages; ``S_light`` is the (symmetrised,
        positive-definite) cross-covariance of the two, ``S_skin`` and
        ``S_sclera`` the rest of each one's covariance.
        """
        c, s = np.asarray(log_colours, np.float64), np.asarray(log_scleras, np.float64)
        if c.ndim != 2 or c.shape[1] != 3 or len(c) < 12 or s.shape != c.shape:
            raise ValueError(f"log_colours, log_scleras: expected two (N >= 12, 3), got {c.shape} and {s.shape}")
        x = np.hstack([c, s])
        keep = np.ones(len(x), bool)
        for _ in range(2):
            mean = x[keep].mean(0)
            cov = np.cov(x[keep].T)
            d = x - mean
            keep = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d) <= trim**2
        light = _nearest_psd(cov[:3, 3:])
        if not light_level:
            colour_plane = np.eye(3) - _LEVEL
            light = colour_plane @ light @ colour_plane + MIN_VARIANCE * _LEVEL
        return cls(skin_mean=mean[:3].astype(np.float32), sclera_mean=mean[3:].astype(np.float32),
                   skin_cov=_nearest_psd(cov[:3, :3] - light).astype(np.float32),
                   sclera_cov=_nearest_psd(cov[3:, 3:] - light).astype(np.float32),
                   light_cov=light.astype(np.float32), samples=int(keep.sum()))

    def save(self, path: str | os.PathLike) -> None:
        """Write the ``.npz``."""
        np.savez(path, format=np.array(LIGHT_PRIOR_FORMAT), skin_mean=self.skin_mean, sclera_mean=self.sclera_mean,
                 skin_cov=self.skin_cov, sclera_cov=self.sclera_cov, light_cov=self.light_cov,
                 samples=np.array(self.samples))

    @classmethod
    def load(cls, path: str | os.PathLike) -> LightSkinPrior:
        """Read a file written by :meth:`save` (no pickles)."""
        try:
            data = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise FileFormatError(path, f"not a readable light/skin prior ({error})") from None
        with data:
            if "format" not in data or str(data["format"]) != LIGHT_PRIOR_FORMAT:
                raise FileFormatError(path, f"not a light/skin prior (expected format {LIGHT_PRIOR_FORMAT!r})")
            names = ("skin_mean", "sclera_mean", "skin_cov", "sclera_cov", "light_cov")
            missing = [k for k in (*names, "samples") if k not in data]
            if missing:
                raise FileFormatError(path, f"light/skin prior lacks {', '.join(missing)}")
            arrays = {k: data[k].astype(np.float32) for k in names}
            shapes_ok = all(arrays[k].shape == (3,) for k in ("skin_mean", "sclera_mean")) and all(
                arrays[k].shape == (3, 3) for k in ("skin_cov", "sclera_cov", "light_cov"))
            if not shapes_ok:
                raise FileFormatError(path, "light/skin prior arrays have the wrong shapes")
            return cls(**arrays, samples=int(data["samples"]))
