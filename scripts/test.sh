#!/usr/bin/env bash
# Sets up ./.venv with the dev extra, then runs the whole test suite on both cores.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh dev
exec .venv/bin/python -m pytest -n 2 -q "$@"
