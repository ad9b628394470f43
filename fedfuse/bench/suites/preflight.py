"""Checks that need the data, run for every cell before the first one starts: a suite that
cannot be split as asked stops with one line (exit 2) and writes nothing, instead of failing
cell after cell, or after hours of training. The datasets and partitions built here are the
ones the cells then use (both are cached per process)."""

from __future__ import annotations

from fedfuse.bench.suites.cells import CellSpec
from fedfuse.plugins.config import ConfigError


def preflight(cells: list[CellSpec]) -> None:
    by_key = {c.partition_key(): c for c in cells}
    for cell in by_key.values():
        check_partition(cell)


def check_partition(cell: CellSpec) -> None:
    from fedfuse.bench.suites.cells import cell_partitions
    from fedfuse.datasets.loading import load

    where = f"{cell.dataset_name} split by {cell.partition_name} over {cell.clients} clients (seed {cell.seed})"
    images = len(load(cell.dataset, cell.dataset_args).private)  # a DatasetError is already one line
    if cell.clients > images:
        raise ConfigError(f"{where}: more clients than its {images} training images; use fewer clients")
    try:
        parts = cell_partitions(cell)
    except (ValueError, IndexError, KeyError, AssertionError) as err:
        raise ConfigError(f"{where}: cannot be built: {type(err).__name__}: {err}") from None
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ConfigError(f"{where}: client(s) {', '.join(map(str, empty[:5]))}{'…' if len(empty) > 5 else ''} get no "
                          "images; use fewer clients or another partitioner")
