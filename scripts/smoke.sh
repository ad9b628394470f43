#!/usr/bin/env bash
# Set up (first time only) and run the embedded default: track-edge-quick, every built-in
# protocol on the benchmark's task at a budget of minutes, then its leaderboard.
# Extra arguments go to `fedfuse run` (e.g. --out DIR, --rerun).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
out=fedfuse-out
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do [ "${args[i]}" = "--out" ] && out=${args[i + 1]}; done
.venv/bin/fedfuse run track-edge-quick "$@"
.venv/bin/fedfuse leaderboard --out "$out"
echo
echo "track-edge-quick: one seed at a budget of minutes, so this ranking is indicative only."
echo "The benchmark is track-edge (5 seeds, 4,000 steps of 32 per entry): docs/tracks.md; its"
echo "committed results: .venv/bin/fedfuse leaderboard --out runs/track-edge"
