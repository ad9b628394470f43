"""Partition a dataset's private training images with flwr-datasets partitioners.

The partitioners see a small table (``idx``, ``label`` and any attributes) rather than the
images, so a partition is a list of indices into the decoded images: clients get views,
not copies. The table is shuffled with the cell's seed first, which makes every partition a
pure function of (dataset, partitioner, args, seed) — also for partitioners without a seed.

Every partitioner also accepts the harness's ``max_per_client`` (``COMMON_ARGS``): applied
here after the partitioner ran, so it caps a plugin's partitioner as well as the built-in ones.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np

from fedfuse.datasets import DatasetError
from fedfuse.files import write_atomic
from fedfuse.plugins.specs import PartitionerSpec

# flwr-datasets and HF datasets are imported inside the builders: listing plugins stays fast.

#: Arguments every partitioner accepts besides its own; 0 = no cap.
COMMON_ARGS = {"max_per_client": 0}


def allowed_args(spec: PartitionerSpec) -> dict:
    return {**spec.args, **COMMON_ARGS}


def with_defaults(spec: PartitionerSpec, args: dict) -> dict:
    """The partitioner's own defaults filled in; a common argument is kept only where it is
    set, so cells that set none keep the ids (and cached partitions) they had before."""
    unset = {k for k, v in args.items() if k in COMMON_ARGS and (type(v), v) == (type(COMMON_ARGS[k]), COMMON_ARGS[k])}
    return {**spec.args, **{k: v for k, v in args.items() if k not in unset}}


def max_per_client(args: dict) -> int:
    cap = args.get("max_per_client", 0)
    if isinstance(cap, bool) or not isinstance(cap, int) or cap < 0:
        raise DatasetError(f"max_per_client must be a whole number >= 0 (0 = no cap), got {cap!r}")
    return cap


def build_iid(num_partitions: int, seed: int):
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=num_partitions)


def build_dirichlet(num_partitions: int, seed: int, alpha: float, min_partition_size: int):
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(num_partitions=num_partitions, partition_by="label", alpha=alpha,
                                min_partition_size=min_partition_size, self_balancing=True, seed=seed)


def build_pathological(num_partitions: int, seed: int, classes_per_client: int):
    from flwr_datasets.partitioner import PathologicalPartitioner

    return PathologicalPartitioner(num_partitions=num_partitions, partition_by="label",
                                   num_classes_per_partition=classes_per_client,
                                   class_assignment_mode="random", seed=seed)


def build_shard(num_partitions: int, seed: int, shards_per_client: int):
    from flwr_datasets.partitioner import ShardPartitioner

    return ShardPartitioner(num_partitions=num_partitions, partition_by="label",
                            num_shards_per_partition=shards_per_client, seed=seed)


def build_size_skew(num_partitions: int, seed: int, growth: str):
    from flwr_datasets import partitioner as p

    kinds = {"linear": p.LinearPartitioner, "square": p.SquarePartitioner, "exponential": p.ExponentialPartitioner}
    if growth not in kinds:
        raise DatasetError(f"size-skew growth must be one of {', '.join(kinds)}, got {growth!r}")
    return kinds[growth](num_partitions=num_partitions)


def build_groups(num_partitions: int, seed: int, by: str):
    """Disjoint groups: client i holds the i-th block of classes (``by="label"``), or the
    images whose attribute ``by`` has its i-th value (as CollaFuse splits CelebA)."""
    from flwr_datasets.partitioner import NaturalIdPartitioner

    return NaturalIdPartitioner(partition_by="group" if by == "label" else by)


def build_attribute_sets(num_partitions: int, seed: int, sets):
    from fedfuse.datasets.attribute_sets import AttributeSetPartitioner

    example = '[["Black_Hair"], ["Blond_Hair", "Wearing_Earrings"]]'
    if not (isinstance(sets, list) and sets and all(
            isinstance(s, list) and s and all(isinstance(a, str) for a in s) for s in sets)):
        raise DatasetError(f"attribute-sets needs sets = {example}: one non-empty list of attribute "
                           f"names per client, got {sets!r}")
    if len(sets) != num_partitions:
        raise DatasetError(f"attribute-sets: {len(sets)} set(s) given for {num_partitions} clients; "
                           "give one set per client")
    return AttributeSetPartitioner(sets, seed)


PARTITIONERS = [
    PartitionerSpec("iid", build_iid, {}, "uniformly random, equal sizes"),
    PartitionerSpec("dirichlet", build_dirichlet, {"alpha": 0.5, "min_partition_size": 10},
                    "label skew: each class spread over clients ~ Dirichlet(alpha)"),
    PartitionerSpec("pathological", build_pathological, {"classes_per_client": 2},
                    "each client holds only k randomly chosen classes"),
    PartitionerSpec("shard", build_shard, {"shards_per_client": 2},
                    "label-sorted shards, k per client (McMahan et al. 2017)"),
    PartitionerSpec("size-skew", build_size_skew, {"growth": "linear"},
                    "client i holds a share growing with i: linear, square or exponential"),
    PartitionerSpec("groups", build_groups, {"by": "label"},
                    "disjoint class blocks (by=label) or attribute values (by=<attribute>) per client"),
    PartitionerSpec("attribute-sets", build_attribute_sets, {"sets": None},
                    "client i holds the images with every attribute of set i; overlaps go to one set by the seed"),
]


def index_table(labels: np.ndarray, attributes: dict[str, np.ndarray], private: np.ndarray,
                num_partitions: int, args: dict):
    from datasets import Dataset

    columns = {"idx": private, "label": labels[private], **{k: v[private] for k, v in attributes.items()}}
    if args.get("by") == "label":
        columns["group"] = label_groups(labels[private], num_partitions)
    elif "by" in args:
        check_attribute_groups(attributes, private, args["by"], num_partitions)
    return Dataset.from_dict(columns)


def label_groups(labels: np.ndarray, num_partitions: int) -> np.ndarray:
    """Client of each image when the classes are cut into ``num_partitions`` contiguous blocks."""
    classes = np.unique(labels)
    if len(classes) < num_partitions:
        raise DatasetError(f"groups by label: {len(classes)} classes cannot make {num_partitions} disjoint groups")
    block = {c: i for i, part in enumerate(np.array_split(classes, num_partitions)) for c in part}
    return np.array([block[c] for c in labels])


def check_attribute_groups(attributes, private, by, num_partitions) -> None:
    if by not in attributes:
        raise DatasetError(f"groups: this dataset has no attribute '{by}'; attributes: "
                           f"{', '.join(attributes) or 'none (use by=label)'}")
    values = np.unique(attributes[by][private])
    if len(values) != num_partitions:
        raise DatasetError(f"groups by '{by}': {len(values)} distinct values need {len(values)} clients, "
                           f"not {num_partitions}")


def partition_indices(data, spec: PartitionerSpec, args: dict, num_partitions: int, seed: int) -> list[np.ndarray]:
    cap = max_per_client(args)
    args = {k: v for k, v in args.items() if k not in COMMON_ARGS}
    table = index_table(data.train_labels.numpy(), data.attributes, data.private, num_partitions, args)
    table = table.shuffle(seed=seed)
    partitioner = spec.build(num_partitions=num_partitions, seed=seed, **args)
    partitioner.dataset = table
    rank = table_rank(np.asarray(table["idx"]), len(data.train_labels))
    parts = [first_in_table(np.asarray(partitioner.load_partition(i)["idx"], dtype=np.int64), rank, cap)
             for i in range(num_partitions)]
    empty = [i for i, p in enumerate(parts) if len(p) == 0]
    if empty:
        shown = f"{empty[:5]}{'…' if len(empty) > 5 else ''}"
        raise DatasetError(f"partitioner '{spec.name}' left client(s) {shown} without data; use fewer clients or "
                           "another partitioner")
    return parts


def table_rank(shuffled_idx: np.ndarray, num_images: int) -> np.ndarray:
    """Each image's row in the seed-shuffled table."""
    rank = np.zeros(num_images, dtype=np.int64)
    rank[shuffled_idx] = np.arange(len(shuffled_idx))
    return rank


def first_in_table(part: np.ndarray, rank: np.ndarray, cap: int) -> np.ndarray:
    """The partition, sorted; with a cap, its first ``cap`` images in the shuffled table's
    order: a random subset fixed by the seed, whatever order the partitioner returns (shard
    partitions come sorted by label, so their own first images would be one class)."""
    if cap:
        part = part[np.argsort(rank[part], kind="stable")[:cap]]
    return np.sort(part)


def save_partitions(path: Path, parts: list[np.ndarray], key: str) -> None:
    """Write a cell's partitions, with the key they were built for, as one file: its ClientApps
    read it instead of partitioning again (10,000 clients take seconds per process)."""
    flat, ends = np.concatenate(parts), np.cumsum([len(p) for p in parts])

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append ".npz" to a name
            np.savez_compressed(f, flat=flat, ends=ends, key=np.array(key))

    write_atomic(path, write)


@functools.lru_cache(maxsize=4)
def saved_partitions(path: str, key: str) -> list[np.ndarray] | None:
    """The partitions ``save_partitions`` wrote for ``key``; None if there is no such file or
    it holds another key (a stale file is never used)."""
    try:
        with np.load(path) as saved:
            if str(saved["key"]) != key:
                return None
            return np.split(saved["flat"], saved["ends"][:-1])
    except Exception:  # noqa: BLE001 — no file, or not one we can read: the caller partitions itself
        return None


@functools.lru_cache(maxsize=16)
def cached_partition(dataset: str, dataset_args: str, partitioner: str, args: str, num_partitions: int, seed: int):
    """Partitions of a registered dataset, computed once per process (JSON-encoded args)."""
    from fedfuse.datasets.loading import load
    from fedfuse.plugins.manager import registry

    spec = registry().get("partitioners", partitioner)
    return partition_indices(load(dataset, json.loads(dataset_args)), spec, json.loads(args), num_partitions, seed)


def describe(data, parts: list[np.ndarray], partitioner: str, args: dict) -> dict:
    """A partition's summary as stored with its cell and shown by ``fedfuse data show``: the
    label counts, and for ``attribute-sets`` the per-set counts and overlaps (``sets``)."""
    out = summarize(parts, data.train_labels.numpy(), len(data.class_names))
    if partitioner == "attribute-sets":
        from fedfuse.datasets.attribute_sets import set_summary

        out["sets"] = set_summary(data.attributes, data.private, args["sets"], parts)
    return out


def summarize(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> dict:
    """Per-client counts per class, and the mean total-variation distance of the clients'
    label distributions to the pooled one (0 = identical, 1 = disjoint)."""
    counts = np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
    pooled = counts.sum(0) / counts.sum()
    local = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    tv = 0.5 * np.abs(local - pooled).sum(1)
    return {"sizes": counts.sum(1).tolist(), "counts": counts.tolist(), "tv_distance": tv.round(4).tolist(),
            "mean_tv_distance": float(tv.mean())}
