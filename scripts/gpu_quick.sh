#!/usr/bin/env bash
# The -gpu-quick tiers end to end on one lent card, through Flower's deployment engine, which
# needs no Ray (Flower's simulation does, and Ray is too large to carry to a lent card). For each
# tier, `fedfuse deploy local` starts a SuperLink and one SuperNode, with fedfuse's warm executor,
# per client on this machine; `fedfuse run TIER --backend deployment` runs the tier on it; then the
# deployment stops. Each tier's results store and log go to $OUT (default /tmp/gpu-out), and
# $OUT/timings.tsv gets a line per tier: tier, exit code, seconds to start the deployment, seconds
# of the run.
#   OUT=/tmp/gpu-out bash scripts/gpu_quick.sh                      # the three tiers
#   OUT=/tmp/gpu-out bash scripts/gpu_quick.sh seed-fedavg-lora-gpu-quick
# SET="rounds=1 samples=16" adds those --set overrides to every run, ARGS more options of `fedfuse
# run` (the CPU test shrinks a tier with SET and runs it with ARGS="--accelerator cpu
# --gpus-per-client 0": tests/e2e/test_deployment.py).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}; mkdir -p "$OUT"
source scripts/gpu_env.sh
# what the tiers import beyond the standard library (fedfuse's dependencies but Ray and wandb)
require_modules torch numpy flwr flwr_datasets diffusers peft transformers opacus numba lightning_fabric pluggy \
  rich psutil prdc sklearn torchmetrics matplotlib httpx cryptography datasets || exit 1
TIERS=${*:-seed-split-diffusion-gpu-quick seed-fedavg-lora-gpu-quick seed-ondemand-quant-gpu-quick}
SETS=(); for s in ${SET:-}; do SETS+=(--set "$s"); done
clients() {  # the tier's clients (after SET): one SuperNode each
  $PY -c "import sys; from fedfuse.bench.suites.parse import load_suite as s; print(s(sys.argv[1], sys.argv[2:]).matrix.clients)" "$@"
}

run_tier() {  # tier: start its deployment, run it there, stop the deployment; the run's exit code
  local tier=$1 dep="$OUT/$1-deploy" start=$SECONDS rc=1 ready
  rm -rf "$dep"
  $PY -m fedfuse.bench.cli deploy local --nodes "$(clients "$tier" ${SET:-})" --insecure --out "$dep" > "$dep.log" 2>&1 &
  local pid=$!
  until grep -q "deployment ready" "$dep.log" 2>/dev/null; do
    if ! kill -0 $pid 2>/dev/null; then echo "$tier: the deployment did not start:"; tail -5 "$dep.log"; return 1; fi
    sleep 1
  done
  ready=$((SECONDS - start))
  local address; address=$($PY -c "import json, sys; print(json.load(open(sys.argv[1]))['address'])" "$dep/deploy.json")
  $PY -m fedfuse.bench.cli run "$tier" --out "$OUT/$tier" --backend deployment --superlink "$address" --insecure "${SETS[@]}" \
    ${ARGS:-} > "$OUT/$tier.log" 2>&1 && rc=0 || rc=$?
  printf '%s\t%s\t%s\t%s\n' "$tier" "$rc" "$ready" "$((SECONDS - start - ready))" | tee -a "$OUT/timings.tsv"
  kill -TERM $pid; wait $pid  # (a script's background job ignores SIGINT)
  return $rc
}

status=0
for tier in $TIERS; do run_tier "$tier" || status=1; done
exit $status
