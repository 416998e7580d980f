"""The reconstruction of a batch of preprocessed faces: the stages, in order.

:class:`Pipeline` loads the face model, the UV albedo model, the detail
generator and the optional networks once, builds its list of stages
(:meth:`Pipeline.build_stages`, the one place where stages are chosen and
ordered) and :meth:`Pipeline.run` passes a :class:`~fitting.structures.FaceBatch`
through them, each ``stage(batch, state) -> state``:

========  ==========================================  ============================
name      stage                                       adds to the state
========  ==========================================  ============================
stage1    :class:`~fitting.shape.ShapeFitter`          parameters, fitted landmarks
unwrap    :class:`~fitting.unwrap.Unwrapper`           the unwrapped photo texture
stage2    :class:`~fitting.albedo.AlbedoFitter`        coarse UVAPM albedo, light
stage3    :class:`~fitting.detail.DetailFitter`        albedo with detail
uv1024    :class:`~fitting.high_resolution.HighResolutionAlbedo`  the albedo at 1024 (``--uv_1024``)
evaluate  :class:`~fitting.evaluation.ReRenderEvaluation`  renders and metrics
========  ==========================================  ============================

Each stage is timed, and its losses at a few checkpoints are logged per face
(the lines every face's ``log.txt`` keeps).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import torch

from assets import load_installed_face_model
from assets.checkpoints import official_path
from models.detail_generator import load_detail_generator
from models.face_model import FaceModel
from models.light_prior import LightSkinPrior
from models.surface_points import load_surface_points
from models.uv_albedo_model import UVAlbedoModel
from utils.errors import MissingAssetError

from .albedo import AlbedoFitter
from .config import FittingConfig
from .detail import DetailFitter
from .evaluation import ReRenderEvaluation
from .high_resolution import HighResolutionAlbedo
from .networks import deep3d_initial_params, load_optional_networks
from .progress import StepProgress
from .shape import ShapeFitter
from .structures import FaceBatch, FaceResult, FitState, Stage
from .unwrap import Unwrapper

__all__ = ["Pipeline", "DEFAULT_MODELS_DIR", "default_model_path"]

logger = logging.getLogger("uvapm.fitting")

REPO = Path(__file__).resolve().parents[1]
#: Models this project builds and ships (``checkpoints/default/``).
DEFAULT_MODELS_DIR = REPO / "checkpoints" / "default"

#: Fraction of a stage's steps at which its losses are logged.
_LOGGED_STEPS = (0.0, 0.25, 0.5, 0.75, 1.0)


def default_model_path(kind: str, face_model: str) -> Path:
    """``checkpoints/default/``: ``uvapm_<face_model>.npz``, ``detail_<face_model>.pt``,
    ``facemesh_<face_model>.npz`` (the dense landmarks on the surface) or ``light_prior_<face_model>.npz``."""
    names = {"uvapm": f"uvapm_{face_model}.npz", "detail": f"detail_{face_model}.pt",
             "dense_points": f"facemesh_{face_model}.npz", "light_prior": f"light_prior_{face_model}.npz"}
    return DEFAULT_MODELS_DIR / names[kind]


def _pick_model(explicit: str, default: Path, official: Path, face_model: str) -> Path | None:
    if explicit:
        return Path(explicit)
    candidates = [default] + ([official] if face_model == "hifi3dpp" else [])
    return next((c for c in candidates if c.is_file()), None)


class Pipeline:
    """All stages with every model loaded once.

    Args:
        config: the fitting configuration.
        device: torch device.

    Attributes:
        stages: the stages :meth:`run` calls, in order.
        networks_status: what happened to each optional network (for ``metrics.json``).

    Raises:
        MissingAssetError: the face model is not installed, or stage 2 is
            requested and no UV albedo model exists for the face model.
    """

    def __init__(self, config: FittingConfig, device: torch.device):
        self.config, self.device = config, device
        self.face_model = FaceModel(load_installed_face_model(config.face_model)).to(device)
        self.dense_points = None
        path = Path(config.dense_points or default_model_path("dense_points", config.face_model))
        if config.dense_points or path.is_file():
            self.dense_points = load_surface_points(path, self.face_model.num_vertices)
            logger.info("dense landmarks on the surface: %s", path)
        else:
            logger.warning("no dense landmark registration for face model %r (expected %s): faces are fitted to "
                           "their 68 landmarks", config.face_model, path)
        self.light_prior = None
        path = Path(config.light_prior or default_model_path("light_prior", config.face_model))
        if config.light_prior == "none":
            logger.info("no light/skin prior (light_prior=none): the scene's colour and level are taken as the skin's")
        elif config.light_prior or path.is_file():
            if not path.is_file():
                raise MissingAssetError(f"{path}: light/skin prior not found (build it with python "
                                        "scripts/build_default_models.py --steps split,fit,light, or pass "
                                        "light_prior=none)")
            self.light_prior = LightSkinPrior.load(path)
            logger.info("light/skin prior: %s", path)
        else:
            logger.warning("no light/skin prior for face model %r (expected %s): the scene's colour and level are "
                           "taken as the skin's", config.face_model, path)
        wanted = set(config.stages)
        self.uvapm = self.detail_model = None
        ckpt = config.checkpoints_dir
        if 2 in wanted:
            path = _pick_model(config.uvapm, default_model_path("uvapm", config.face_model),
                               official_path(ckpt, "uvapm"), config.face_model)
            if path is None:
                raise MissingAssetError(
                    f"no UV albedo model for face model {config.face_model!r}: expected "
                    f"{default_model_path('uvapm', config.face_model)} (or pass --uvapm FILE, or run only --stages 1)"
                )
            self.uvapm = UVAlbedoModel.from_file(path, uv_layout_id=self.face_model.uv_layout_id).to(device)
            self.uvapm.check_layout(self.face_model)
            logger.info("UV albedo model: %s", path)
        self.networks = load_optional_networks(ckpt, device, config.use_arcface, config.use_vgg, config.face_model)
        self.networks_status = dict(self.networks.status)
        if 3 in wanted:
            path = _pick_model(config.detail_model, default_model_path("detail", config.face_model),
                               official_path(ckpt, "detail_vae"), config.face_model)
            if path is None:
                logger.warning("stage 3 skipped: no detail generator for face model %r (expected %s; pass "
                               "--detail_model FILE)", config.face_model, default_model_path("detail",
                                                                                            config.face_model))
                self.networks_status["detail_generator"] = "skipped: not found"
            else:
                self.detail_model = load_detail_generator(path, device)
                self.networks_status["detail_generator"] = f"used: {path.name}"
                logger.info("detail generator: %s", path)
        self.stages: list[Stage] = self.build_stages()
        self.set_progress(StepProgress())

    def build_stages(self) -> list[Stage]:
        """The stages in the order they run; add or reorder a stage here."""
        config, model = self.config, self.face_model
        deep3d = self.networks.deep3d
        initialiser = (None if deep3d is None else
                       lambda image: deep3d_initial_params(deep3d, image, model.num_expression))
        stages: list[Stage] = [ShapeFitter(model, config.shape, initialiser, self.dense_points,
                                           self.light_prior),
                               Unwrapper(model, config.unwrap)]
        if self.uvapm is not None:
            stages.append(AlbedoFitter(model, self.uvapm, self.networks, config.albedo))
            if self.detail_model is not None:
                stages.append(DetailFitter(model, self.detail_model, self.networks, config.detail,
                                           coarse_support=self.uvapm.support()))
        if config.outputs.uv_1024:
            stages.append(HighResolutionAlbedo(model, config.unwrap))
        stages.append(ReRenderEvaluation(model, config.detail_crop_size))
        return stages

    @property
    def stage_numbers(self) -> list[int]:
        """The numbered stages (1, 2, 3) that run."""
        return [int(s.name[5:]) for s in self.stages if s.name.startswith("stage")]

    def set_progress(self, progress: StepProgress) -> None:
        """Report the optimisation steps of every stage to ``progress``."""
        for stage in self.stages:
            if hasattr(stage, "progress"):
                stage.progress = progress

    def batch(self, names: list[str], faces, photos, groups: list[int] | None = None) -> FaceBatch:
        """The :class:`~fitting.structures.FaceBatch` of processed faces and their photos, on the device;
        ``groups``: the person of each face, for a joint fit of several photos of one person."""
        return FaceBatch.from_faces(names, faces, photos, self.config.detail_crop_size, self.device, groups)

    def run(self, batch: FaceBatch, on_stage: Callable[[str], None] = lambda name: None) -> list[FaceResult]:
        """Fit a batch; ``on_stage(name)`` is called as each stage starts. Returns one result per face."""
        return FaceResult.split(batch, self.fit(batch, on_stage))

    def fit(self, batch: FaceBatch, on_stage: Callable[[str], None] = lambda name: None) -> FitState:
        """Run every stage on ``batch`` from an empty state; returns the final state."""
        state = FitState()
        for stage in self.stages:
            on_stage(stage.name)
            start = time.perf_counter()
            state = stage(batch, state)
            seconds = time.perf_counter() - start
            state = state.updated(seconds={stage.name: seconds})
            _log_stage(stage.name, batch, state, seconds)
        return state


def _log_stage(name: str, batch: FaceBatch, state: FitState, seconds: float) -> None:
    """One log line per face: the stage's time and its losses at a few steps (``face`` in the record)."""
    history = state.histories.get(name, [])
    for b, face in enumerate(batch.names):
        text = f"{name}: {seconds:.2f} s" + (f" for {len(batch)} faces" if len(batch) > 1 else "")
        if history:
            steps = sorted({round(f * (len(history) - 1)) for f in _LOGGED_STEPS})
            final = history[-1]
            totals = " ".join(f"{history[s]['total'][b]:.4g}" for s in steps)
            terms = ", ".join(f"{k} {v[b]:.4g}" for k, v in final.items() if k != "total")
            text += (f"; total loss at steps {'/'.join(str(s + 1) for s in steps)} of {len(history)}: {totals}"
                     f"; final terms: {terms}")
        if name == "evaluate":
            stage = state.final_stage
            psnr = state.metrics.get(f"{stage}_psnr")
            if psnr is not None:
                text += f"; {stage} re-render PSNR {float(psnr[b]):.2f} dB in the skin mask"
        logger.info("%s %s", face, text, extra={"face": face})
