#!/usr/bin/env bash
# Reconstruct 3D faces with UV albedo maps from a folder of photos.
#
#   bash run_rgb_fitting.sh --input_dir PHOTOS [--output_dir OUT] [options]
#
# Runs the "process data" step and the three fitting stages (shape, coarse
# UVAPM albedo, detail) for every face; see `bash run_rgb_fitting.sh --help`
# for every option. Outputs go to <output_dir>/<name>/ with a gallery in
# <output_dir>/index.html; an existing output folder is never deleted and
# finished faces are skipped, so an interrupted run can simply be restarted.
# Exit code: 0 all faces done, 1 some image or face failed, 2 usage error.
#
# Several processes (GPUs or CPU workers):
#   torchrun --nproc_per_node 2 -m fitting.run --input_dir PHOTOS [options]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"; else python="python3"; fi
fi
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
export UVAPM_PROG="${UVAPM_PROG:-bash run_rgb_fitting.sh}"
exec "$python" -m fitting.run "$@"
