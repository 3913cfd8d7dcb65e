#!/usr/bin/env bash
# Start NeuronRank Studio on the embedded model and corpora (http://localhost:8501).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/streamlit run app.py "$@"
