"""Named feature spaces: ``<dataset>-featnet-v1`` (shipped or trained on demand) or ``inception``.
A result names its space; two spaces are never mixed in one leaderboard column."""

from __future__ import annotations

import functools

from fedfuse.bench.metrics import featnet, inception


@functools.cache
def _inception():
    return inception.InceptionFeatures(), {"feature_space": inception.NAME, "test_accuracy": None}


def for_cell(cell, data):
    if cell.evaluation["feature_space"] == "inception":
        return _inception()
    return featnet.feature_net(cell.dataset, data)
