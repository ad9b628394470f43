"""A cell: one point of a suite's matrix, run as one Flower run."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from fedfuse.bench.costs.hardware import DEFAULT_ASSIGNMENT
from fedfuse.results.record import with_args
from fedfuse.toolkit.seeding import stable_hash

#: generated images scored per cell, sampler steps and kind, and the feature space of FID & co.
DEFAULT_EVALUATION = {"samples": 256, "sample_steps": 50, "sampler": "ddim", "feature_space": "featnet"}
#: members (and as many non-members) of the membership attack. Not in DEFAULT_EVALUATION: a cell
#: carries ``mia_samples`` only when a suite sets another value, so other cells keep their ids.
DEFAULT_MIA_SAMPLES = 256


@dataclass(frozen=True)
class DataSplit:
    """A dataset split across clients: what a cell's partitions are a pure function of."""

    dataset: str
    dataset_args: dict[str, Any]
    partitioner: str
    partitioner_args: dict[str, Any]
    clients: int
    seed: int

    @property
    def dataset_name(self) -> str:
        return with_args(self.dataset, self.dataset_args)

    @property
    def partition_name(self) -> str:
        return with_args(self.partitioner, self.partitioner_args)

    def key(self) -> tuple:
        """The split, JSON-encoded for caching."""
        return (self.dataset, json.dumps(self.dataset_args, sort_keys=True), self.partitioner,
                json.dumps(self.partitioner_args, sort_keys=True), self.clients, self.seed)


@dataclass(frozen=True)
class CellSpec:
    """Everything that defines a run; the same values give the same ``cell_id``."""

    suite: str
    suite_version: str
    label: str  # the protocol entry's display name (a protocol may appear with several configs)
    protocol: str
    protocol_version: str
    config: dict[str, Any]
    dataset: str
    dataset_args: dict[str, Any]
    partitioner: str
    partitioner_args: dict[str, Any] = field(default_factory=dict)
    profile: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_ASSIGNMENT))  # who runs on what
    evaluation: dict[str, Any] = field(default_factory=lambda: dict(DEFAULT_EVALUATION))  # how quality is measured
    clients: int = 2
    rounds: int = 1
    seed: int = 0
    # Where it runs (a suite's [resources]: accelerator, precision, CPU/GPU shares). The *system*,
    # recorded with the result but not part of the cell's identity: a cell done on a CPU is not
    # run again on a GPU.
    resources: dict[str, Any] = field(default_factory=dict)
    bad_replies: str = "fail"  # or "drop": a malformed client reply leaves that client out of its round
    deadline_s: float = 0.0  # > 0: a client whose simulated round latency exceeds it misses the round
    max_update_ratio: float = 0.0  # > 0: the suite's bound on a returned model's update; 0: the protocol's
    participation: int | float = 1.0  # clients per round: a fraction (float) or a count (int)
    # a track's compute budget: training images processed (optimizer steps x batch), every party
    # together, pre-training included; 0: none
    budget: int = 0
    # record-level DP-SGD on the clients' training (bench.metrics.dp.DpSpec's fields); {}: none
    dp: dict[str, Any] = field(default_factory=dict)
    # a track's DP budget ({"epsilon", "delta"}) its entrants must meet; {}: none
    dp_budget: dict[str, float] = field(default_factory=dict)

    @property
    def config_hash(self) -> str:
        """The entry's config, DP settings included: one label, one config (one leaderboard row)."""
        dp = {"dp": self.dp} if self.dp else {}
        return stable_hash({"protocol": self.protocol, "version": self.protocol_version, **self.config, **dp})

    @property
    def cell_id(self) -> str:
        identity = {k: v for k, v in asdict(self).items() if k != "resources"}
        if self.bad_replies == "fail":  # the defaults leave the ids of cells stored before they existed
            del identity["bad_replies"]
        if not self.deadline_s:
            del identity["deadline_s"]
        if not self.max_update_ratio:
            del identity["max_update_ratio"]
        if self.participation == 1.0 and isinstance(self.participation, float):
            del identity["participation"]
        if not self.budget:
            del identity["budget"]
        for name in ("dp", "dp_budget"):
            if not identity[name]:
                del identity[name]
        return stable_hash(identity, length=16)

    @property
    def per_round(self) -> int:
        """How many clients take part in each round."""
        p = self.participation
        return p if isinstance(p, int) else max(1, round(p * self.clients))

    @property
    def system(self):
        """The cell's resources as a ``fedfuse.toolkit.device.Resources``."""
        from fedfuse.toolkit.device import Resources

        return Resources(**self.resources)

    @property
    def name(self) -> str:
        return f"{self.label}/{self.dataset_name}/{self.partition_name}/seed{self.seed}"

    @property
    def split(self) -> DataSplit:
        return DataSplit(self.dataset, self.dataset_args, self.partitioner, self.partitioner_args, self.clients, self.seed)

    @property
    def partition_name(self) -> str:
        return self.split.partition_name

    @property
    def dataset_name(self) -> str:
        return self.split.dataset_name

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CellSpec":
        return cls(**json.loads(text))

    def partition_key(self) -> tuple:
        return self.split.key()


def cell_partitions(cell: CellSpec, saved: str | None = None) -> list[np.ndarray]:
    """The cell's client partitions (index arrays into the training images), cached per
    process; read from ``saved`` (the driver's ``partitions.npz``) where it holds this cell's."""
    from fedfuse.datasets.partition import cached_partition, saved_partitions

    parts = saved_partitions(saved, partition_file_key(cell)) if saved else None
    return parts if parts is not None else cached_partition(*cell.partition_key())


def partition_file_key(cell: CellSpec) -> str:
    return json.dumps(list(cell.partition_key()))
