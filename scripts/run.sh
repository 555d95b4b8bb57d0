#!/usr/bin/env bash
# The main job: sets up ./.venv, then sweeps an MLP and a ConvNet on MNIST-1D, 8 seeds each, and
# prints the summary beside the published figures. Extra arguments go to `jaxdl sweep`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/jaxdl sweep --data mnist1d --model mlp,convnet --seeds 8 --steps 3000 \
    --batch-size 100 --lr 2e-3 --chunk-steps 250 --eval-every 1000 --out runs/quickstart "$@"
