#!/usr/bin/env bash
# track-edge seed by seed (every entry of seed 0 first, then seed 1, ...): a run cut short still
# ranks every entry, on fewer seeds. Resumable: cells already ok are skipped.
cd "$(dirname "$0")/.."
for seed in 0 1 2 3 4; do
  .venv/bin/fedfuse run track-edge --only "*seed$seed" --out runs/track-edge
done
