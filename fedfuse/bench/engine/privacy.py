"""The DP service's server side (docs/privacy.md): each cell's privacy ledger and its round
figures (``CellPrivacy``), and client-level DP-FedAvg.

Record level: the clients' ``DpSgd`` / ``DpShare`` (fedfuse.toolkit.privacy) count their releases
and each reply carries the count; the ledger composes them per client (bench.metrics.dp).

Client level, DP-FedAvg (McMahan et al., 2018): what a suite entry's ``dp = { level =
"client", clip, noise_multiplier }`` does to every round of a FedAvg-family strategy. Each
client's update (its returned model minus the global one) is clipped to L2 norm ``clip``; the
updates are averaged with equal weights over the round's expected participants m, and Gaussian
noise of standard deviation ``noise_multiplier · clip / m`` is added. The unit protected is a
client (all its images); ε is accounted over rounds at the sampling rate m / clients.

Flower's DP strategy wrappers do the same, but draw their noise from NumPy's unseeded global
generator, divide by the number of replies and rebuild the model as g + (w − g) (which changes
float32 values); here the noise is seeded from the cell, and the aggregate is written as the
strategy's own weighted mean plus the difference to the DP mean, so that with σ = 0, a clip no
update reaches and equal example counts the model is bit-identical to plain FedAvg's.
"""

from __future__ import annotations

import math

import torch
from flwr.app import ArrayRecord, Message

from fedfuse.bench.metrics.dp import DpSpec, Ledger

DP_SALT = 0xD9  # DP noise streams: (cell seed, [partition id,] this, round)


class CellPrivacy:
    """A DP cell's ledger, and what the server does for it (``ServerRun.privacy``)."""

    def __init__(self, cell, generator_of):
        self.cell, self.generator_of = cell, generator_of  # generator_of(*salt): the server's seeded streams
        self.ledger = Ledger(DpSpec(**cell.dp))

    def round_figures(self, traffic: dict[int, dict]) -> dict:
        """The budget after this round: ``dp_epsilon`` (the largest over the protected parties;
        None where σ = 0 claims nothing) at ``dp_delta``. At record level, a round whose clients
        trained but reported no DP step fails the cell: the protocol trained outside the service."""
        took = self.ledger.add_round(traffic)
        if self.cell.dp["level"] == "record" and not took and any(f.get("train_examples", 0) for f in traffic.values()):
            raise RuntimeError(f"this cell asks for DP (dp = {self.cell.dp}) but its clients trained without the DP "
                               "service: the protocol must pass dp=run.dp_sgd(round) to train/fit")
        eps = self.ledger.epsilon()
        return {"dp_epsilon": eps if math.isfinite(eps) else None, "dp_delta": self.cell.dp["delta"]}

    def client_mean(self, round: int, before: ArrayRecord, replies: list[Message], plain: ArrayRecord,
                    strategy) -> ArrayRecord:
        """A client-level cell's aggregate of ``replies`` (``strategy_rounds`` calls it): the
        strategy's weighted mean ``plain`` of the models returned, made DP-FedAvg's."""
        from flwr.serverapp.strategy import FedAvg

        if type(strategy).aggregate_train is not FedAvg.aggregate_train:
            raise ValueError(f"client-level DP averages updates: it needs a mean aggregator, not {type(strategy).__name__}")
        model = plain.to_torch_state_dict()
        term = self.correction(round, updates_of(replies, before.to_torch_state_dict()))
        return plain if term is None else ArrayRecord({k: v + term[k].to(v.dtype) if k in term else v
                                                       for k, v in model.items()})

    def private_mean(self, round: int, updates: list[tuple[float, dict]], mean: dict) -> dict:
        """For a server loop that averages decoded updates itself (the quantized protocols):
        ``mean``, the example-weighted mean of ``updates`` ((example count, {name: update}) per
        client), made DP-FedAvg's."""
        term = self.correction(round, updates)
        return mean if term is None else {k: v + term[k].to(v.dtype) if k in term else v for k, v in mean.items()}

    def correction(self, round: int, updates: list[tuple[float, dict]]) -> dict | None:
        """What turns the example-weighted mean of ``updates`` into the DP-FedAvg mean (each
        update clipped, equal weights over the expected participants m, noise σ·clip/m), or None
        where nothing changes (σ = 0, nothing clipped, equal shares); one release accounted."""
        dp, expected = self.cell.dp, self.cell.per_round
        self.ledger.add("clients", expected / self.cell.clients, 1)
        total = sum(n for n, _ in updates)
        weights = [clip_factor(u, dp["clip"]) / expected - n / total for n, u in updates]  # 0: unclipped, equal share
        sigma = dp["noise_multiplier"] * dp["clip"] / expected
        if sigma == 0 and not any(weights):
            return None
        generator, term = self.generator_of(DP_SALT, round), {}
        for name, first in updates[0][1].items():
            term[name] = sum((w * u[name].double() for w, (_, u) in zip(weights, updates) if w),
                             torch.zeros(first.shape, dtype=torch.float64))
            if sigma > 0:
                term[name] += torch.randn(first.shape, generator=generator, dtype=torch.float64) * sigma
        return term


def updates_of(replies: list[Message], before: dict) -> list[tuple[float, dict]]:
    """(example count, {name: update}) of each reply's returned model against ``before``."""
    out = []
    for reply in replies:
        returned = reply.content["arrays"].to_torch_state_dict()
        n = float(next(iter(reply.content.metric_records.values()))["num-examples"])
        out.append((n, {k: returned[k] - v for k, v in before.items() if v.is_floating_point()}))
    return out


def clip_factor(update: dict, clip: float) -> float:
    norm = torch.sqrt(sum(u.double().pow(2).sum() for u in update.values())).item()
    return min(1.0, clip / (norm + 1e-12))
