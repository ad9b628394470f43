#!/usr/bin/env bash
# Harness benchmarks (pytest-benchmark); not part of the test suite. Run on a quiet machine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q benchmarks/ -p no:cacheprovider --benchmark-columns=min,median,mean,stddev,rounds "$@"
