"""The three fitting stages for batches of preprocessed faces.

:class:`Pipeline` loads the face model, the UV albedo model, the detail
generator and the optional networks once, then :meth:`Pipeline.run` takes a
batch of preprocessed faces (and their photos) through

1. shape (landmark fit + photometric refinement, :mod:`fitting.shape`),
   texture unwrapping (:mod:`fitting.unwrap`),
2. coarse albedo (:mod:`fitting.albedo`),
3. detail (:mod:`fitting.detail`),

and returns everything the outputs need: parameters, UV maps, re-renders,
loss histories, metrics and seconds per stage.
"""

from __future__ import annotations

import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from models.camera import PinholeCamera
from models.detail_generator import load_detail_generator
from models.face_model import FaceModel
from models.renderer import Renderer, RenderSettings
from models.uv_albedo_model import UVAlbedoModel
from models.uv_layout import UVLayout
from utils.assets import load_installed_face_model
from utils.assets.checkpoints import official_path
from utils.errors import MissingAssetError

from .albedo import AlbedoFitConfig, AlbedoFitter
from .alignment import warp_to_crop
from .detail import DetailFitConfig, DetailFitter
from .metrics import high_frequency_psnr, masked_psnr, masked_ssim
from .networks import deep3d_initial_params, load_optional_networks
from .params import FaceParams
from .preprocess import PreprocessConfig
from .shape import ShapeFitConfig, ShapeFitter, fit_mask
from .unwrap import UnwrapConfig, unwrap_texture

__all__ = ["FittingConfig", "OutputConfig", "FaceInput", "FaceResult", "Pipeline", "DEFAULT_MODELS_DIR"]

logger = logging.getLogger("uvapm.fitting")

REPO = Path(__file__).resolve().parents[1]
#: Models this project builds and ships (``checkpoints/default/``).
DEFAULT_MODELS_DIR = REPO / "checkpoints" / "default"


@dataclass
class OutputConfig:
    """What to write besides the standard outputs.

    Attributes:
        uv_1024: also write ``uv_albedo_1024.png``.
        glb: also write ``mesh.glb`` (through trimesh).
    """

    uv_1024: bool = False
    glb: bool = True


@dataclass
class FittingConfig:
    """Everything ``run_rgb_fitting.sh`` / ``python -m fitting.run`` can set (``configs/fitting.yaml``).

    Attributes:
        face_model: installed face model (``ict``, ``hifi3dpp``, ``bfm``).
        uvapm: UV albedo model file; "" picks the default for the face model
            (``checkpoints/default/uvapm_<face_model>.npz``, or the official
            ``uv3dmm/model_256.pkl`` for hifi3dpp).
        detail_model: detail generator file; "" picks
            ``checkpoints/default/detail_<face_model>.pt``, or the official
            ``detail_model/variational_autoencoder.pth`` for hifi3dpp.
        checkpoints_dir: folder of the official checkpoints.
        stages: which stages to run (1; 1, 2; or 1, 2, 3).
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto``.
        batch_size: faces optimised together.
        seed: random seed (each batch is seeded with it).
        use_arcface, use_vgg: use the official networks when present.
        detail_crop_size: side of the crop re-warped from the photo for
            unwrapping and the detail stage.
    """

    face_model: str = "ict"
    uvapm: str = ""
    detail_model: str = ""
    checkpoints_dir: str = "checkpoints"
    stages: list[int] = field(default_factory=lambda: [1, 2, 3])
    device: str = "cpu"
    batch_size: int = 1
    seed: int = 123
    use_arcface: bool = True
    use_vgg: bool = True
    detail_crop_size: int = 512
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    shape: ShapeFitConfig = field(default_factory=ShapeFitConfig)
    unwrap: UnwrapConfig = field(default_factory=UnwrapConfig)
    albedo: AlbedoFitConfig = field(default_factory=AlbedoFitConfig)
    detail: DetailFitConfig = field(default_factory=DetailFitConfig)
    outputs: OutputConfig = field(default_factory=OutputConfig)


@dataclass
class FaceInput:
    """One preprocessed face: its name, the record of :func:`fitting.preprocess.load_processed`, its photo."""

    name: str
    record: dict
    photo: np.ndarray | None


@dataclass
class FaceResult:
    """Everything fitted for one face (tensors without the batch dimension unless noted).

    Attributes:
        params: the face's parameters (batch of 1).
        landmarks: (68, 2) fitted landmarks in crop pixels.
        renders: stage name -> (3, 224, 224) re-render composited on the crop.
        render_mask: (1, 224, 224) rendered face region.
        albedo_proxy: (3, r, r) stage-1 albedo proxy.
        uv_coarse, uv_final: (3, R, R) stage-2 and stage-3 UV albedo (None if not run).
        uv_texture, uv_confidence: (3, R, R) and (1, R, R) unwrapped texture and confidence.
        histories: stage name -> per-step loss terms for this face.
        metrics: numbers for ``metrics.json``.
        seconds: stage name -> seconds (the batch's time divided by its size).
    """

    params: FaceParams
    landmarks: torch.Tensor
    renders: dict
    render_mask: torch.Tensor
    albedo_proxy: torch.Tensor
    uv_coarse: torch.Tensor | None
    uv_final: torch.Tensor | None
    uv_texture: torch.Tensor
    uv_confidence: torch.Tensor
    histories: dict
    metrics: dict
    seconds: dict


def _pick_model(explicit: str, default: Path, official: Path, face_model: str) -> Path | None:
    if explicit:
        return Path(explicit)
    candidates = [default] + ([official] if face_model == "hifi3dpp" else [])
    return next((c for c in candidates if c.is_file()), None)


class Pipeline:
    """Stages 1-3 with every model loaded once.

    Args:
        config: the fitting configuration.
        device: torch device.

    Raises:
        MissingAssetError: the face model is not installed, or stage 2 is
            requested and no UV albedo model exists for the face model.
    """

    def __init__(self, config: FittingConfig, device: torch.device):
        self.config, self.device = config, device
        self.face_model = FaceModel(load_installed_face_model(config.face_model)).to(device)
        ckpt = config.checkpoints_dir
        self.stages = sorted(set(config.stages))
        self.uvapm = self.detail_model = None
        self.networks_status: dict = {}
        if 2 in self.stages:
            path = _pick_model(config.uvapm, DEFAULT_MODELS_DIR / f"uvapm_{config.face_model}.npz",
                               official_path(ckpt, "uvapm"), config.face_model)
            if path is None:
                raise MissingAssetError(
                    f"no UV albedo model for face model {config.face_model!r}: expected "
                    f"{DEFAULT_MODELS_DIR / f'uvapm_{config.face_model}.npz'} (or pass --uvapm FILE, or run only "
                    "--stages 1)"
                )
            self.uvapm = UVAlbedoModel.from_file(path, uv_layout_id=self.face_model.uv_layout_id).to(device)
            self.uvapm.check_layout(self.face_model)
            logger.info("UV albedo model: %s", path)
        networks = load_optional_networks(ckpt, device, config.use_arcface, config.use_vgg, config.face_model)
        self.deep3d = networks.deep3d
        self.networks_status = dict(networks.status)
        if 3 in self.stages:
            path = _pick_model(config.detail_model, DEFAULT_MODELS_DIR / f"detail_{config.face_model}.pt",
                               official_path(ckpt, "detail_vae"), config.face_model)
            if path is None:
                logger.warning("stage 3 skipped: no detail generator for face model %r (expected %s; pass "
                               "--detail_model FILE)", config.face_model,
                               DEFAULT_MODELS_DIR / f"detail_{config.face_model}.pt")
                self.stages = [s for s in self.stages if s != 3]
                self.networks_status["detail_generator"] = "skipped: not found"
            else:
                self.detail_model = load_detail_generator(path, device)
                self.networks_status["detail_generator"] = f"used: {path.name}"
                logger.info("detail generator: %s", path)
        self.shape_fitter = ShapeFitter(self.face_model, config.shape)
        self.layout = UVLayout(self.face_model.cpu(), config.unwrap.resolution).to(device)
        self.face_model.to(device)
        self.albedo_fitter = (AlbedoFitter(self.face_model, self.uvapm, networks, config.albedo)
                              if self.uvapm is not None else None)
        self.detail_fitter = (DetailFitter(self.face_model, self.detail_model, networks, config.detail)
                              if self.detail_model is not None else None)
        self.previews = {
            size: Renderer.for_face_model(self.face_model, PinholeCamera(self.face_model.camera_distance, size),
                                          RenderSettings(refresh_pixels=0.0))
            for size in (224, config.detail_crop_size)
        }

    def _detail_crops(self, faces: list[FaceInput], image: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S): each photo re-warped at ``detail_crop_size`` (the 224 crop upsampled without a photo)."""
        S = self.config.detail_crop_size
        crops = []
        for face, fallback in zip(faces, image):
            if face.photo is None:
                crops.append(F.interpolate(fallback[None], size=S, mode="bicubic", align_corners=False)[0].clamp(0, 1))
                continue
            transform = face.record["transform"][0].double().numpy() * (S / image.shape[-1])
            crop = warp_to_crop(face.photo, transform, S)
            crops.append(torch.from_numpy(crop).permute(2, 0, 1).float() / 255.0)
        return torch.stack(crops).to(self.device)

    def run(self, faces: list[FaceInput], on_stage=lambda name: None) -> list[FaceResult]:
        """Fit a batch of faces (see the module docstring); ``on_stage(name)`` is called as each stage starts."""
        dev, model = self.device, self.face_model
        stack = lambda key: torch.cat([f.record[key] for f in faces]).to(dev)  # noqa: E731
        image, landmarks = stack("image"), stack("landmarks")
        skin, parse = stack("skin_mask"), stack("parse_mask")
        B = len(faces)
        seconds: dict[str, float] = {}
        histories: dict[str, list] = {}

        @contextmanager
        def stage(name: str):
            on_stage(name)
            start = time.perf_counter()
            yield
            seconds[name] = time.perf_counter() - start

        with stage("stage1"):
            init = (deep3d_initial_params(self.deep3d, image, model.num_expression)
                    if self.deep3d is not None else None)
            shape = self.shape_fitter.fit(image, landmarks, skin, parse, init=init)
        params = shape.params
        histories["stage1"] = shape.history
        with stage("unwrap"):
            detail_image = self._detail_crops(faces, image)
            unwrapped = unwrap_texture(model, params, detail_image, skin, self.layout, self.config.unwrap)
        coarse = final = None
        if self.albedo_fitter is not None:
            with stage("stage2"):
                albedo = self.albedo_fitter.fit(image, skin, parse, landmarks, params, unwrapped)
            params, coarse = albedo.params, albedo.albedo_map
            histories["stage2"] = albedo.history
        if self.detail_fitter is not None and coarse is not None:
            with stage("stage3"):
                detail = self.detail_fitter.fit(detail_image, skin, parse, params, coarse, unwrapped)
            params, final = detail.params, detail.albedo_map
            histories["stage3"] = detail.history

        maps = {"stage1": F.interpolate(shape.albedo_proxy, size=64, mode="bilinear", align_corners=False)}
        if coarse is not None:
            maps["stage2"] = coarse
        if final is not None:
            maps["stage3"] = final
        renders, metrics, render_mask = self._evaluate(image, skin, parse, params, maps, "")
        if len(maps) > 1:  # the texture stages again at the detail crop's resolution
            later = {k: v for k, v in maps.items() if k != "stage1"}
            metrics.update(self._evaluate(detail_image, skin, parse, params, later, f"_{detail_image.shape[-1]}")[1])
        metrics["landmark_error"] = shape.landmark_error
        metrics["landmark_error_landmark_fit"] = shape.landmark_error_initial
        metrics["unwrap_coverage"] = unwrapped.coverage
        results = []
        for b in range(B):
            face_metrics = {k: float(v[b]) for k, v in metrics.items()}
            results.append(FaceResult(
                params=params.select(slice(b, b + 1)),
                landmarks=shape.landmarks[b].cpu(),
                renders={k: v[b].cpu() for k, v in renders.items()},
                render_mask=render_mask[b].cpu(),
                albedo_proxy=shape.albedo_proxy[b].cpu(),
                uv_coarse=None if coarse is None else coarse[b].cpu(),
                uv_final=None if final is None else final[b].cpu(),
                uv_texture=unwrapped.filled[b].cpu(),
                uv_confidence=unwrapped.confidence[b].cpu(),
                histories={k: [{n: v[b] for n, v in step.items()} for step in h] for k, h in histories.items()},
                metrics=face_metrics,
                seconds={k: v / B for k, v in seconds.items()},
            ))
        return results

    @torch.no_grad()
    def _evaluate(self, image, skin, parse, params, maps: dict, suffix: str):
        """Re-render each stage's albedo at the size of ``image``: composites, metrics in the skin mask, mask."""
        model = self.face_model
        size = image.shape[-1]
        resize = lambda m: F.interpolate(m, size=size, mode="bilinear", align_corners=False)  # noqa: E731
        skin, parse = resize(skin), resize(parse)
        vertices = model(params.identity, params.expression, params.rotation, params.translation).vertices
        normals = model.vertex_normals(vertices)
        renders, metrics = {}, {}
        render_mask = None
        for stage, uv in maps.items():
            out = self.previews[size](vertices, uv, params.gamma, normals=normals)
            render_mask = out.mask
            mask = fit_mask(out.mask, skin, parse)
            rendered = out.image.clamp(0, 1)
            renders[stage] = rendered * out.mask + image * (1 - out.mask)
            metrics[f"{stage}_psnr{suffix}"] = masked_psnr(rendered, image, mask)
            metrics[f"{stage}_ssim{suffix}"] = masked_ssim(rendered, image, mask)
            metrics[f"{stage}_high_freq_psnr{suffix}"] = high_frequency_psnr(rendered, image, mask)
        return renders, metrics, render_mask
