"""``python -m assets``: install face models, list them, check checkpoints.

Installing holds a lock on ``$UVAPM_HOME/face_models`` (:mod:`utils.locking`),
so two installs at once do not race; a bad source is a one-line error naming
it (exit code 2) and leaves nothing installed.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from models.face_model_format import save_face_model
from utils.cli import add_logging_args, run_main, setup_logging
from utils.errors import FileFormatError, MissingAssetError, ToolkitError
from utils.locking import FolderLock

from . import FACE_MODELS, face_model_path, ict, installed_face_models, load_installed_face_model, uvapm_home
from .checkpoints import checkpoint_status
from .matlab_models import convert_bfm, convert_hifi3dpp
from .sources import content_digest, iter_files

logger = logging.getLogger("uvapm.assets")


def _download(url: str, folder: Path) -> Path:
    target = folder / "ict-facekit-download.zip"
    logger.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(target, "wb") as fh:
            while chunk := response.read(1 << 20):
                fh.write(chunk)
    except (urllib.error.URLError, OSError, TimeoutError) as err:
        raise MissingAssetError(
            f"could not download the ICT-FaceKit archive from {url} ({getattr(err, 'reason', err)}). "
            "Offline? Pass a local copy: python -m assets install ict --from PATH "
            "(ict_facexmodel.tar.xz, the repository .zip, or an unpacked FaceXModel/ folder)"
        ) from None
    return target


def install_ict(source: str | None) -> Path:
    with tempfile.TemporaryDirectory(dir=_ensure_home()) as tmp:
        path = Path(source) if source and "://" not in source else _download(source or ict.ICT_URL, Path(tmp))
        logger.info("reading ICT-FaceKit files from %s", path)
        files = ict.used_files(dict(iter_files(path, ict.wanted_member)), path)
        digest = content_digest(files)
        if digest != ict.ICT_CONTENT_SHA256:
            raise FileFormatError(
                path, f"ICT-FaceKit files do not match the expected release (content sha256 {digest[:12]}..., "
                f"expected {ict.ICT_CONTENT_SHA256[:12]}...)"
            )
        logger.info("converting (about 10 s)")
        data = ict.convert(files, path)
    return _save("ict", data)


def _ensure_home() -> Path:
    home = uvapm_home()
    home.mkdir(parents=True, exist_ok=True)
    return home


def _save(name: str, data) -> Path:
    target = face_model_path(name)
    save_face_model(target, data)
    logger.info("installed %s: %d vertices (%d in the face region), uv_layout_id %s -> %s",
                name, data.num_vertices, data.num_face_vertices, data.uv_layout_id, target)
    return target


def install(name: str, source: str | None) -> Path:
    with FolderLock(face_model_path(name).parent, f"assets install {name}"):
        return _install(name, source)


def _install(name: str, source: str | None) -> Path:
    if name == "ict":
        return install_ict(source)
    if not source:
        raise MissingAssetError(f"{name} is licence-restricted and has no public download; use: {FACE_MODELS[name]}")
    path = Path(source)
    if name == "hifi3dpp":
        mat = path / "hifi3dpp_model_info.mat" if path.is_dir() else path
        return _save(name, convert_hifi3dpp(mat))
    return _save(name, convert_bfm(path))


def list_models() -> str:
    lines = [f"face models in {uvapm_home() / 'face_models'}:"]
    for name in FACE_MODELS:
        if name not in installed_face_models():
            lines.append(f"  {name:9s} not installed  ({FACE_MODELS[name]})")
            continue
        try:
            data = load_installed_face_model(name)
        except ToolkitError as err:
            lines.append(f"  {name:9s} BROKEN: {err}")
            continue
        albedo = f", per-vertex albedo {data.albedo_basis.shape[2]} modes" if data.albedo_basis is not None else ""
        if data.part_names is not None:
            parts = f", display parts {', '.join(str(n) for n in data.part_names)}"
        elif name == "ict":
            parts = (f", no display parts (installed by an older toolkit; reinstall for eyes and teeth: "
                     f"{FACE_MODELS[name]})")
        else:
            parts = ""
        lines.append(
            f"  {name:9s} V={data.num_face_vertices} face vertices ({data.num_vertices} with head), "
            f"{data.id_basis.shape[2]} identity and {data.exp_basis.shape[2]} expression modes, "
            f"{len(data.landmark_indices)} landmarks{albedo}, units {data.units}, uv_layout_id {data.uv_layout_id}"
            f"{parts}"
        )
    return "\n".join(lines)


def check(checkpoints_dir: str) -> str:
    lines = [list_models(), "", f"official checkpoints under {Path(checkpoints_dir).resolve()}:"]
    for ckpt, present in checkpoint_status(checkpoints_dir):
        state = "present" if present else "missing"
        effect = ckpt.enables if present else f"without it: {ckpt.without}"
        lines.append(f"  [{state:7s}] {ckpt.relpath:52s} {effect}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m assets", description=__doc__)
    add_logging_args(parser)
    sub = parser.add_subparsers(dest="command", required=True)
    p_install = sub.add_parser("install", help="convert a face model into $UVAPM_HOME")
    p_install.add_argument("model", choices=sorted(FACE_MODELS))
    p_install.add_argument("--from", dest="source", metavar="URL|ARCHIVE|DIR|FILE",
                           help="source archive, folder or .mat (ict: default is the public archive)")
    sub.add_parser("list", help="installed face models")
    p_check = sub.add_parser("check", help="face models and official checkpoints, and what each enables")
    p_check.add_argument("--checkpoints_dir", default="checkpoints")
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        if args.command == "install":
            install(args.model, args.source)
        elif args.command == "list":
            print(list_models())
        else:
            print(check(args.checkpoints_dir))
        return 0

    return run_main(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
