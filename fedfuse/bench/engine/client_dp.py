"""Client-level DP-FedAvg (McMahan et al., 2018): what a suite entry's ``dp = { level =
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

import torch
from flwr.app import ArrayRecord, Message


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


def dp_mean(before: ArrayRecord, replies: list[Message], plain: ArrayRecord, dp: dict, expected: int,
            generator: torch.Generator) -> ArrayRecord:
    """The DP-FedAvg aggregate of ``replies`` (the strategy's weighted mean: ``plain``) for the
    cell's ``dp`` (clip, noise_multiplier) and ``expected`` participants a round."""
    start = before.to_torch_state_dict()
    updates = updates_of(replies, start)
    total = sum(n for n, _ in updates)
    # the DP mean minus the weighted one, per update: 0 for an unclipped update of an equal share
    weights = [clip_factor(u, dp["clip"]) / expected - n / total for n, u in updates]
    sigma = dp["noise_multiplier"] * dp["clip"] / expected
    if sigma == 0 and not any(weights):
        return plain
    model = plain.to_torch_state_dict()
    for name in updates[0][1]:
        for w, (_, update) in zip(weights, updates):
            if w:
                model[name] += (w * update[name].double()).to(model[name].dtype)
        if sigma > 0:
            model[name] += (torch.randn(model[name].shape, generator=generator, dtype=torch.float64) * sigma).to(model[name].dtype)
    return ArrayRecord(model)
