"""Render a reconstructed face from several viewpoints.

    python render_3d_face.py --albedo_map OUT/face/uv_albedo.png --output_path renders/ \\
        [--coeffs OUT/face/coeffs.pt | --mesh OUT/face/mesh.obj] [--parts_map OUT/face/uv_eyes_mouth.png] \\
        [--views=-60,-30,0,30,60] \\
        [--light frontal|studio|coeffs] [--shading lit|albedo|normals] [--resolution 512] \\
        [--turntable gif|mp4] [--device cpu]

Without ``--albedo_map``, the mean albedo of the UV albedo model is used
(``--uvapm FILE``, default ``checkpoints/default/uvapm_<face_model>.npz``).
The shape is, by priority, ``--mesh`` (any OBJ with texture coordinates in
the face model's UV layout), ``--coeffs`` (a ``coeffs.pt`` of a fit), or the
face model's mean shape; ``--light coeffs`` uses the SH lighting fitted to
the photo (needs ``--coeffs``). Writes ``view_<yaw>.png`` per view (RGBA),
``contact_sheet.png`` and, with ``--turntable``, ``turntable.gif`` (or
``.mp4``, which needs ``imageio-ffmpeg``). A bad input file is a one-line
error naming it (exit code 2). Settings: ``configs/render.yaml`` (schema
:class:`fitting.config.RenderConfig`); the work is :mod:`fitting.views`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fitting.config import RenderConfig
from models.config import LIGHT_PRESETS, SHADING_MODES
from utils.cli import add_logging_args, default_help, run_main, setup_logging
from utils.config import add_config_args, config_from_args
from utils.errors import ToolkitError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "render.yaml"


def build_parser() -> argparse.ArgumentParser:
    defaults = RenderConfig()
    parser = argparse.ArgumentParser(prog="render_3d_face.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="example override: --set turntable_frames=72")
    parser.add_argument("--albedo_map", help="UV albedo PNG/JPG (square, the face model's layout); default: the mean "
                        "albedo of the UV albedo model")
    parser.add_argument("--uvapm", help="UV albedo model for the mean albedo (default: "
                        "checkpoints/default/uvapm_<face_model>.npz)")
    parser.add_argument("--output_path", required=True, help="output folder")
    parser.add_argument("--parts_map", help="texture of the eyeballs, teeth and sockets (uv_eyes_mouth.png of a fit; "
                        "default: the one beside --albedo_map, else the default eye colours)")
    parser.add_argument("--mesh", help="OBJ with texture coordinates (e.g. mesh.obj of a reconstruction)")
    parser.add_argument("--coeffs", help="coeffs.pt of a reconstruction (shape and, with --light coeffs, lighting)")
    parser.add_argument("--face_model", help=default_help("installed face model", defaults.face_model))
    parser.add_argument("--views", help=default_help("comma-separated yaw angles in degrees, written --views=-60,0,60",
                                                     [f"{v:g}" for v in defaults.views]))
    parser.add_argument("--pitch", type=float, help=default_help("camera pitch in degrees", defaults.pitch))
    parser.add_argument("--light", help=default_help(f"{', '.join(LIGHT_PRESETS)} or coeffs", defaults.light))
    parser.add_argument("--shading", choices=SHADING_MODES, help=default_help("what to draw", defaults.shading))
    parser.add_argument("--resolution", type=int, help=default_help("image side in pixels", defaults.resolution))
    parser.add_argument("--turntable", choices=("gif", "mp4"), help="also write a 360-degree turntable")
    parser.add_argument("--device", help=default_help("cpu, cuda or auto", defaults.device))
    add_config_args(parser, str(DEFAULT_CONFIG), "turntable_frames=72")
    add_logging_args(parser)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, args.quiet)

    def run() -> int:
        if args.views is not None:
            try:
                args.views = [float(v) for v in args.views.split(",") if v.strip()]
            except ValueError:
                raise ToolkitError(f"--views {args.views!r}: expected numbers like -60,0,60") from None
        flags = {k: k for k in ("face_model", "views", "pitch", "light", "shading", "resolution", "turntable",
                                "device")}
        config = config_from_args(RenderConfig, args, flags)
        from fitting.views import render

        render(config, args.albedo_map and Path(args.albedo_map), Path(args.output_path),
               args.mesh and Path(args.mesh), args.coeffs and Path(args.coeffs), args.uvapm and Path(args.uvapm),
               progress=not args.quiet, parts_path=args.parts_map and Path(args.parts_map))
        return 0

    return run_main(run, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
