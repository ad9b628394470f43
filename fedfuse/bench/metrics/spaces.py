"""Named feature spaces: ``<dataset>-featnet-v1`` (shipped or trained on demand) or ``inception``.
A result names its space; two spaces are never mixed in one leaderboard column."""

from __future__ import annotations

import functools

from fedfuse.bench.metrics import featnet, inception


@functools.cache
def _inception():
    return inception.InceptionFeatures(), {"feature_space": inception.NAME, "test_accuracy": None}


def featnet_name(dataset: str, dataset_args: dict, data) -> str:
    """The feature net's dataset key: the dataset's name, plus its side when a ``size`` argument
    resized it (``mnist-14px``): a space is trained at the resolution it scores."""
    from fedfuse.plugins.manager import registry

    native = registry().get("datasets", dataset).image_shape
    resized = "size" in dataset_args and (native is None or native[-1] != data.image_shape[-1])
    return f"{dataset}-{data.image_shape[-1]}px" if resized else dataset


def for_cell(cell, data):
    if cell.evaluation["feature_space"] == "inception":
        return _inception()
    return featnet.feature_net(featnet_name(cell.dataset, cell.dataset_args, data), data)
