"""The ``attribute-sets`` partitioner: client i holds the images that have every attribute of
set i, as CollaFuse defines its CelebA clients (e.g. ``[["Black_Hair"], ["Blond_Hair",
"Wearing_Earrings"]]``). A module of its own because it subclasses flwr-datasets'
``Partitioner``, whose import takes seconds; ``partition.py`` imports it only to build one.
"""

from __future__ import annotations

import numpy as np
from flwr_datasets.partitioner import Partitioner

from fedfuse.datasets import DatasetError

#: index-table columns that are not attributes (fedfuse.datasets.partition.index_table)
NOT_ATTRIBUTES = ("idx", "label")


def set_matches(columns, sets: list[list[str]]) -> np.ndarray:
    """(images, sets) booleans: the image has every attribute of the set (value 1; CelebA's
    -1/1 are read as 0/1)."""
    return np.stack([np.all([np.asarray(columns[a]) == 1 for a in s], axis=0) for s in sets], axis=1)


def draw_owners(matches: np.ndarray, seed: int) -> np.ndarray:
    """Each image's set, -1 where it matches none. An image matching several sets goes to one
    of them drawn uniformly with ``seed``, so no set wins overlaps by its place in the list."""
    draw = np.where(matches, np.random.default_rng(seed).random(matches.shape), -1.0)
    return np.where(matches.any(1), draw.argmax(1), -1)


class AttributeSetPartitioner(Partitioner):
    """Partition ``i`` is the rows whose attributes of ``sets[i]`` are all 1; rows matching no
    set belong to no partition. Works on any table with one integer column per attribute."""

    def __init__(self, sets: list[list[str]], seed: int):
        super().__init__()
        self.sets, self.seed = sets, seed
        self._owners: np.ndarray | None = None

    @property
    def num_partitions(self) -> int:
        return len(self.sets)

    def load_partition(self, partition_id: int):
        if self._owners is None:
            self._owners = self._assign()
        return self.dataset.select(np.flatnonzero(self._owners == partition_id))

    def _assign(self) -> np.ndarray:
        known = [c for c in self.dataset.column_names if c not in NOT_ATTRIBUTES]
        unknown = sorted({a for s in self.sets for a in s} - set(known))
        if unknown:
            raise DatasetError(f"attribute-sets: this dataset has no attribute(s) {', '.join(unknown)}; attributes: "
                               f"{', '.join(known) or 'none (a labels file with attribute columns gives them)'}")
        table = self.dataset.with_format("numpy")
        matches = set_matches({a: table[a] for s in self.sets for a in s}, self.sets)
        empty = [f"{i} {self.sets[i]}" for i in np.flatnonzero(~matches.any(0))]
        if empty:
            raise DatasetError(f"attribute-sets: set(s) {'; '.join(empty)} match none of the "
                               f"{len(table)} private training images")
        return draw_owners(matches, self.seed)


def set_summary(attributes: dict[str, np.ndarray], private: np.ndarray, sets: list[list[str]],
                parts: list[np.ndarray]) -> dict:
    """What ``fedfuse data show`` prints per set: the private images matching it, those its
    client got (fewer where an overlap went elsewhere or ``max_per_client`` capped it), and
    ``overlaps[i][j]``, the images matching both set i and set j (the diagonal: matching i)."""
    matches = set_matches({a: attributes[a][private] for s in sets for a in s}, sets).astype(np.int64)
    return {"sets": sets, "matching": matches.sum(0).tolist(), "assigned": [len(p) for p in parts],
            "overlaps": (matches.T @ matches).tolist(), "matching_none": int((matches.sum(1) == 0).sum())}
