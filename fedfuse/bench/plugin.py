"""The harness's own plugin: the metrics every cell records and the shipped hardware profiles."""

from fedfuse.plugins import MetricSpec, hookimpl

HARNESS_METRICS = [
    MetricSpec("train_loss", "mse", higher_is_better=False, aggregate="last",
               summary="clients' mean noise-prediction loss in the last round"),
    MetricSpec("eval_loss", "mse", higher_is_better=False, aggregate="last",
               summary="noise-prediction loss of the trained model(s) on the held-out split"),
    MetricSpec("bytes_up", "B", higher_is_better=False, aggregate="sum",
               summary="serialized bytes of all client->server messages (what crosses Flower)"),
    MetricSpec("bytes_down", "B", higher_is_better=False, aggregate="sum",
               summary="serialized bytes of all server->client messages"),
    MetricSpec("payload_up", "B", higher_is_better=False, aggregate="sum",
               summary="logical payload up: tensor bytes, or the protocol's declared packed size"),
    MetricSpec("payload_down", "B", higher_is_better=False, aggregate="sum",
               summary="logical payload down"),
    MetricSpec("messages", "count", higher_is_better=False, aggregate="sum",
               summary="Flower messages exchanged, both ways"),
    MetricSpec("client_flops", "FLOP", higher_is_better=False, aggregate="sum",
               summary="all clients' training + sampling FLOPs (torch FlopCounterMode)"),
    MetricSpec("server_flops", "FLOP", higher_is_better=False, aggregate="sum",
               summary="the server's training + sampling FLOPs"),
    MetricSpec("latency_s", "s", higher_is_better=False, aggregate="sum",
               summary="simulated time: sum over rounds of the slowest client's down+compute+up, plus server"),
    MetricSpec("energy_j", "J", higher_is_better=False, aggregate="sum",
               summary="simulated client energy: compute + uplink transmission"),
    MetricSpec("wall_s", "s", higher_is_better=False, aggregate="sum",
               summary="real wall-clock time of the cell on this machine"),
]


@hookimpl
def fedfuse_add_metrics():
    return list(HARNESS_METRICS)


@hookimpl
def fedfuse_add_profiles():
    from fedfuse.bench.hardware import shipped_profiles

    return shipped_profiles()
