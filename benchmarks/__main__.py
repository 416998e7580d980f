"""``python -m benchmarks [--quick]``: the benchmarks in turn (landmarks, synthetic truth, real photos, light,
texture asset, several photos of one person, speed).

Each runs in its own process (so its peak memory is its own) and writes
its table to ``benchmarks/results/`` (see its module); the shared options
are passed on to each, and the wall time of each is printed at the end.
Exit code: the largest of the benchmarks' exit codes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = ("landmarks", "synthetic_gt", "real_photos", "light_invariance", "texture_asset", "multi_photo",
              "speed")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="smoke runs (small sizes, stand-in models)")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--uvapm", help="UV albedo model (default: checkpoints/default/uvapm_ict.npz)")
    parser.add_argument("--detail_model", help="detail generator (default: checkpoints/default/detail_ict.pt)")
    parser.add_argument("--quiet", "-q", action="store_true", help="only warnings, errors and the tables")
    args = parser.parse_args(argv)
    names = list(BENCHMARKS) if not args.only else [n.strip() for n in args.only.split(",") if n.strip()]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"--only: unknown benchmarks {unknown}; choose from {', '.join(BENCHMARKS)}")
    forward = [*(["--quick"] if args.quick else []), *(["-q"] if args.quiet else [])]
    if args.device:
        forward += ["--device", args.device]
    for flag in ("uvapm", "detail_model"):  # the benchmarks run in the repository
        if getattr(args, flag):
            forward += [f"--{flag}", str(Path(getattr(args, flag)).resolve())]
    codes, lines = [], []
    for name in names:
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", *forward], cwd=REPO).returncode
        codes.append(code)
        lines.append(f"{name}: {time.perf_counter() - start:.0f} s, exit code {code}")
    print("\n".join(lines))
    return max(codes)


if __name__ == "__main__":
    sys.exit(main())
