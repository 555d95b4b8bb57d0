#!/usr/bin/env bash
# The main job: sets up ./.venv, then trains on the built-in data. Extra arguments go to the command.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/jaxdl train --data digits --model convnet --out runs/quickstart "$@"
