#!/usr/bin/env bash
# The -gpu-quick tiers end to end on one lent card, through Flower's deployment engine, which
# needs no Ray (Flower's simulation does, and Ray is too large to carry to a lent card). For each
# tier, `fedfuse deploy local` starts a SuperLink and one SuperNode, with fedfuse's warm executor,
# per client on this machine; `fedfuse run TIER --backend deployment` runs the tier on it; then the
# deployment stops. Each tier's results store and log go to $OUT (default /tmp/gpu-out), and
# $OUT/timings.tsv gets a line per tier: tier, exit code, seconds to start the deployment, seconds
# of the run, the card's mean utilisation in % while it ran ("-" without nvidia-smi; each
# second's sample in $OUT/TIER.gpu.csv).
#   OUT=/tmp/gpu-out bash scripts/gpu_quick.sh                      # the three tiers
#   OUT=/tmp/gpu-out bash scripts/gpu_quick.sh seed-fedavg-lora-gpu-quick
# SET="rounds=1 samples=16" adds those --set overrides to every run, ARGS more options of `fedfuse
# run` (the CPU test shrinks a tier with SET and runs it with ARGS="--accelerator cpu
# --gpus-per-client 0": tests/e2e/test_deployment.py). TIER_LIMIT (seconds) interrupts a run as
# Ctrl-C would (exit code 124): its finished cells stay in the store and a rerun resumes it;
# TIER_UNTIL (a value of bash's $SECONDS) does the same at that moment, whatever the deployment's
# start took. A deployment not ready in READY_LIMIT seconds (120) is given up ("no-deployment").
# scripts/gpu_session.sh sources this file for run_tier.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
source scripts/gpu_env.sh
# what the tiers import beyond the standard library (fedfuse's dependencies but Ray and wandb)
require_modules torch numpy flwr flwr_datasets diffusers peft transformers opacus numba lightning_fabric pluggy \
  rich psutil prdc sklearn torchmetrics matplotlib httpx cryptography datasets || exit 1
QUICK_TIERS="seed-split-diffusion-gpu-quick seed-fedavg-lora-gpu-quick seed-ondemand-quant-gpu-quick"
SETS=(); for s in ${SET:-}; do SETS+=(--set "$s"); done
clients() {  # the tier's clients (after SET): one SuperNode each
  $PY -c "import sys; from fedfuse.bench.suites.parse import load_suite as s; print(s(sys.argv[1], sys.argv[2:]).matrix.clients)" "$@"
}

utilisation() {  # file: the card's utilisation (%) and memory (MiB) each second, until killed
  if command -v nvidia-smi >/dev/null; then
    exec nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -l 1 > "$1"
  fi
}

mean_utilisation() {  # file: the mean of its first column's numbers ("[N/A]" under MIG is none), or "-"
  awk -F', *' '$1 ~ /^[0-9.]+$/ {s += $1; n++} END {if (n) printf "%.0f", s / n; else printf "-"}' "$1" 2>/dev/null \
    || printf -- "-"
}

run_limit() {  # seconds the run may take: TIER_LIMIT, or less where TIER_UNTIL comes first (0: no limit)
  local limit=${TIER_LIMIT:-0}
  if [ -n "${TIER_UNTIL:-}" ]; then
    local left=$((TIER_UNTIL - SECONDS)); [ "$left" -lt 1 ] && left=1
    if [ "$limit" -eq 0 ] || [ "$left" -lt "$limit" ]; then limit=$left; fi
  fi
  echo "$limit"
}

timing() {  # tier, exit code, seconds to deploy, seconds of the run, utilisation: a line of timings.tsv
  printf '%s\t%s\t%s\t%s\t%s\n' "$@" | tee -a "$OUT/timings.tsv"
}

run_tier() {  # tier: start its deployment, run it there (run_limit), stop the deployment; the run's exit code
  local tier=$1 dep="$OUT/$1-deploy" start=$SECONDS rc=1 ready address smi
  rm -rf "$dep" "$dep.log"  # a previous run's log says "deployment ready" too
  $PY -m fedfuse.bench.cli deploy local --nodes "$(clients "$tier" ${SET:-})" --insecure --out "$dep" > "$dep.log" 2>&1 &
  local pid=$!
  until grep -q "deployment ready" "$dep.log" 2>/dev/null; do
    if ! kill -0 $pid 2>/dev/null || [ $((SECONDS - start)) -ge "${READY_LIMIT:-120}" ]; then
      echo "$tier: the deployment did not start:"; tail -5 "$dep.log"
      kill -TERM $pid 2>/dev/null; wait $pid 2>/dev/null
      timing "$tier" no-deployment "$((SECONDS - start))" 0 -; return 1
    fi
    sleep 1
  done
  ready=$((SECONDS - start))
  address=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['address'])" "$dep/deploy.json")
  : > "$OUT/$tier.gpu.csv"; utilisation "$OUT/$tier.gpu.csv" & smi=$!
  timeout -s INT -k 20 "$(run_limit)" $PY -m fedfuse.bench.cli run "$tier" --out "$OUT/$tier" --backend deployment \
    --superlink "$address" --insecure "${SETS[@]}" ${ARGS:-} > "$OUT/$tier.log" 2>&1 && rc=0 || rc=$?
  kill $smi 2>/dev/null; wait $smi 2>/dev/null
  timing "$tier" "$rc" "$ready" "$((SECONDS - start - ready))" "$(mean_utilisation "$OUT/$tier.gpu.csv")"
  kill -TERM $pid; wait $pid  # (a script's background job ignores SIGINT)
  return $rc
}

# a deployment or sampler left running when the script is stopped from outside
trap 'kill $(jobs -p) 2>/dev/null' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  status=0
  for tier in ${*:-$QUICK_TIERS}; do run_tier "$tier" || status=1; done
  exit $status
fi
