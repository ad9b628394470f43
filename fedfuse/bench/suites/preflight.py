"""Checks that need the data, run for every cell before the first one starts: a suite that
cannot be split as asked stops with one line (exit 2) and writes nothing, instead of failing
cell after cell, or after hours of training. The datasets and partitions built here are the
ones the cells then use (both are cached per process)."""

from __future__ import annotations

import warnings

from fedfuse.bench.suites.cells import CellSpec
from fedfuse.plugins.config import ConfigError


def preflight(cells: list[CellSpec]) -> None:
    by_key = {c.partition_key(): c for c in cells}
    for cell in by_key.values():
        check_partition(cell)
        check_sizes(cell)


#: images held at once by scoring, at most (generated, real, references' draws): a rough factor
IMAGE_COPIES = 4


def check_sizes(cell: CellSpec) -> None:
    """A sample count whose images alone would not fit this machine's memory is refused, with
    the estimate, before anything runs (a typo such as samples = 1000000000000 would otherwise
    run until memory ran out)."""
    import math

    import psutil

    from fedfuse.datasets.loading import load

    shape = load(cell.dataset, cell.dataset_args).image_shape
    ev = cell.evaluation
    n = max(ev.get("samples", 0), ev.get("target_samples", 0), ev.get("mia_samples", 0))
    need, have = IMAGE_COPIES * n * math.prod(shape) * 4, psutil.virtual_memory().total
    if need > have:
        raise ConfigError(f"{cell.name}: {n:,} samples of {'x'.join(map(str, shape))} images need about "
                          f"{need / 2**30:,.0f} GiB to score; this machine has {have / 2**30:,.0f} GiB")


def check_partition(cell: CellSpec) -> None:
    from fedfuse.bench.suites.cells import cell_partitions
    from fedfuse.datasets.loading import load

    where = f"{cell.dataset_name} split by {cell.partition_name} over {cell.clients} clients (seed {cell.seed})"
    images = len(load(cell.dataset, cell.dataset_args).private)  # a DatasetError is already one line
    if cell.clients > images:
        raise ConfigError(f"{where}: more clients than its {images} training images; use fewer clients")
    try:
        with warnings.catch_warnings():  # a partitioner's retries warn at length before it gives up
            warnings.simplefilter("ignore", UserWarning)
            cell_partitions(cell)  # raises where the partitioner cannot split the data (an empty client too)
    except (ValueError, IndexError, KeyError, AssertionError) as err:
        raise ConfigError(f"{where}: cannot be built: {type(err).__name__}: {err}") from None
