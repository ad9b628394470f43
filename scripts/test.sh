#!/usr/bin/env bash
# Set up (first time only) and run the test suite. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The leaderboard page is tested in a real headless browser: Debian's chromium.
if ! command -v chromium >/dev/null; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get install -y -q chromium >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q chromium >/dev/null; }
fi
# One worker more than cores (at most 8): a test spends part of its time waiting on a subprocess,
# Ray or a poll, which a third worker fills on 2 cores (test_reliability + test_participation:
# 188 s with 3 workers, 208 s with 2, on a quiet 2-core machine). -n 0 runs them in this process,
# e.g. under a debugger.
WORKERS=$(( $(nproc) + 1 )); [ "$WORKERS" -gt 8 ] && WORKERS=8
exec .venv/bin/python -m pytest -q -n "$WORKERS" --dist worksteal "$@"
