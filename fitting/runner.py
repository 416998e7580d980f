"""A whole run on a folder: preprocessing, batches of faces through the pipeline, outputs, gallery.

:func:`run_folder` runs the "process data" step (:mod:`fitting.preprocess`)
on the input folder into ``<output_dir>/processed_data``, then every face
through :class:`~fitting.pipeline.Pipeline` in batches, writing
``<output_dir>/<name>/`` (:mod:`fitting.outputs`), and finally
``<output_dir>/index.html`` (:mod:`fitting.gallery`) and ``failures.tsv``.

The output folder is never deleted. A face whose ``metrics.json`` exists is
complete and skipped (unless ``overwrite``), so an interrupted run resumes;
every file is written under a temporary name and renamed. A run holds a
lock on the output folder (:mod:`utils.locking`). A face that fails is
reported on one line and listed in ``failures.tsv``; the others go on (a
failed batch is retried face by face).

With ``group_by`` (``folder``: a subfolder per person, preprocessed into
``processed_data/<person>/``; ``all``: the whole folder is one person) the
photos of a person are fitted together in one batch (:mod:`fitting.groups`)
and written to ``<output_dir>/<person>/`` (:func:`~fitting.outputs.write_person_outputs`);
a photo that fails preprocessing is reported and the rest of its person fitted.

Under ``torchrun`` the faces (or persons) are sharded across ranks
(:class:`utils.distributed.ProcessGroup`); rank 0 takes the output folder's
lock for the whole job, preprocesses and, after a barrier, writes the
gallery. Each face's result depends only on that face (batches are seeded
and losses summed per face), so N processes give the same outputs as one.
"""

from __future__ import annotations

import logging
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from utils.atomic import write_text
from utils.cli import count
from utils.config import save_config
from utils.distributed import ProcessGroup
from utils.errors import FileFormatError, ToolkitError, failure_reason, failures_tsv
from utils.image_io import list_images, read_image
from utils.locking import lock_for_job
from utils.runtime import seed_everything

from .config import GROUP_BY, FittingConfig
from .gallery import write_gallery
from .outputs import FINAL_OUTPUT, write_face_outputs, write_person_outputs
from .pipeline import Pipeline
from .preprocess.folder import preprocess_folder
from .progress import StepProgress, TqdmStepProgress
from .structures import ProcessedFace

__all__ = ["FitUnit", "run_folder", "resolve_config", "fit_units"]

logger = logging.getLogger("uvapm.run")


class _FaceLog(logging.Handler):
    """Keeps the formatted log records of a batch: those of one face (``record.face``) and those of the batch."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.records: list[tuple[str | None, str]] = []
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record):
        self.records.append((getattr(record, "face", None), self.format(record)))

    def lines(self, face: str) -> list[str]:
        return [line for owner, line in self.records if owner in (None, face)]


@contextmanager
def _collect_log():
    handler = _FaceLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def resolve_config(config: FittingConfig) -> FittingConfig:
    """Fill the settings whose '' means "the run's" (see :mod:`fitting.config`); the result is what runs."""
    pre = config.preprocess
    pre.device = pre.device or config.device
    pre.checkpoints_dir = pre.checkpoints_dir or config.checkpoints_dir
    pre.overwrite = pre.overwrite or config.overwrite
    return config


def _load_face(path: Path) -> tuple[ProcessedFace, object]:
    """A processed face and its photo (None, with a warning, when the photo is gone or unreadable)."""
    face = ProcessedFace.load(path)
    source = face.info.source
    photo = None
    if source and Path(source).is_file():
        try:
            photo = read_image(source)
        except FileFormatError as err:
            logger.warning("%s: photo unreadable (%s); using the 224 crop for the detail stages", path.stem, err)
    else:
        logger.warning("%s: photo %r not found; using the 224 crop for the detail stages", path.stem, source)
    return face, photo


def _fit_batch(pipeline: Pipeline, names: list[str], faces: list, photos: list, output_dir: Path,
               config: FittingConfig, bar) -> list[tuple[str, str]]:
    """Fit and write a batch; on failure retry its faces one by one. Returns (name, reason) failures."""
    seed_everything(config.seed)
    with _collect_log() as log:
        try:
            batch = pipeline.batch(names, faces, photos)
            results = pipeline.run(batch, on_stage=lambda stage: bar.set_postfix_str(f"{names[0]}: {stage}"))
            for result in results:
                write_face_outputs(output_dir / result.name, result, pipeline.face_model, config.outputs,
                                   log.lines(result.name), _run_info(pipeline, config))
            return []
        except Exception as err:  # noqa: BLE001 - one face's failure, whatever it is, must not stop the batch
            reason = failure_reason(err)
            if len(names) > 1:
                logger.warning("batch of %s failed (%s); retrying its faces one by one", count(len(names), "face"),
                               reason)
                return [f for one in zip(names, faces, photos)
                        for f in _fit_batch(pipeline, [one[0]], [one[1]], [one[2]], output_dir, config, bar)]
            logger.debug("%s", traceback.format_exc())
            logger.error("%s: %s", names[0], reason)
            return [(names[0], reason)]


def _fit_person(pipeline: Pipeline, person: str, names: list[str], faces: list, photos: list, output_dir: Path,
                config: FittingConfig, bar) -> list[tuple[str, str]]:
    """Fit one person's photos jointly and write ``output_dir/person``. Returns (person, reason) failures."""
    seed_everything(config.seed)
    with _collect_log() as log:
        try:
            batch = pipeline.batch(names, faces, photos, groups=[0] * len(names))
            results = pipeline.run(batch, on_stage=lambda stage: bar.set_postfix_str(f"{person}: {stage}"))
            write_person_outputs(output_dir / person, person, results, pipeline.face_model, config.outputs,
                                 [log.lines(r.name) for r in results], _run_info(pipeline, config))
            return []
        except Exception as err:  # noqa: BLE001 - one person's failure must not stop the run
            logger.debug("%s", traceback.format_exc())
            logger.error("%s: %s", person, failure_reason(err))
            return [(person, failure_reason(err))]


def _run_info(pipeline: Pipeline, config: FittingConfig) -> dict:
    return {"networks": pipeline.networks_status, "face_model": config.face_model, "stages": pipeline.stage_numbers}


def _preprocess(input_dir: Path, processed_dir: Path, config: FittingConfig, progress: bool) -> list[tuple[str, str]]:
    """The "process data" step (with ``group_by: folder`` also of every subfolder into its own); failures."""
    failures: list[tuple[str, str]] = []
    if config.group_by != "folder" or list_images(input_dir):
        failures = preprocess_folder(input_dir, processed_dir, config.preprocess, progress=progress).failures
    processed_dir.mkdir(parents=True, exist_ok=True)
    if config.group_by == "folder":
        for folder in sorted(p for p in input_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                             and p.resolve() != processed_dir.parent.resolve()):
            if list_images(folder):
                found = preprocess_folder(folder, processed_dir / folder.name, config.preprocess, progress=progress)
                failures += [(f"{folder.name}/{n}", r) for n, r in found.failures]
    return failures


@dataclass(frozen=True)
class FitUnit:
    """What one fit writes: an output folder ``name`` from the processed ``files``, fitted as one person's photos
    (``joint``) or as independent faces."""

    name: str
    files: tuple[Path, ...]
    joint: bool = False


def fit_units(processed_dir: Path, group_by: str, person: str) -> list[FitUnit]:
    """What is fitted: each face alone (``none``), each subfolder of ``processed_dir`` as a person and the faces
    beside them alone (``folder``), or every face as one person named ``person`` (``all``); sorted by name."""
    singles = sorted(processed_dir.glob("*.pt"))
    if group_by == "all":
        return [FitUnit(person, tuple(singles), True)] if singles else []
    units = [FitUnit(p.stem, (p,)) for p in singles]
    if group_by == "folder":
        units += [FitUnit(d.name, tuple(sorted(d.glob("*.pt"))), True) for d in sorted(processed_dir.iterdir())
                  if d.is_dir() and any(d.glob("*.pt"))]
    names = [u.name for u in units]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise ToolkitError(f"{processed_dir.parent}: {', '.join(clashes)} name both a photo and a person's folder; "
                           "rename one")
    return sorted(units, key=lambda u: u.name)


def run_folder(input_dir: Path, output_dir: Path, config: FittingConfig, progress: bool) -> int:
    """The whole run (see the module docstring); returns the exit code (0 all done, 1 some failed)."""
    config = resolve_config(config)
    ranks = ProcessGroup(config.device)
    lock = None
    try:
        processed_dir = output_dir / "processed_data"
        if config.group_by not in GROUP_BY:
            raise ToolkitError(f"group_by: {config.group_by!r} is not one of {', '.join(GROUP_BY)}")
        preprocess_failures: list[tuple[str, str]] = []
        lock = lock_for_job(output_dir, "fitting.run", ranks.is_main, ranks.broadcast)
        if ranks.is_main:
            save_config(output_dir / "config.yaml", config)
            preprocess_failures = _preprocess(input_dir, processed_dir, config, progress)
        ranks.barrier()
        grouped = config.group_by != "none"
        units = fit_units(processed_dir, config.group_by, input_dir.resolve().name or "person")
        names = [unit.name for unit in units]
        mine = units[ranks.rank :: ranks.world_size]
        todo = [u for u in mine if config.overwrite or not (output_dir / u.name / FINAL_OUTPUT).is_file()]
        kind = "person" if grouped else "face"
        if len(todo) < len(mine):
            logger.info("%s already complete, skipped (use --overwrite to redo them)",
                        count(len(mine) - len(todo), kind))
        failures: list[tuple[str, str]] = []
        if todo:
            pipeline = Pipeline(config, ranks.device)
            steps = TqdmStepProgress(position=2 * ranks.rank + 1) if progress else StepProgress()
            pipeline.set_progress(steps)
            singles = [u for u in todo if not u.joint]
            batches = [[u] for u in todo if u.joint] + [singles[i : i + config.batch_size]
                                                         for i in range(0, len(singles), config.batch_size)]
            label = f"fit (rank {ranks.rank})" if ranks.distributed else "fit"
            with logging_redirect_tqdm(), tqdm(total=len(todo), desc=label, unit=kind, disable=not progress,
                                               position=2 * ranks.rank, dynamic_ncols=True) as bar:
                for batch in batches:
                    names_ok, faces, photos = [], [], []
                    for path in (path for unit in batch for path in unit.files):
                        try:
                            face, photo = _load_face(path)
                        except FileFormatError as err:
                            reason = f"{err.reason} (rerun with --overwrite to preprocess it again)"
                            logger.error("%s: %s", path.stem, reason)
                            failures.append((path.stem, reason))
                            continue
                        names_ok.append(path.stem)
                        faces.append(face)
                        photos.append(photo)
                    if faces and batch[0].joint:
                        failures += _fit_person(pipeline, batch[0].name, names_ok, faces, photos, output_dir,
                                                config, bar)
                    elif faces:
                        failures += _fit_batch(pipeline, names_ok, faces, photos, output_dir, config, bar)
                    bar.update(len(batch))
            steps.close()
        all_failures = [f for rank_failures in ranks.gather(failures) for f in rank_failures]
        ranks.barrier()
        if ranks.is_main:
            everything = [(n, f"preprocess: {r}") for n, r in preprocess_failures] + all_failures
            write_text(output_dir / "failures.tsv", failures_tsv(everything))
            write_gallery(output_dir, names, everything)
            done = sum((output_dir / n / FINAL_OUTPUT).is_file() for n in names)
            logger.info("%s complete, %s; gallery: %s", count(done, "face"), count(len(everything), "failure"),
                        output_dir / "index.html")
            return 1 if everything else 0
        return 1 if all_failures else 0
    finally:
        if lock is not None:
            lock.release()
        ranks.close()
