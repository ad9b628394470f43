#!/usr/bin/env bash
# The GPU checks docs/quality.md reports, as one script for one lent card: the `gpu` tests and
# learning curves of Fashion-MNIST 28x28 (the -gpu tiers' data), several at once (each is bound
# by its host process, not by the card). Results go to $OUT (default /tmp/gpu-out):
#   OUT=/tmp/gpu-out bash scripts/gpu_checks.sh
#   STEP_TIMES=1 ... also times each preset's step (benchmarks/step_times.py, fp32 and bf16)
# On a bare machine without the venv, scripts/gpu_env.sh installs what .gpu/ carries. The -gpu
# suites' quick tiers run through scripts/gpu_quick.sh. LIMIT (seconds, default 500) stops the
# curves; each checkpoint is kept as it is measured ($OUT/curves.tgz, replaced every 20 s).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}; WORK=/tmp/gpu-work; LIMIT=${LIMIT:-500}
mkdir -p "$OUT" "$WORK"
source scripts/gpu_env.sh
nvidia-smi -L; $PY -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"

snapshot() { tar czf "$OUT/.curves.tgz" -C "$WORK" . 2>/dev/null && mv "$OUT/.curves.tgz" "$OUT/curves.tgz"; }

# The curves, one line each: dataset, preset, checkpoints, then learning_curves.py's options.
# The recipe of the -gpu candidates: T = 1,000, batch 128, EMA 0.999, a 500-step warm-up.
GPU_RECIPE="--timesteps 1000 --batch-size 128 --warmup 500 --ema 0.999"
CURVES=${CURVES:-"fashion-mnist large 1500,3000,5000,8000 --lr 5e-4 $GPU_RECIPE
fashion-mnist wide 1500,3000,5000,8000 --lr 1e-3 $GPU_RECIPE
fashion-mnist base 1500,3000,6000,10000 --lr 1e-3 $GPU_RECIPE"}

echo "== curves, in parallel ($SECONDS s)"
i=0
while read -r data model steps opts; do
  i=$((i + 1))
  OMP_NUM_THREADS=4 timeout "$LIMIT" $PY scripts/learning_curves.py "$data" --model "$model" --steps "$steps" \
    --accelerator cuda $opts --records "$WORK/curves.jsonl" > "$WORK/curve-$i.log" 2>&1 &
done <<< "$CURVES"

echo "== gpu tests ($SECONDS s)"
$PY -m pytest -m gpu -s -q -p no:cacheprovider tests/unit/test_toolkit.py > "$OUT/pytest.log" 2>&1
tail -3 "$OUT/pytest.log"
if [ "${STEP_TIMES:-0}" = 1 ]; then
  $PY benchmarks/step_times.py --accelerator cuda --steps 100 --json "$OUT/step_times.jsonl"
fi

while [ -n "$(jobs -rp)" ]; do snapshot; sleep 20; done
snapshot
tail -n 3 "$WORK"/curve-*.log
echo "== done ($SECONDS s)"
