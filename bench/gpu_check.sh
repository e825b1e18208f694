#!/usr/bin/env bash
# GPU check for caffelike (issue 8): training (eager, AMP bf16/fp16, torch.compile) and deploy
# inference on CUDA against the hand-written PyTorch baseline, plus the DDP scaling note.
# Installs nothing; needs the repository's Python environment with a CUDA build of torch.
# Budget: under 4 minutes (--quick: two training nets and ResNet-50 inference).
#
#   bash bench/gpu_check.sh [--full]      # writes bench/gpu_results.md
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
if [ -z "${PYTHON:-}" ] && [ -x .venv/bin/python ]; then PY=.venv/bin/python; fi  # make install's
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
QUICK=--quick
[ "${1:-}" = "--full" ] && QUICK=
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "devices", torch.cuda.device_count())
assert torch.cuda.is_available(), "no CUDA device visible to torch"
PY
# correctness first (fast): compiled vs eager and AMP switches on the tiny net, on this machine's CPU
timeout 90 "$PY" -m pytest -q tests/perf/test_accel.py -x -p no:cacheprovider || echo "accel tests failed (see above)"
timeout 150 "$PY" bench/gpu_bench.py $QUICK --markdown bench/gpu_results.md
