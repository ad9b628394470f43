"""The energy-efficiency problem of on-demand quantized FL (symbols as in the protocol README).

    minimise    sum_k  E_cmp,k(f_k) + E_up,k(b_k, p_k)
    over        b_k in B_k (bit-widths allowed by client k's demand), f_k in [f_min, f_max], p_k in (0, p_max]
    subject to  T_cmp,k(f_k) + T_up,k(b_k, p_k) <= T_max            (each client's round deadline)
                E_cmp,k + E_up,k <= budget_k                         (its energy budget, if any)
                sum_k w_k^2 * V(b_k) <= eps                           (aggregate quantization error)

with T_cmp = F/(c f), E_cmp = kappa (F/c) f^2, T_up = bits/r(p), E_up = p T_up, r(p) = B log2(1 + p g/(N0 B))
(fedfuse.bench.costs.costmodel), bits = d b + 64 per block of scales, w_k = n_k / N the FedAvg weights,
and V(b) = 1 / (4 (2^b - 1)^2) the per-value variance bound of b-bit stochastic rounding in
units of the update's range squared.

For a fixed b both energies fall as their part of the deadline grows, so the optimum spends the
whole deadline: with tau = T_cmp, f = F/(c tau), and p is the least power sending the bits in
T_max - tau. E(tau) is convex (a decreasing convex compute term plus an increasing convex
transmit term): a golden-section search finds it. The bit-widths are then chosen jointly:
exactly, by a Pareto dynamic programme over (error, energy) of partial assignments, for small
instances; at scale, greedily on each client's convex hull, upgrading the client with the least
energy per unit of error removed until the bound holds.

Static power. A device awake for the round draws P_static,k for its whole length T, waiting
included, so the objective gains sum_k P_static,k * T and the round length becomes a decision:
a longer round lowers every device's dynamic energy (the problem above with deadline T) but
costs static energy. E*(T) + sum_k P_static,k T is searched over T_min <= T <= T_max (T_min: every
device at its maximum clock and power with its fewest allowed bits): a geometric grid of round
lengths (an infeasible T counts as infinite), then a golden-section refinement between the best
grid point's neighbours (beyond EXACT_SEARCH_UP_TO clients, each length is ranked by its greedy
plan and the exact programme solves once at the length found). Without static power the optimum
is T = T_max, as before, and the search is skipped. The download and the server's time add the same to every plan and are left out.
"""

from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass

import numpy as np

from fedfuse.api import costmodel

GOLDEN = (math.sqrt(5) - 1) / 2
SCALE_BITS = 64  # lo and step per block, float32 each
FULL_PRECISION = 32  # bits: the float32 update as it is, no scales
ROUND_GRID = 24  # round lengths tried from the fastest possible to T_max when devices draw static power
# Beyond this many clients the search over round lengths (~80 solves) ranks each length by the greedy
# plan; the exact programme then solves once at the length found (it took ~0.25 s a solve at 10 clients)
EXACT_SEARCH_UP_TO = 6


class Infeasible(ValueError):
    """No plan meets the constraints; the message names the client and the constraint."""


@dataclass(frozen=True)
class ClientProblem:
    flops: float  # the round's training FLOPs
    params: int  # values in the update
    weight: float  # FedAvg weight n_k / N
    device: object  # DeviceProfile
    network: object  # NetworkProfile
    distance_m: float
    min_bits: int = 1
    energy_budget_j: float = math.inf
    block: int = 4096


@dataclass(frozen=True)
class Choice:
    bits: int
    cpu_freq_hz: float
    tx_power_w: float
    energy_j: float
    t_cmp_s: float
    t_up_s: float


def error(bits: int) -> float:
    return 1.0 / (4 * (2**bits - 1) ** 2)


def error_bound(clients, bits: int) -> float:
    """The aggregate error bound of ``bits`` bits (config ``error_bits``): ``Σ_k w_k² V(bits)``,
    what every device at ``bits`` reaches."""
    return sum(c.weight**2 * error(bits) for c in clients)


def scale_bits(params: int, block: int, bits) -> float:
    """The per-block scales of a quantized update; full precision (32 bits) sends none."""
    return np.where(np.asarray(bits) == FULL_PRECISION, 0, SCALE_BITS * -(-params // block))


def upload_bits(c: ClientProblem, bits: int) -> float:
    return c.params * bits + float(scale_bits(c.params, c.block, bits))


def operating_points(clients: list[ClientProblem], bit_set, deadline_s: float, iters: int = 60) -> np.ndarray:
    """The least-energy (f, p) of every (client, bit-width) within the deadline, all at once:
    a vectorised golden-section search over tau = T_cmp. Returns a (clients, bits) array of
    Choice, None where the deadline cannot be met."""
    bits = np.asarray(list(bit_set), dtype=float)[None, :]
    col = lambda f: np.array([f(c) for c in clients], dtype=float)[:, None]  # noqa: E731
    cycles = col(lambda c: c.flops / c.device.flops_per_cycle)
    kappa, fmin, fmax = col(lambda c: c.device.kappa), col(lambda c: c.device.cpu_freq_min_hz), col(lambda c: c.device.cpu_freq_max_hz)
    bw, noise, pmax = col(lambda c: c.network.bandwidth_hz), col(lambda c: c.network.noise_psd_w_per_hz), col(lambda c: c.network.tx_power_w)
    gain = col(lambda c: costmodel.path_gain(c.network, c.distance_m))
    payload = col(lambda c: c.params) * bits + np.array([scale_bits(c.params, c.block, bits[0]) for c in clients])
    t_up_min = payload / (bw * np.log2(1 + pmax * gain / (noise * bw)))
    lo = np.broadcast_to(cycles / fmax, payload.shape)
    hi = np.minimum(cycles / fmin, deadline_s - t_up_min)

    def power(t):
        with np.errstate(over="ignore"):
            return (np.exp2(payload / (bw * t)) - 1) * noise * bw / gain

    def energy(tau):
        with np.errstate(divide="ignore", invalid="ignore"):
            compute = np.where(cycles > 0, kappa * cycles**3 / np.maximum(tau, 1e-300) ** 2, 0.0)
        return compute + power(deadline_s - tau) * (deadline_s - tau)

    a, b = lo.copy(), np.maximum(hi, lo)
    for _ in range(iters):
        x1, x2 = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
        left = energy(x1) <= energy(x2)
        a, b = np.where(left, a, x1), np.where(left, x2, b)
    candidates = np.stack([lo, np.maximum(hi, lo), (a + b) / 2])
    tau = np.take_along_axis(candidates, energy(candidates).argmin(0)[None], 0)[0]
    f = np.where(cycles > 0, cycles / np.maximum(tau, 1e-300), fmin)
    p = np.minimum(power(deadline_s - tau), pmax)
    e = energy(tau)
    out = np.full(payload.shape, None, dtype=object)
    for k, j in zip(*np.nonzero(lo <= hi)):
        out[k, j] = Choice(int(bits[0, j]), float(f[k, j]), float(p[k, j]),
                           float(e[k, j]), float(tau[k, j]), float(deadline_s - tau[k, j]))
    return out


def options(c: ClientProblem, index: int, deadline_s: float, bit_set, points=None) -> list[Choice]:
    allowed = [b for b in bit_set if b >= c.min_bits]
    if not allowed:
        raise Infeasible(f"client {index}: its demand of {c.min_bits} bits exceeds every allowed bit-width")
    row = points if points is not None else operating_points([c], bit_set, deadline_s)[0]
    timely = [o for o, b in zip(row, bit_set) if o is not None and b >= c.min_bits]
    if not timely:
        raise Infeasible(f"client {index}: cannot meet the {deadline_s:g} s deadline even at {min(allowed)} bits, "
                         "maximum frequency and power")
    static = c.device.static_power_w * deadline_s  # the budget covers the device's whole round
    within = [o for o in timely if o.energy_j + static <= c.energy_budget_j]
    if not within:
        raise Infeasible(f"client {index}: its energy budget {c.energy_budget_j:g} J is below the least energy "
                         f"{min(o.energy_j for o in timely) + static:.4g} J of any timely plan")
    return within


def all_options(clients, deadline_s: float, bit_set) -> list[list[Choice]]:
    bit_set = list(bit_set)
    points = operating_points(clients, bit_set, deadline_s)
    return [options(c, i, deadline_s, bit_set, points[i]) for i, c in enumerate(clients)]


def check_bound(clients, opts, error_bound: float) -> None:
    best = sum(c.weight**2 * min(error(o.bits) for o in os) for c, os in zip(clients, opts))
    if best > error_bound:
        raise Infeasible(f"aggregate quantization error bound {error_bound:.3g} cannot be met: the least error "
                         f"within the deadlines and budgets is {best:.3g}")


def solve(clients: list[ClientProblem], deadline_s: float, error_bound: float, bit_set=range(1, 17),
          exact: bool | None = None) -> list[Choice]:
    """The plan: one Choice per client, all finishing at the same round length (``round_length``).
    ``exact`` defaults to True for up to 12 clients."""
    if not static_power(clients):
        return solve_at(clients, deadline_s, error_bound, bit_set, exact)
    search_exact = exact if len(clients) <= EXACT_SEARCH_UP_TO else False
    _, plan, length = best_round(clients, deadline_s, error_bound, bit_set, search_exact)
    if plan is None:
        return solve_at(clients, deadline_s, error_bound, bit_set, exact)
    return plan if search_exact == exact else solve_at(clients, length, error_bound, bit_set, exact)


def static_power(clients) -> float:
    return float(sum(c.device.static_power_w for c in clients))


def plan_energy(clients, plan: list[Choice]) -> float:
    """Dynamic (compute + upload) plus static energy of a plan: what the devices spend in the round."""
    return total_energy(plan) + static_power(clients) * round_length(plan)


def round_length(plan: list[Choice]) -> float:
    return max(o.t_cmp_s + o.t_up_s for o in plan)


def best_round(clients, deadline_s: float, error_bound: float, bit_set, exact) -> tuple[float, list | None, float]:
    """(energy, plan, T) of the best round length T <= deadline: a geometric grid, then golden
    section between the best grid point's neighbours; (inf, None, deadline) if no T is feasible."""
    def at(T: float) -> tuple[float, list | None, float]:
        try:
            plan = solve_at(clients, T, error_bound, bit_set, exact)
        except Infeasible:
            return math.inf, None, T
        return total_energy(plan) + static_power(clients) * T, plan, T

    shortest = fastest_round(clients, bit_set)
    if shortest > deadline_s:
        return math.inf, None, deadline_s
    lengths = np.geomspace(shortest, deadline_s, ROUND_GRID)
    tried = [at(T) for T in lengths]
    i = int(np.argmin([e for e, *_ in tried]))
    a, b, best = lengths[max(i - 1, 0)], lengths[min(i + 1, len(lengths) - 1)], tried[i]
    for _ in range(30):
        x1, x2 = b - GOLDEN * (b - a), a + GOLDEN * (b - a)
        first, second = at(x1), at(x2)
        best = min([best, first, second], key=lambda item: item[0])
        a, b = (a, x2) if first[0] <= second[0] else (x1, b)
    return best


def fastest_round(clients, bit_set) -> float:
    """No round can be shorter: every device at its maximum frequency and power, sending its
    fewest allowed bits."""
    def fastest(c: ClientProblem) -> float:
        bits = min((b for b in bit_set if b >= c.min_bits), default=max(bit_set))
        rate = costmodel.uplink_rate(c.network, c.distance_m)
        return c.flops / (c.device.flops_per_cycle * c.device.cpu_freq_max_hz) + upload_bits(c, bits) / rate

    return max(fastest(c) for c in clients)


def solve_at(clients: list[ClientProblem], deadline_s: float, error_bound: float, bit_set=range(1, 17),
             exact: bool | None = None) -> list[Choice]:
    """The least dynamic-energy plan when every device has ``deadline_s`` for compute + upload."""
    opts = all_options(clients, deadline_s, bit_set)
    check_bound(clients, opts, error_bound)
    if exact if exact is not None else len(clients) <= 12:
        return pareto_dp(clients, opts, error_bound)
    return greedy(clients, opts, error_bound)


def pareto_dp(clients, opts, error_bound: float) -> list[Choice]:
    """Exact: keep, client by client, only partial plans not beaten on both error and energy."""
    frontier = [(0.0, 0.0, ())]
    for c, os in zip(clients, opts):
        grown = sorted((err + c.weight**2 * error(o.bits), energy + o.energy_j, plan + (o,))
                       for err, energy, plan in frontier for o in os
                       if err + c.weight**2 * error(o.bits) <= error_bound * (1 + 1e-12))
        frontier, least = [], math.inf
        for item in grown:  # sorted by error: keep those cheaper than every lower-error one
            if item[1] < least:
                frontier.append(item)
                least = item[1]
    return list(min(frontier, key=lambda item: item[1])[2])


def hull(c: ClientProblem, os: list[Choice]) -> list[Choice]:
    """Client options on the lower convex hull of (error, energy), by decreasing error."""
    points = sorted(os, key=lambda o: (-error(o.bits), o.energy_j))
    out: list[Choice] = []
    for o in points:
        if out and o.energy_j <= out[-1].energy_j:  # less error for no more energy: dominates
            out.pop()
            while out and o.energy_j <= out[-1].energy_j:
                out.pop()
        while len(out) >= 2 and _slope(out[-2], out[-1]) >= _slope(out[-1], o):
            out.pop()
        out.append(o)
    return out


def _slope(a: Choice, b: Choice) -> float:
    """Energy added per unit of error removed, going from a to b."""
    return (b.energy_j - a.energy_j) / max(error(a.bits) - error(b.bits), 1e-300)


def greedy(clients, opts, error_bound: float) -> list[Choice]:
    hulls = [hull(c, os) for c, os in zip(clients, opts)]
    pos = [0] * len(clients)
    total = sum(c.weight**2 * error(h[0].bits) for c, h in zip(clients, hulls))
    heap = [(_slope(h[0], h[1]), k) for k, h in enumerate(hulls) if len(h) > 1]
    heapq.heapify(heap)
    while total > error_bound and heap:
        _, k = heapq.heappop(heap)
        h, i, w2 = hulls[k], pos[k], clients[k].weight**2
        total -= w2 * (error(h[i].bits) - error(h[i + 1].bits))
        pos[k] = i + 1
        if i + 2 < len(h):
            heapq.heappush(heap, (_slope(h[i + 1], h[i + 2]), k))
    return [h[i] for h, i in zip(hulls, pos)]


def brute_force(clients: list[ClientProblem], deadline_s: float, error_bound: float, bit_set=range(1, 17)):
    """Every combination (for tests): the least-energy plan within the bound."""
    opts = all_options(clients, deadline_s, bit_set)
    best = None
    for plan in itertools.product(*opts):
        if sum(c.weight**2 * error(o.bits) for c, o in zip(clients, plan)) <= error_bound * (1 + 1e-12):
            energy = sum(o.energy_j for o in plan)
            if best is None or energy < best[0]:
                best = (energy, list(plan))
    if best is None:
        raise Infeasible("no combination meets the aggregate quantization error bound")
    return best[1]


def total_energy(plan: list[Choice]) -> float:
    return float(np.sum([o.energy_j for o in plan]))
