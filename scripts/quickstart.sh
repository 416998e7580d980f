#!/usr/bin/env bash
# One command for a fresh machine: create .venv, install the pinned
# requirements and the default ICT-FaceKit face model, write the bundled
# example photo (skimage.data.astronaut(), public domain) and reconstruct it
# with the default models in checkpoints/default/.
#
#   bash scripts/quickstart.sh [ICT_SOURCE]
#
# ICT_SOURCE (optional): the ICT-FaceKit archive or folder. Default:
# ../shared/assets/ict-facekit/ict_facexmodel.tar.xz when present, else the
# public download.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r requirements.txt
.venv/bin/python -m pip install --quiet --no-deps -r requirements-nodeps.txt

source_arg=()
if [ $# -ge 1 ]; then
    source_arg=(--from "$1")
elif [ -f ../shared/assets/ict-facekit/ict_facexmodel.tar.xz ]; then
    source_arg=(--from ../shared/assets/ict-facekit/ict_facexmodel.tar.xz)
fi
.venv/bin/python -m assets install ict "${source_arg[@]}"

mkdir -p examples/astronaut
.venv/bin/python -c "
import skimage.data
from utils.image_io import write_image
write_image('examples/astronaut/astronaut.png', skimage.data.astronaut())
"
bash run_rgb_fitting.sh --input_dir examples/astronaut --output_dir examples/astronaut/outputs
echo "done: open examples/astronaut/outputs/index.html; the textured mesh is examples/astronaut/outputs/astronaut/mesh.obj"
echo "next: source .venv/bin/activate  (then the commands of README.md run as printed)"
