"""What a stored record says of itself: the data it ran on and the set-up its seeds must share.
One definition each, used by the suites (to name cells) and the leaderboard (to group rows)."""

from __future__ import annotations

from fedfuse.toolkit.seeding import stable_hash


def with_args(name: str, args: dict) -> str:
    """``dirichlet(alpha=0.3,min_partition_size=10)``; just the name without arguments."""
    text = ",".join(f"{k}={v}" for k, v in sorted(args.items()))
    return f"{name}({text})" if text else name


def data_of(record: dict) -> str:
    """A cell's data as a row names it: dataset with its arguments (two sizes of one dataset
    are two rows) and partitioner with its own."""
    return f"{with_args(record['dataset'], record.get('dataset_args') or {})}/{record['partitioner']}"


def setup_of(record: dict) -> str:
    """What a row's cells must share besides their data, profile and seed: the resolved config
    (its hash) and the matrix's rounds, clients and evaluation; a short hash of them."""
    return stable_hash([record.get("config_hash"), record.get("rounds_planned"), record.get("clients"),
                        record.get("evaluation")], length=8)
