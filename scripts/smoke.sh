#!/usr/bin/env bash
# Set up (first time only) and run the embedded default: the shipped smoke suite.
# Extra arguments go to `fedfuse run` (e.g. --out DIR, --rerun).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/fedfuse run smoke "$@"
