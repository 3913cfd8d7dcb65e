#!/usr/bin/env bash
# Issue 14's one prepared GPU check (one H200; python3 with torch + transformers only, no network).
# Run from the repository root:  bash bench/gpu_check.sh
# Everything goes to $OUT/ (log = the whole run; one file per stage). Every stage is time-bounded and
# the script carries on when one fails; worst case ~9 min (120 s tests + 300 s bench + 120 s 2:4 rows
# + set-up).
# BENCH_ARGS="--shape tiny --device cpu --seqlen 64 --batches 2 --reps 1 --calib 4" smoke-tests it on a CPU
# (SEMI24_ARGS="--reps 5" shortens the 2:4 rows).
set -o pipefail
OUT=${OUT:-/tmp/gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
export NEURONRANK_CACHE="$OUT/cache"  # nothing of ours is written elsewhere
PY=${PYTHON:-python3}

stage() {  # stage NAME SECONDS COMMAND...: bounded, logged, never stops the script
  local name=$1 secs=$2; shift 2
  echo "=== $name (limit ${secs}s): $*"
  local t0=$SECONDS
  timeout -k 10 "$secs" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=$?
  echo "=== $name: rc=$rc in $((SECONDS - t0)) s$([ $rc -eq 124 ] && echo ' (TIMED OUT)')"
  echo
}

{
  echo "gpu_check $(date -u +%FT%TZ) at $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  stage env 30 bash -c "nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; \
    $PY -c 'import torch, transformers, sys; print(sys.version.split()[0], \"torch\", torch.__version__, \
\"cuda\", torch.version.cuda, \"transformers\", transformers.__version__); \
import importlib.util as u; print({m: bool(u.find_spec(m)) for m in (\"triton\", \"pytest\", \"numpy\", \"pandas\")})'"

  # CUDA tests: pytest where installed (without the repo's pytest.ini addopts: pytest-timeout may be
  # missing), else the file's own runner
  if $PY -c "import pytest" 2>/dev/null; then
    stage tests 120 $PY -m pytest tests/unit/engine/test_cuda.py -q -p no:cacheprovider -o addopts="" -rs
  else
    stage tests 120 $PY tests/unit/engine/test_cuda.py
  fi

  # 7B shape, bf16: plain / statistics / perplexity ratios, top kernels, the pruning rows, the
  # statistics pass with compiled (Triton) kernels, and our layer-wise Wanda baseline last (results
  # stream out, so a timeout there loses nothing before it)
  stage bench7b 300 $PY bench/gpu_llama7b.py --profile --prune --compiled --sequential ${BENCH_ARGS:-}

  # 2:4 semi-structured sparse MLP matmuls at Llama-2-7B shape against dense (cuSPARSELt and CUTLASS;
  # prefill T = 2048 and decode T = 16, 8, 4, 1); on a CPU it prints one "skipped" line
  stage semi24 120 $PY bench/gpu_semi24.py ${SEMI24_ARGS:-}

  echo "=== RESULT lines"
  grep -h "^RESULT" "$OUT"/bench7b.log "$OUT"/semi24.log
  echo "gpu_check done in $SECONDS s"
} 2>&1 | tee "$OUT/log"
