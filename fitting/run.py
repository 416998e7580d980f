"""``python -m fitting.run`` (what ``run_rgb_fitting.sh`` calls): photos -> 3D faces with UV albedo.

Runs the "process data" step (:mod:`fitting.preprocess`) on ``--input_dir``
into ``<output_dir>/processed_data``, then stages 1-3 (:mod:`fitting.pipeline`)
for every face, writing ``<output_dir>/<name>/`` (see :mod:`fitting.outputs`),
and finally ``<output_dir>/index.html`` (a gallery that opens from disk) and
``<output_dir>/failures.tsv``.

The output folder is never deleted. A face whose ``metrics.json`` exists is
complete and skipped (unless ``--overwrite``), so an interrupted run resumes;
every file is written under a temporary name and renamed, so no half-written
file is ever visible. SIGINT or SIGTERM stop the run within two seconds
(:mod:`utils.interrupts`). A run holds a lock on the output folder
(:mod:`utils.locking`): a second run on the same folder is refused. A face
that fails (unreadable or corrupt input, no face, an optimisation that keeps
diverging, an output file that cannot be written) is reported on one line
and listed in ``failures.tsv``; the others go on. Exit code: 0 when every
face succeeded, 1 when any image or face failed, 2 for usage, configuration
or missing-model errors, an input folder without images, an output folder in
use or not writable; ended by the signal when interrupted (130/143 in a shell).

Scale-out: ``torchrun --nproc_per_node N -m fitting.run ...`` (``--nnodes``
for several machines) shards the faces across ranks with
``torch.distributed`` (NCCL on GPUs, Gloo on CPUs); rank 0 takes the output
folder's lock for the whole job, preprocesses and, after a barrier, writes
the gallery. Each face's result depends only on that face (batches are
seeded and losses summed per face), so N processes give the same outputs as
one.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.distributed as dist
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from utils.atomic import write_text
from utils.cli import add_logging_args, resolve_device, run_main, seed_everything, setup_logging
from utils.config import add_config_args, config_from_args, save_config
from utils.errors import FileFormatError, ToolkitError, error_reason, failures_tsv
from utils.image_io import IMAGE_EXTENSIONS, list_images, read_image
from utils.locking import lock_for_job

from .gallery import write_gallery
from .outputs import FINAL_OUTPUT, write_face_outputs
from .pipeline import FaceInput, FittingConfig, Pipeline
from .preprocess import load_processed, preprocess_folder

__all__ = ["main", "run_folder"]

logger = logging.getLogger("uvapm.run")
DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fitting.yaml"


class _Distributed:
    """Rank and world size under torchrun (one process otherwise)."""

    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.enabled = self.world > 1
        if self.enabled and not dist.is_initialized():
            backend = "nccl" if device_name.startswith("cuda") and torch.cuda.is_available() else "gloo"
            dist.init_process_group(backend)

    def device(self, name: str) -> torch.device:
        device = resolve_device(name)
        if device.type == "cuda" and self.enabled and device.index is None:
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj) -> list:
        if not self.enabled:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


class _LineCollector(logging.Handler):
    """Keeps the formatted log lines of the faces being fitted."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.lines.append(self.format(record))


@contextmanager
def _collect_log():
    handler = _LineCollector()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.lines
    finally:
        root.removeHandler(handler)


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _fit_failure(err: Exception) -> str:
    """The reason a face failed, for the log and failures.tsv."""
    if isinstance(err, OSError):
        return f"cannot write output ({error_reason(err)})"
    if isinstance(err, (ToolkitError, MemoryError)):
        return error_reason(err)
    return f"unexpected error ({error_reason(err)}); rerun with --verbose for the traceback"


def _load_face(path: Path) -> FaceInput:
    record = load_processed(path)
    source = record["info"].get("source", "")
    photo = None
    if source and Path(source).is_file():
        try:
            photo = read_image(source)
        except FileFormatError as err:
            logger.warning("%s: photo unreadable (%s); using the 224 crop for the detail stages", path.stem, err)
    else:
        logger.warning("%s: photo %r not found; using the 224 crop for the detail stages", path.stem, source)
    return FaceInput(path.stem, record, photo)


def _fit_batch(pipeline: Pipeline, faces: list[FaceInput], output_dir: Path, config: FittingConfig,
               bar) -> list[tuple[str, str]]:
    """Fit and write a batch; on failure retry its faces one by one. Returns (name, reason) failures."""
    seed_everything(config.seed)
    with _collect_log() as lines:
        try:
            results = pipeline.run(faces, on_stage=lambda stage: bar.set_postfix_str(f"{faces[0].name}: {stage}"))
            run_info = {"networks": pipeline.networks_status, "face_model": config.face_model,
                        "stages": pipeline.stages}
            for face, result in zip(faces, results):
                write_face_outputs(output_dir / face.name, face, result, pipeline.face_model,
                                   config.outputs.uv_1024, config.outputs.glb, lines, run_info)
            return []
        except Exception as err:  # noqa: BLE001 - one face's failure, whatever it is, must not stop the batch
            reason = _fit_failure(err)
            if len(faces) > 1:
                logger.warning("batch of %d failed (%s); retrying its faces one by one", len(faces), reason)
                return [f for face in faces for f in _fit_batch(pipeline, [face], output_dir, config, bar)]
            logger.debug("%s", traceback.format_exc())
            logger.error("%s: %s", faces[0].name, reason)
            return [(faces[0].name, reason)]


def run_folder(input_dir: Path, output_dir: Path, config: FittingConfig, overwrite: bool, progress: bool) -> int:
    """The whole run (see the module docstring); returns the exit code."""
    ranks = _Distributed(config.device)
    lock = None
    try:
        device = ranks.device(config.device)
        processed_dir = output_dir / "processed_data"
        preprocess_failures: list[tuple[str, str]] = []
        lock = lock_for_job(output_dir, "fitting.run", ranks.rank == 0, ranks.broadcast)
        if ranks.rank == 0:
            save_config(output_dir / "config.yaml", config)
            config.preprocess.overwrite = overwrite
            result = preprocess_folder(input_dir, processed_dir, config.preprocess, progress=progress)
            preprocess_failures = result.failures
        ranks.barrier()
        names = sorted(p.stem for p in processed_dir.glob("*.pt"))
        mine = names[ranks.rank :: ranks.world]
        todo = [n for n in mine if overwrite or not (output_dir / n / FINAL_OUTPUT).is_file()]
        if len(todo) < len(mine):
            logger.info("%d faces already complete, skipped (use --overwrite to redo them)", len(mine) - len(todo))
        failures: list[tuple[str, str]] = []
        if todo:
            pipeline = Pipeline(config, device)
            batches = [todo[i : i + config.batch_size] for i in range(0, len(todo), config.batch_size)]
            with logging_redirect_tqdm(), tqdm(total=len(todo), desc=f"fit (rank {ranks.rank})" if ranks.enabled
                                               else "fit", unit="face", disable=not progress,
                                               position=ranks.rank, dynamic_ncols=True) as bar:
                for batch in batches:
                    faces = []
                    for name in batch:
                        try:
                            faces.append(_load_face(processed_dir / f"{name}.pt"))
                        except FileFormatError as err:
                            reason = f"{err.reason} (rerun with --overwrite to preprocess it again)"
                            logger.error("%s: %s", name, _one_line(reason))
                            failures.append((name, reason))
                    if faces:
                        failures += _fit_batch(pipeline, faces, output_dir, config, bar)
                    bar.update(len(batch))
        all_failures = [f for rank_failures in ranks.gather(failures) for f in rank_failures]
        ranks.barrier()
        if ranks.rank == 0:
            everything = [(n, f"preprocess: {r}") for n, r in preprocess_failures] + all_failures
            write_text(output_dir / "failures.tsv", failures_tsv(everything))
            write_gallery(output_dir, names, everything)
            done = sum((output_dir / n / FINAL_OUTPUT).is_file() for n in names)
            logger.info("%d faces complete, %d failures; gallery: %s", done, len(everything),
                        output_dir / "index.html")
            return 1 if everything else 0
        return 1 if all_failures else 0
    finally:
        if lock is not None:
            lock.release()
        ranks.close()


def _parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m fitting.run",
        description="Reconstruct 3D faces with UV albedo maps from a folder of photos (stages 1-3).",
    )
    parser.add_argument("--input_dir", required=True, help="folder of photos")
    parser.add_argument("--output_dir", help="default: <input_dir>/outputs")
    parser.add_argument("--checkpoints_dir", help="official checkpoints (default: ./checkpoints)")
    parser.add_argument("--face_model", choices=("ict", "hifi3dpp", "bfm"), help="installed face model (default: ict)")
    parser.add_argument("--uvapm", help="UV albedo model file (.npz, or the paper's .pkl)")
    parser.add_argument("--detail_model", help="detail generator checkpoint")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--batch_size", type=int, help="faces optimised together (default: 1)")
    parser.add_argument("--stages", help="stages to run, e.g. 1,2,3 (default) or 1,2")
    parser.add_argument("--all_faces", action="store_true", default=None, help="every face of each photo")
    parser.add_argument("--uv_1024", action="store_true", default=None, help="also write uv_albedo_1024.png")
    parser.add_argument("--seed", type=int, help="random seed (default: 123)")
    parser.add_argument("--overwrite", action="store_true", help="redo faces (and preprocessing) already done")
    add_config_args(parser, str(DEFAULT_CONFIG))
    add_logging_args(parser)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = _parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        if args.stages is not None:
            try:
                args.stages = [int(s) for s in args.stages.split(",") if s.strip()]
            except ValueError:
                raise ToolkitError(f"--stages {args.stages!r}: expected numbers like 1,2,3") from None
            if not args.stages or args.stages[0] != 1 or args.stages != list(range(1, len(args.stages) + 1)):
                raise ToolkitError(f"--stages {args.stages}: stages run in order from 1 (1 | 1,2 | 1,2,3)")
        flags = {"checkpoints_dir": "checkpoints_dir", "face_model": "face_model", "uvapm": "uvapm",
                 "detail_model": "detail_model", "device": "device", "batch_size": "batch_size",
                 "stages": "stages", "seed": "seed", "all_faces": "preprocess.all_faces",
                 "uv_1024": "outputs.uv_1024"}
        config = config_from_args(FittingConfig, args, flags)
        if args.checkpoints_dir:
            config.preprocess.checkpoints_dir = args.checkpoints_dir
        config.preprocess.device = config.device
        if config.batch_size < 1:
            raise ToolkitError("--batch_size must be at least 1")
        input_dir = Path(args.input_dir)
        if not input_dir.is_dir():
            raise ToolkitError(f"{input_dir}: input folder not found")
        if not list_images(input_dir):
            raise ToolkitError(f"{input_dir}: no images in the input folder ({' '.join(IMAGE_EXTENSIONS)})")
        output_dir = Path(args.output_dir) if args.output_dir else input_dir / "outputs"
        return run_folder(input_dir, output_dir, config, args.overwrite, progress=not args.quiet)

    return run_main(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
