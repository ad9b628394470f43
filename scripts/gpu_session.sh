#!/usr/bin/env bash
# One lent card, one call: what fedfuse measures on a GPU, within LIMIT seconds (default 480),
# each step cut off in time for the next:
#   1. each -gpu-quick tier (TIERS, default all three: 1 seed, 2 rows each) on Flower's
#      deployment engine, each run cut off after QUICK_LIMIT seconds (default 100);
#   2. one model's throughput: each preset's training step, fp32 and bf16-mixed
#      (benchmarks/step_times.py with THROUGHPUT, default 28 px, 50 steps) -> $OUT/step_times.jsonl;
#   3. as much of SUITE (default seed-ondemand-quant-gpu) as the time left allows, resuming
#      the store committed at STORE (default runs/SUITE), cut off as Ctrl-C would: the cells it
#      finished stay, at most the running one is lost;
#   4. $OUT/summary.tsv: each run's exit code (124: cut off), seconds and mean GPU utilisation
#      (timings.tsv), then each cell's training throughput (benchmarks/cell_throughput.py).
# Bring $OUT back; commit $OUT/SUITE/results.sqlite as runs/SUITE (the next card resumes it) and
# the figures. Runs and options of each step: scripts/gpu_quick.sh (SET, ARGS).
#   OUT=/tmp/gpu-out bash scripts/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_quick.sh
LIMIT=${LIMIT:-480}; QUICK_LIMIT=${QUICK_LIMIT:-100}; SUITE=${SUITE:-seed-ondemand-quant-gpu}
STORE=${STORE:-runs/$SUITE}; THROUGHPUT=${THROUGHPUT:---accelerator cuda --side 28 --steps 50}
RESERVE=15  # seconds kept for the summary
left() { echo $((LIMIT - RESERVE - SECONDS)); }
at_most() { echo $(( $1 < $(left) ? $1 : $(left) )); }

nvidia-smi -L 2>/dev/null
if [ -f "$STORE/results.sqlite" ] && [ ! -e "$OUT/$SUITE" ]; then  # the suite resumes where the last card left it
  mkdir -p "$OUT/$SUITE" && cp "$STORE/results.sqlite" "$OUT/$SUITE/"
fi
for tier in ${TIERS:-$QUICK_TIERS}; do
  if [ "$(left)" -lt 30 ]; then echo "skipped (no time left): $tier"; continue; fi
  TIER_LIMIT=$(at_most "$QUICK_LIMIT") run_tier "$tier"
done

echo "== one model's throughput ($SECONDS s)"
for precision in 32-true bf16-mixed; do
  if [ "$(left)" -lt 10 ]; then echo "skipped (no time left): $precision"; continue; fi
  timeout -s INT "$(at_most 60)" $PY benchmarks/step_times.py $THROUGHPUT --precision "$precision" \
    --json "$OUT/step_times.jsonl" > "$OUT/step_times.log" 2>&1 || echo "step times ($precision): exit code $?"
done

echo "== $SUITE ($SECONDS s)"
if [ "$(left)" -ge 60 ]; then TIER_LIMIT=$(left) run_tier "$SUITE"; else echo "skipped (no time left): $SUITE"; fi

{ printf 'run\texit_code\tdeploy_s\trun_s\tgpu_util_pct\n'; cat "$OUT/timings.tsv"; echo; $PY benchmarks/cell_throughput.py "$OUT"/*/results.sqlite; } > "$OUT/summary.tsv" 2>&1
cat "$OUT/summary.tsv"
echo "== done ($SECONDS s)"
