"""The harness's half of differential privacy: the ``dp`` table a suite entry gives, and the
privacy budget ε accounted from what the clients report (the toolkit's ``DpSgd`` is the
mechanism; it counts its noised steps and the harness reads them off each reply).

Accounting is opacus's RDP accountant (Mironov 2017; the subsampled Gaussian of Mironov,
Talwar & Zhang 2019), not a hand-written formula. Each client protects its own images: a
client's ε composes its DP-SGD steps at its sampling rate (expected batch / its images), over
the rounds it trained; a cell's ``dp_epsilon`` is the largest over clients (the least
protected image) at the suite's δ.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

DEFAULT_DELTA = 1e-5


@dataclass(frozen=True)
class DpSpec:
    """A suite entry's ``dp = { clip = C, noise_multiplier = σ }`` (optionally ``delta`` and
    ``level``): ``record``-level DP-SGD on every client's training (an image protected), or
    ``client``-level DP-FedAvg of the clients' updates (a client protected: for populations).
    σ = 0 clips only and claims no privacy."""

    clip: float
    noise_multiplier: float
    delta: float = DEFAULT_DELTA
    level: Literal["record", "client"] = "record"

    def __post_init__(self):
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"dp.clip must be a finite norm > 0, got {self.clip!r}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(f"dp.noise_multiplier must be >= 0, got {self.noise_multiplier!r}")
        if not 0 < self.delta < 1:
            raise ValueError(f"dp.delta must be in (0, 1), got {self.delta!r}")


def check_delta(spec: DpSpec, clients: int, partition_sizes: list[int]) -> None:
    """δ must be well below 1/N, N the protected units (the largest client's images, or at
    client level the clients): publishing one unit chosen at random, outright, is (0, 1/N)-DP."""
    units, what = (clients, "clients") if spec.level == "client" else (max(partition_sizes), "images of a client")
    if spec.delta > 0.1 / units:
        raise ValueError(f"dp.delta = {spec.delta:g} is not well below 1/N for N = {units} {what}: give at most "
                         f"{0.1 / units:.1e} (e.g. delta = 1e-5)")


def epsilon(noise_multiplier: float, steps: dict[float, int], delta: float) -> float:
    """ε at ``delta`` of DP-SGD with ``noise_multiplier`` run for ``steps[q]`` steps at each
    sampling rate q (opacus's RDP accountant); ∞ without noise, 0 without a step."""
    if not any(steps.values()):
        return 0.0
    if noise_multiplier <= 0:
        return math.inf
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(noise_multiplier, min(1.0, q), n) for q, n in sorted(steps.items()) if n]
    return float(accountant.get_epsilon(delta))


class Ledger:
    """The DP releases of each protected party (a client's images; the population, at client
    level) by sampling rate, over the rounds so far (the server keeps one per cell)."""

    def __init__(self, spec: DpSpec):
        self.spec = spec
        self.steps: dict[int | str, dict[float, int]] = {}

    def add(self, party: int | str, rate: float, count: int) -> None:
        per_rate = self.steps.setdefault(party, {})
        per_rate[round(rate, 12)] = per_rate.get(round(rate, 12), 0) + count

    def add_round(self, traffic: dict[int, dict]) -> int:
        """Add a round's per-client figures (``dp_steps``, ``dp_rate_steps``: the steps and
        their summed sampling rates); returns the round's steps, all clients together."""
        total = 0
        for client, figures in traffic.items():
            n = int(figures.get("dp_steps", 0))
            if n:
                self.add(client, figures["dp_rate_steps"] / n, n)
                total += n
        return total

    def epsilon(self) -> float:
        """The largest ε over the protected parties so far (the least protected image or client)."""
        return max((epsilon(self.spec.noise_multiplier, s, self.spec.delta) for s in self.steps.values()),
                   default=0.0)
