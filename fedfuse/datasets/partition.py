"""Partition a dataset's training part with flwr-datasets partitioners.

The partitioners see a small table (``idx``, ``label``) rather than the images, so a
partition is a list of indices into the decoded images: clients get views, not copies.
The table is shuffled with the cell's seed first, which makes every partition a pure
function of (dataset, partitioner, args, seed) — also for partitioners that take no seed.
"""

from __future__ import annotations

import functools
import json

import numpy as np

from fedfuse.plugins.specs import PartitionerSpec

# flwr-datasets and HF datasets are imported inside the builders: listing plugins stays fast.


def build_iid(num_partitions: int, seed: int):
    from flwr_datasets.partitioner import IidPartitioner

    return IidPartitioner(num_partitions=num_partitions)


def build_dirichlet(num_partitions: int, seed: int, alpha: float, min_partition_size: int):
    from flwr_datasets.partitioner import DirichletPartitioner

    return DirichletPartitioner(
        num_partitions=num_partitions, partition_by="label", alpha=alpha,
        min_partition_size=min_partition_size, self_balancing=True, seed=seed,
    )


PARTITIONERS = [
    PartitionerSpec("iid", build_iid, {}, "uniformly random, equal sizes"),
    PartitionerSpec("dirichlet", build_dirichlet, {"alpha": 0.5, "min_partition_size": 10},
                    "label skew: class proportions per client ~ Dirichlet(alpha)"),
]


def partition_indices(labels: np.ndarray, spec: PartitionerSpec, args: dict,
                      num_partitions: int, seed: int) -> list[np.ndarray]:
    from datasets import Dataset

    table = Dataset.from_dict({"idx": np.arange(len(labels)), "label": labels}).shuffle(seed=seed)
    partitioner = spec.build(num_partitions=num_partitions, seed=seed, **args)
    partitioner.dataset = table
    return [np.sort(np.asarray(partitioner.load_partition(i)["idx"])) for i in range(num_partitions)]


@functools.lru_cache(maxsize=16)
def cached_partition(dataset: str, partitioner: str, args_json: str, num_partitions: int, seed: int):
    """Partitions of a registered dataset, computed once per process."""
    from fedfuse.plugins.manager import registry

    reg = registry()
    data = reg.get("datasets", dataset).load()
    spec = reg.get("partitioners", partitioner)
    return partition_indices(data.train_labels.numpy(), spec, json.loads(args_json), num_partitions, seed)


def summarize(parts: list[np.ndarray], labels: np.ndarray, num_classes: int) -> dict:
    """Per-client counts per class, and the mean total-variation distance of each client's
    label distribution to the global one (0 = IID, 1 = disjoint)."""
    counts = np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
    glob = np.bincount(labels, minlength=num_classes) / len(labels)
    local = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    tv = 0.5 * np.abs(local - glob).sum(1)
    return {"counts": counts.tolist(), "mean_tv_distance": float(tv.mean())}
