"""Load a registered dataset with a cell's arguments, once per process.

Besides its loader's own arguments, every dataset accepts the harness's ``public_classes``
and ``public_fraction``: training images set aside as *public* (e.g. to pre-train a base
model). Clients are partitioned over the remaining, *private* images.
"""

from __future__ import annotations

import dataclasses
import functools
import json

import numpy as np

from fedfuse.datasets import DatasetError, ImageData
from fedfuse.datasets.builtin import SPLIT_SEED

COMMON_ARGS = {"public_classes": [], "public_fraction": 0.0}


def allowed_args(spec) -> dict:
    return {**spec.args, **COMMON_ARGS}


def load(name: str, args: dict | None = None) -> ImageData:
    """Dataset ``name`` (a registered dataset plugin's) with its ``args`` (and the common
    ``public_classes`` / ``public_fraction``), loaded once per process: its training and
    held-out images and labels, and which training images are public."""
    return _load(name, json.dumps(args or {}, sort_keys=True))


@functools.lru_cache(maxsize=4)
def _load(name: str, args_json: str) -> ImageData:
    from fedfuse.plugins.manager import registry

    args = json.loads(args_json)
    spec = registry().get("datasets", name)
    data = spec.load(**{k: v for k, v in args.items() if k not in COMMON_ARGS})
    public = choose_public(data.train_labels.numpy(), args.get("public_classes", []),
                           args.get("public_fraction", 0.0))
    return dataclasses.replace(data, public=public)


def choose_public(labels: np.ndarray, classes: list[int], fraction: float) -> np.ndarray:
    """Indices of public images: all of ``classes``, plus a fixed random ``fraction`` of the rest."""
    if not 0 <= fraction < 1:
        raise DatasetError(f"public_fraction must be in [0, 1), got {fraction}")
    public = np.flatnonzero(np.isin(labels, classes))
    rest = np.setdiff1d(np.arange(len(labels)), public)
    picked = np.random.default_rng(SPLIT_SEED).permutation(rest)[: round(len(rest) * fraction)]
    public = np.sort(np.concatenate([public, picked]))
    if len(public) == len(labels):
        raise DatasetError("public_classes/public_fraction leave no private images for the clients")
    return public
