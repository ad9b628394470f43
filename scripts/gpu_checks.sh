#!/usr/bin/env bash
# The GPU checks docs/quality.md reports, as one script: the `gpu` tests, each preset's step
# time through the shared loop (fp32 and bf16), and learning curves of Fashion-MNIST 28x28 (the
# -gpu tiers' data) on the card. Results go to $OUT (default /tmp/gpu-out):
#   OUT=/tmp/gpu-out bash scripts/gpu_checks.sh
# On a bare machine without the venv, a folder .gpu/ may carry wheels (.gpu/whl: fedfuse and what
# the image lacks: on the lent H200 that was diffusers, lightning-fabric, importlib_metadata and
# prdc) and Fashion-MNIST's IDX files (.gpu/fashion); they are installed first. Flower's simulation
# (Ray) cannot travel that way, so the -gpu suites themselves are not run here.
# DEADLINE (seconds, default 420) skips the curves that would start after it.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}; WORK=/tmp/gpu-work; DEADLINE=${DEADLINE:-420}
mkdir -p "$OUT" "$WORK"
PY=.venv/bin/python
if [ -d .gpu/whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site PY=python3
  mkdir -p /usr/share/datasets/fashion-mnist && cp -n .gpu/fashion/* /usr/share/datasets/fashion-mnist/
fi
nvidia-smi -L; $PY -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"

echo "== gpu tests ($SECONDS s)"
$PY -m pytest -m gpu -s -q -p no:cacheprovider tests/test_toolkit.py 2>&1 | tee "$OUT/pytest.log"

echo "== step times ($SECONDS s)"
$PY scripts/step_times.py --accelerator cuda --steps 100 --json "$OUT/step_times.jsonl"
$PY scripts/step_times.py --accelerator cuda --precision bf16-mixed --side 28 --steps 100 --json "$OUT/step_times.jsonl"

curve() {  # dataset model steps: one learning curve on the card, kept in $OUT after each
  if [ "$SECONDS" -gt "$DEADLINE" ]; then echo "skipped (deadline): $*"; return; fi
  echo "== curve $* ($SECONDS s)"
  $PY scripts/learning_curves.py "$1" --model "$2" --steps "$3" --accelerator cuda --records "$WORK/curves.jsonl"
  cp "$WORK/curves.jsonl" "$OUT/" && tar czf "$OUT/grids.tgz" -C "$WORK" grids
}
curve fashion-mnist base 1000,2000,4000,6000
curve fashion-mnist small 1000,2000,4000,6000

echo "== done ($SECONDS s)"
