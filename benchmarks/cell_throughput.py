"""Training throughput of each cell in results stores: images per second while the clients
trained (``client_train_examples / exchange_s``: the rounds' exchanges, training and messages)
and over the whole cell (``train_examples / wall_s``: pre-training, evaluation and the engine's
start included). A cell's steps per second are these divided by its batch size (shown).

    .venv/bin/python benchmarks/cell_throughput.py /tmp/gpu-out/*/results.sqlite

``scripts/gpu_session.sh`` writes it into its summary, beside each run's GPU utilisation.
"""

from __future__ import annotations

import sys
from pathlib import Path

from fedfuse.results.store import ResultStore

COLUMNS = ("suite", "label", "seed", "status", "batch", "train_img", "exchange_s", "img_per_s_train",
           "wall_s", "img_per_s_cell")


def ratio(a, b) -> str:
    return f"{a / b:.1f}" if a and b else "-"


def row(record: dict) -> tuple:
    m = record["metrics"]
    return (record["suite"], record["label"], record["seed"], record["status"],
            record["config"].get("batch_size", "-"), m.get("train_examples", "-"),
            f"{m['exchange_s']:.1f}" if "exchange_s" in m else "-",
            ratio(m.get("client_train_examples"), m.get("exchange_s")),
            f"{m['wall_s']:.1f}" if "wall_s" in m else "-",
            ratio(m.get("train_examples"), m.get("wall_s")))


def main(paths: list[str]) -> None:
    print("\t".join(COLUMNS))
    for path in paths:
        for record in ResultStore(Path(path), readonly=True).records():
            print("\t".join(str(v) for v in row(record)))


if __name__ == "__main__":
    main(sys.argv[1:])
