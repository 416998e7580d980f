"""Speed and memory of the pipeline on this machine.

Three experiments on real photos (``--input_dir``, evenly spaced in name
order as in :mod:`benchmarks.real_photos`):

1. **Scaling** with the number of faces (``--scaling``, default 10, 50,
   100): for each N, a fresh run of preprocessing (detection, landmarks,
   masks, written to disk) and the stage-1 landmark fit (batches of 8) on N
   photos. The photometric refinement and the texture stages are left out
   so the sizes fit the time budget; their per-face cost is experiment 2.
2. **Per-face stage times and batch size** (``--batch_sizes``, default 1,
   4, 8): one batch of B preprocessed faces through every stage
   (:meth:`fitting.pipeline.Pipeline.run`), after one warm-up face (listed
   too: the first call pays for lazy initialisation). Seconds per face for
   each stage (the pipeline's own stage timers), ``other`` (wall time minus
   the stages: detail crops, the final re-renders and their metrics) and
   the batch's wall time per face.
3. **Renderer**: the same stage-2 fit (first face, stage-1 geometry, the
   albedo starting from the UVAPM mean, ``--renderer_steps`` steps) with the
   cached renderer the pipeline uses, with our renderer re-rasterising every
   step, and with a plain pytorch3d ``MeshRenderer`` every step
   (``benchmarks/bm_renderer.py``'s); the optional ArcFace/VGG terms are
   left out. Each fit runs once to warm up, then once timed; the last
   step's photometric loss shows it is the same fit.
4. **Output resolution**: the first face through every stage and
   :func:`fitting.outputs.write_face_outputs` (the files written), with the
   final albedo at 512 texels (the default) and with ``--uv_1024`` (the map
   at 1024 with the photo's detail, :mod:`fitting.high_resolution`), each
   after a warm-up run; ``uv1024`` is that stage's time, ``other`` includes
   writing the outputs.

Peak memory: the peak resident set (``VmHWM`` of ``/proc/self/status``,
reset before each measurement through ``/proc/self/clear_refs``; where that
is not possible, the process's peak so far from ``getrusage``) and, on CUDA,
the peak allocated by torch. On CUDA the device is synchronised before every
clock reading the benchmark takes (``--device cuda`` needs no other change).

Usage::

    python -m benchmarks.speed [--device cpu] [--scaling 10,50,100] [--batch_sizes 1,4,8] [--quick]

Results: ``benchmarks/results/speed[_quick].{json,md}``.
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from assets import load_installed_face_model
from fitting.albedo import AlbedoFitter
from fitting.landmark_fit import LandmarkFitter
from fitting.outputs import write_face_outputs
from fitting.pipeline import Pipeline
from fitting.preprocess.folder import preprocess_folder
from fitting.structures import FaceBatch, FitState, ProcessedFace
from models.camera import PinholeCamera
from models.config import RenderSettings
from models.face_model import FaceModel
from models.renderer import Renderer, RenderOutput
from models.shading import sh_shading
from utils.errors import ToolkitError
from utils.image_io import read_image
from utils.runtime import resolve_device, seed_everything

from . import common
from .bm_renderer import pytorch3d_renderer
from .fit_setup import add_fitting_args, fitting_config
from .real_photos import select_photos

__all__ = ["PeakMemory", "Pytorch3DRenderer", "main"]

logger = logging.getLogger("uvapm.benchmarks")

COLUMNS = ["experiment", "setting", "faces", "wall_s", "s_per_face", "stage1", "unwrap", "stage2", "stage3", "uv1024",
           "other", "ms_per_step", "final_photo_loss", "peak_rss_mb", "peak_gpu_mb"]
STAGES = ("stage1", "unwrap", "stage2", "stage3", "uv1024")


class PeakMemory:
    """Peak resident memory (and peak CUDA allocation) of this process over a measured span."""

    def __init__(self, device: torch.device):
        self.device = device
        self.resettable = self._reset_rss()

    @staticmethod
    def _reset_rss() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current resident set
            return True
        except OSError:
            return False

    def start(self) -> None:
        self._reset_rss()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    def read(self) -> dict:
        """``peak_rss_mb`` since :meth:`start` (process peak when not resettable) and ``peak_gpu_mb`` on CUDA."""
        rss = None
        try:
            with open("/proc/self/status") as fh:
                rss = next((int(line.split()[1]) / 1024 for line in fh if line.startswith("VmHWM:")), None)
        except OSError:
            pass
        if rss is None:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out = {"peak_rss_mb": rss}
        if self.device.type == "cuda":
            out["peak_gpu_mb"] = torch.cuda.max_memory_allocated(self.device) / 2**20
        return out


def _clock(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


class Pytorch3DRenderer(torch.nn.Module):
    """A plain pytorch3d ``MeshRenderer`` (``bm_renderer.py``'s) behind our renderer's interface.

    Every call builds the textured mesh and rasterises it; the SH shading is
    computed per vertex and interpolated with pytorch3d's fragments, as our
    renderer does. Only ``image`` and ``mask`` of the output are filled.
    """

    def __init__(self, face_model, camera: PinholeCamera, device: torch.device):
        super().__init__()
        self.model = face_model
        self.renderer = pytorch3d_renderer(face_model, camera, device)

    def invalidate(self) -> None:
        """Nothing is cached."""

    def forward(self, vertices, albedo_map, gamma, normals) -> RenderOutput:
        from pytorch3d.ops import interpolate_face_attributes
        from pytorch3d.renderer import TexturesUV
        from pytorch3d.structures import Meshes

        B, model = vertices.shape[0], self.model
        textures = TexturesUV(albedo_map.permute(0, 2, 3, 1), model.faces_uv[None].expand(B, -1, -1),
                              model.uvs[None].expand(B, -1, -1), align_corners=False)
        images, fragments = self.renderer(Meshes(vertices, model.faces[None].expand(B, -1, -1), textures))
        shading = sh_shading(normals, gamma)  # (B, V, 3)
        faces = model.faces + (torch.arange(B, device=vertices.device) * vertices.shape[1])[:, None, None]
        pixel_shading = interpolate_face_attributes(fragments.pix_to_face, fragments.bary_coords,
                                                    shading.reshape(-1, 3)[faces.reshape(-1, 3)])[..., 0, :]
        mask = (fragments.pix_to_face[..., 0] >= 0).to(vertices.dtype)[:, None]
        image = (images[..., :3] * pixel_shading).permute(0, 3, 1, 2) * mask
        empty = torch.empty(0, device=vertices.device)
        return RenderOutput(image, mask, empty, empty, empty, empty, empty, fragments.pix_to_face[..., 0])


def _measure(device: torch.device, memory: PeakMemory, fn: Callable[[], object]) -> tuple[object, float, dict]:
    memory.start()
    start = _clock(device)
    out = fn()
    return out, _clock(device) - start, memory.read()


def scaling(photos: list, sizes: list[int], work: Path, config, device, memory: PeakMemory) -> tuple[list, Path]:
    """Experiment 1; returns the rows and the processed folder of the largest run."""
    rows, processed = [], None
    model = FaceModel(load_installed_face_model(config.face_model)).to(device)
    fitter = LandmarkFitter(model, PinholeCamera(model.camera_distance, 224), config.shape.landmarks)
    for n in sizes:
        photo_dir, processed = work / f"photos_{n}", work / f"processed_{n}"
        photo_dir.mkdir()
        for photo in photos[:n]:
            (photo_dir / photo.name).symlink_to(photo.resolve())

        def run(photo_dir=photo_dir, processed=processed):
            preprocess_folder(photo_dir, processed, config.preprocess, progress=False)
            faces = [ProcessedFace.load(p) for p in sorted(processed.glob("*.pt"))]
            for i in range(0, len(faces), 8):
                fitter.fit(torch.cat([f.landmarks for f in faces[i : i + 8]]).to(device))
            return len(faces)

        faces, seconds, peak = _measure(device, memory, run)
        rows.append({"experiment": "scaling: preprocessing + landmark fit", "setting": f"{n} photos",
                     "faces": faces, "wall_s": seconds, "s_per_face": seconds / max(faces, 1), **peak})
    return rows, processed


def _load_faces(processed: Path, count: int) -> list[tuple[str, ProcessedFace, object]]:
    """(name, processed face, photo) of the first ``count`` faces."""
    faces = []
    for path in sorted(processed.glob("*.pt"))[:count]:
        face = ProcessedFace.load(path)
        faces.append((path.stem, face, read_image(face.info.source)))
    return faces


def _batch(pipeline: Pipeline, faces: list[tuple[str, ProcessedFace, object]]) -> FaceBatch:
    names, processed, photos = zip(*faces)
    return pipeline.batch(list(names), list(processed), list(photos))


def batches(pipeline: Pipeline, faces: list, sizes: list[int], device, memory: PeakMemory,
            seed: int) -> tuple[list, object]:
    """Experiment 2; returns the rows and the warm-up face's result."""
    rows, first = [], None
    for label, batch in [("warm-up (first call)", faces[:1])] + [(f"batch size {b}", faces[:b]) for b in sizes]:
        seed_everything(seed)
        results, seconds, peak = _measure(device, memory, lambda batch=batch: pipeline.run(_batch(pipeline, batch)))
        first = results[0] if first is None else first
        stage_seconds = {k: results[0].seconds[k] for k in STAGES if k in results[0].seconds}
        per_face = seconds / len(batch)
        rows.append({"experiment": "all stages", "setting": label, "faces": len(batch), "wall_s": seconds,
                     "s_per_face": per_face, **stage_seconds, "other": per_face - sum(stage_seconds.values()),
                     **peak})
    return rows, first


def renderers(pipeline: Pipeline, face: tuple, result, steps: int, device, memory: PeakMemory,
              seed: int) -> list[dict]:
    """Experiment 3."""
    model, config = pipeline.face_model, pipeline.config
    camera = PinholeCamera(model.camera_distance, 224)
    fit_config = replace(config.albedo, optim=replace(config.albedo.optim, steps=steps))
    batch = _batch(pipeline, [face])
    state = FitState(params=result.params.to(device))
    variants = {
        "ours, cached (the pipeline's)": None,
        "ours, re-rasterised every step": Renderer.for_face_model(model, camera, RenderSettings(refresh_pixels=0.0)),
        "pytorch3d MeshRenderer every step": Pytorch3DRenderer(model, camera, device),
    }
    rows = []
    for label, renderer in variants.items():
        fitter = AlbedoFitter(model, pipeline.uvapm, None, fit_config)
        if renderer is not None:
            fitter.renderer = renderer

        def fit(fitter=fitter):
            seed_everything(seed)
            return fitter(batch, state)

        fit()  # warm-up
        out, seconds, peak = _measure(device, memory, fit)
        rows.append({"experiment": f"stage-2 fit, {steps} steps", "setting": label, "faces": 1, "wall_s": seconds,
                     "ms_per_step": 1000 * seconds / steps,
                     "final_photo_loss": out.histories["stage2"][-1]["photo"][0], **peak})
    return rows


def resolutions(config, face: tuple, work: Path, device, memory: PeakMemory) -> list[dict]:
    """Experiment 4: one face through every stage and its outputs written, at 512 and with ``--uv_1024``."""
    rows = []
    for label, uv_1024 in (("final albedo 512 (default)", False), ("with --uv_1024", True)):
        pipeline = Pipeline(replace(config, outputs=replace(config.outputs, uv_1024=uv_1024)), device)

        def fit_and_write(pipeline=pipeline, folder=work / f"outputs_{int(uv_1024)}"):
            seed_everything(config.seed)
            result = pipeline.run(_batch(pipeline, [face]))[0]
            write_face_outputs(folder, result, pipeline.face_model, pipeline.config.outputs, [], {})
            return result

        fit_and_write()  # warm-up
        result, seconds, peak = _measure(device, memory, fit_and_write)
        stage_seconds = {k: result.seconds[k] for k in STAGES if k in result.seconds}
        rows.append({"experiment": "output resolution, all stages + outputs", "setting": label, "faces": 1,
                     "wall_s": seconds, "s_per_face": seconds, **stage_seconds,
                     "other": seconds - sum(stage_seconds.values()), **peak})
    return rows


def _sizes(text: str, flag: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ToolkitError(f"{flag} {text!r}: expected positive integers like 1,4,8")
    return values


def _parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input_dir", default=str(common.SHARED / "data" / "faces" / "single"),
                        help="folder of photos (default: the shared single-face photos)")
    parser.add_argument("--scaling", help="numbers of photos for the scaling runs (default 10,50,100; 2,4 quick)")
    parser.add_argument("--batch_sizes", help="batch sizes of the all-stage runs (default 1,4,8; 1,2 quick)")
    parser.add_argument("--renderer_steps", type=int, help="stage-2 steps per renderer (default 3; 1 quick)")
    add_fitting_args(parser)
    return parser.parse_args(argv)


def run(args, argv: list[str]) -> list[dict]:
    """The benchmark; returns the table rows."""
    scaling_sizes = _sizes(args.scaling or ("2,4" if args.quick else "10,50,100"), "--scaling")
    batch_sizes = _sizes(args.batch_sizes or ("1,2" if args.quick else "1,4,8"), "--batch_sizes")
    steps = args.renderer_steps or (1 if args.quick else 3)
    device = resolve_device(args.device)
    memory = PeakMemory(device)
    photos = select_photos(Path(args.input_dir), max(scaling_sizes))
    with tempfile.TemporaryDirectory(prefix="uvapm_bench_") as scratch:
        work = Path(scratch)
        config, models = fitting_config(args, work / "models")
        rows, processed = scaling(photos, sorted(scaling_sizes), work, config, device, memory)
        faces = _load_faces(processed, max(batch_sizes))
        if len(faces) < max(batch_sizes):
            raise ToolkitError(f"only {len(faces)} faces detected in {len(photos)} photos; need {max(batch_sizes)} "
                               "for the batch sizes (raise --scaling or lower --batch_sizes)")
        pipeline = Pipeline(config, device)
        batch_rows, first = batches(pipeline, faces, batch_sizes, device, memory, config.seed)
        rows += batch_rows
        rows += renderers(pipeline, faces[0], first, steps, device, memory, config.seed)
        rows += resolutions(config, faces[0], work, device, memory)
    name = "speed_quick" if args.quick else "speed"
    peak_note = ("peak resident memory per measurement (VmHWM reset before each)" if memory.resettable else
                 "peak resident memory of the process so far (getrusage; this system cannot reset it)")
    notes = (
        "scaling: a fresh preprocessing run (detection, landmarks, masks, files written) and the stage-1 landmark "
        "fit in batches of 8, per number of photos. all stages: one batch through Pipeline.run (stage columns: the "
        "pipeline's own timers, seconds per face; other: wall per face minus the stages, i.e. detail crops and the "
        "final re-renders with their metrics), after a warm-up face. stage-2 fit: the same fit with each renderer "
        "(photometric, prior and light terms; the optional ArcFace/VGG terms left out), timed after a warm-up fit; "
        "final_photo_loss: the last step's photometric term. output resolution: the first face fitted and its "
        "outputs written, at 512 and with --uv_1024, after a warm-up run each (other: outputs included). "
        f"{peak_note}. "
        f"Device {device}; torch threads {torch.get_num_threads()}. {models.description}"
    )
    common.report(name, "Pipeline speed and memory", rows, COLUMNS,
                  "python -m benchmarks.speed " + " ".join(argv), notes)
    return rows


def main(argv=None) -> int:
    return common.benchmark_main(argv, _parse_args, run)


if __name__ == "__main__":
    sys.exit(main())
