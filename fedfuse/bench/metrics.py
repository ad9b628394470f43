"""Specs of the metrics the harness itself records for every cell (a plugin like any other)."""

from fedfuse.plugins import MetricSpec, hookimpl

HARNESS_METRICS = [
    MetricSpec("train_loss", "mse", higher_is_better=False, aggregate="last",
               summary="clients' mean noise-prediction loss in the last round"),
    MetricSpec("eval_loss", "mse", higher_is_better=False, aggregate="last",
               summary="noise-prediction loss of the trained model(s) on the held-out split"),
    MetricSpec("bytes_up", "B", higher_is_better=False, aggregate="sum",
               summary="serialized bytes of all client->server messages"),
    MetricSpec("bytes_down", "B", higher_is_better=False, aggregate="sum",
               summary="serialized bytes of all server->client messages"),
    MetricSpec("messages", "count", higher_is_better=False, aggregate="sum",
               summary="Flower messages exchanged, both ways"),
    MetricSpec("wall_s", "s", higher_is_better=False, aggregate="sum",
               summary="real wall-clock time of the cell on this machine"),
]


@hookimpl
def fedfuse_add_metrics():
    return list(HARNESS_METRICS)
