#!/usr/bin/env bash
# Harness benchmarks (pytest-benchmark) at full size, timed, with the ratios printed. Run on a quiet machine.
# (The test suite runs the same benchmarks once each at tiny sizes, untimed: they cannot rot.)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export FEDFUSE_BENCH_FULL=1
exec .venv/bin/python -m pytest -q benchmarks/ -p no:cacheprovider --benchmark-enable --benchmark-columns=min,median,mean,stddev,rounds "$@"
