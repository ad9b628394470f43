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
# Two workers: most of a test is waiting on a subprocess or a Ray actor, so two share 2 cores
# well (three were slower on CI's 2 cores: 920 s against 888 s, each worker paying its own Ray
# and plugin install). -n 0 runs them in this process, e.g. under a debugger.
exec .venv/bin/python -m pytest -q -n 2 --dist worksteal "$@"
