#!/usr/bin/env bash
# Creates ./.venv (or reuses it) and installs jaxdl into it in editable mode, with the extras given
# as arguments (e.g. "dev"). Sourced by run.sh and test.sh.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[setup] creating .venv with $($PYTHON --version)"
    "$PYTHON" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
extras=${1:-}
spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.jaxdl-installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)-${extras:-base}"
if [ ! -f "$stamp" ]; then
    echo "[setup] installing jaxdl ${extras:+with extras $extras} (first run: a few minutes)"
    .venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec"
    touch "$stamp"
fi
