#!/usr/bin/env bash
# The three reference-tier seed studies, one after another (hours on 2 CPU cores), then each
# protocol README's measured section. Resumable: run it again and finished cells are skipped.
#   nohup bash scripts/seed_suites.sh /work/runs > /work/runs/seed.log 2>&1 &
# The output folder defaults to ../runs, outside the checkout, so a fresh checkout keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-../runs}
bash scripts/setup.sh
declare -A STUDY=([seed-ondemand-quant]=ondemand-quant [seed-fedavg-lora]=fedavg-lora [seed-split-diffusion]=split-diffusion)
for suite in seed-ondemand-quant seed-fedavg-lora seed-split-diffusion; do
  start=$(date +%s)
  .venv/bin/fedfuse run "$suite" --out "$OUT/$suite" || true   # a failed cell is recorded; go on
  echo "$suite: $(( $(date +%s) - start )) s of wall time in this call"
  .venv/bin/python scripts/measured_tables.py "${STUDY[$suite]}" "$OUT/$suite"
done
