"""A cell: one point of a suite's matrix, run as one Flower run."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-able object that does not depend on key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


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
    partitioner: str
    partitioner_args: dict[str, Any] = field(default_factory=dict)
    clients: int = 2
    rounds: int = 1
    seed: int = 0

    @property
    def config_hash(self) -> str:
        return stable_hash({"protocol": self.protocol, "version": self.protocol_version, **self.config})

    @property
    def cell_id(self) -> str:
        return stable_hash(asdict(self), length=16)

    @property
    def name(self) -> str:
        return f"{self.label}/{self.dataset}/{self.partition_name}/seed{self.seed}"

    @property
    def partition_name(self) -> str:
        args = ",".join(f"{k}={v}" for k, v in sorted(self.partitioner_args.items()))
        return f"{self.partitioner}({args})" if args else self.partitioner

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "CellSpec":
        return cls(**json.loads(text))
