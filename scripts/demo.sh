#!/usr/bin/env bash
# The main job: install xaijax, then explain a bundled real photo with the pretrained default
# model (EfficientNet-Lite0, ImageNet) and write the overlay as a PNG.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. .venv/bin/activate
out=${1:-chelsea_gradcam.png}
xaijax explain chelsea --model efficientnet_lite0 --method "${METHOD:-gradcam}" --out "$out"
