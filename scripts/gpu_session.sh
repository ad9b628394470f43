#!/usr/bin/env bash
# One lent card, one call: what fedfuse measures on a GPU, within LIMIT seconds (default 480),
# cheapest and surest first, each step cut off in time for the next:
#   0. the `gpu` tests (the step never waits for the card; compiled training, cudagraphs and
#      inductor, trains what eager trains or is refused), at most 90 s -> $OUT/gpu_tests.log
#      (a failing test makes the session exit 1);
#   1. one model's throughput: each preset's training step at 28 px, batch 128, fp32 and
#      bf16-mixed, then the -gpu tiers' preset (COMPILE_PRESET, base) compiled in bf16 with each
#      of COMPILERS (default inductor; checked against eager first, a refusal is recorded), each
#      run at most 60 s (benchmarks/step_times.py with THROUGHPUT) -> $OUT/step_times.jsonl.
#      Steps 0-1 take up to 4.5 of the 8 minutes: the quick tiers get the rest;
#   2. the -gpu-quick tiers (TIERS, default all three: 1 seed, 2 rows each) on Flower's
#      deployment engine, each run cut off after QUICK_LIMIT seconds (default 200) or at the
#      session's end: a cut-off keeps the cells that finished (the first row's, as a rule);
#   3. SUITE (default seed-ondemand-quant-gpu) with the time left, resuming the store committed
#      at STORE (default runs/SUITE), cut off as Ctrl-C would (at most the running cell is lost).
#      A -gpu cell is estimated at many minutes: give it the whole session (TIERS=none) on a
#      longer lease, or it is skipped;
#   4. $OUT/summary.tsv: each run's exit code (124: cut off), seconds and mean GPU utilisation
#      (timings.tsv), then each cell's training throughput (benchmarks/cell_throughput.py).
# Bring $OUT back; commit $OUT/SUITE/results.sqlite as runs/SUITE (the next card resumes it) and
# the figures. The runs take scripts/gpu_quick.sh's options (SET, ARGS). Exit code 1 where a run
# failed other than by its cut-off, or a deployment did not start.
#   OUT=/tmp/gpu-out bash scripts/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/gpu_quick.sh
LIMIT=${LIMIT:-480}; QUICK_LIMIT=${QUICK_LIMIT:-200}; SUITE=${SUITE:-seed-ondemand-quant-gpu}
STORE=${STORE:-runs/$SUITE}; THROUGHPUT=${THROUGHPUT:---accelerator cuda --side 28 --batch-size 128 --steps 50}
END=$((LIMIT - 15))  # seconds kept for the summary
left() { echo $((END - SECONDS)); }
status=0
ran() {  # a run's exit code: 0 and 124 (cut off) are what a session expects
  case $1 in 0|124) ;; *) status=1 ;; esac
}

nvidia-smi -L 2>/dev/null
if [ -f "$STORE/results.sqlite" ] && [ ! -e "$OUT/$SUITE" ]; then  # the suite resumes where the last card left it
  mkdir -p "$OUT/$SUITE" && cp "$STORE/results.sqlite" "$OUT/$SUITE/"
fi

echo "== the gpu tests ($SECONDS s)"
timeout -s INT 90 $PY -m pytest -m gpu -v -p no:cacheprovider tests/unit/test_toolkit.py \
  tests/unit/test_compiling.py > "$OUT/gpu_tests.log" 2>&1; code=$?; ran $code
echo "gpu tests: exit $code"; tail -3 "$OUT/gpu_tests.log"

echo "== one model's throughput ($SECONDS s)"
step_times() {  # one step_times.py run, at most 60 s
  [ "$(left)" -ge 10 ] || { echo "skipped (no time left): $*"; return; }
  timeout -s INT "$(( $(left) < 60 ? $(left) : 60 ))" $PY benchmarks/step_times.py $THROUGHPUT "$@" \
    --json "$OUT/step_times.jsonl" >> "$OUT/step_times.log" 2>&1; ran $?
}
for precision in 32-true bf16-mixed; do step_times --precision "$precision"; done
for backend in ${COMPILERS:-inductor}; do
  step_times --precision bf16-mixed --preset "${COMPILE_PRESET:-base}" --compile "$backend"
done

for tier in ${TIERS:-$QUICK_TIERS}; do
  [ "$tier" = none ] && continue
  [ "$(left)" -ge 30 ] || { echo "skipped (no time left): $tier"; continue; }
  TIER_LIMIT=$QUICK_LIMIT TIER_UNTIL=$END run_tier "$tier"; ran $?
done

echo "== $SUITE ($SECONDS s)"
if [ "$(left)" -ge 60 ]; then TIER_LIMIT=0 TIER_UNTIL=$END run_tier "$SUITE"; ran $?; else echo "skipped (no time left): $SUITE"; fi

shopt -s nullglob  # no store yet: the throughput table is its header
{ printf 'run\texit_code\tdeploy_s\trun_s\tgpu_util_pct\n'; cat "$OUT/timings.tsv"; echo
  $PY benchmarks/cell_throughput.py "$OUT"/*/results.sqlite; } > "$OUT/summary.tsv" 2>&1
cat "$OUT/summary.tsv"
echo "== done ($SECONDS s)"
exit $status
