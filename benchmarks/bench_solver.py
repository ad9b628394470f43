"""On-demand quantization's energy-efficiency problem (fedfuse/protocols/ondemand_quant/solver.py):
one plan (each device's bit-width, CPU frequency and transmit power) for 1,000 devices by the
greedy programme, and for 12 (the most it solves exactly unless told) by the exact one, which
equals brute force (tests/unit/test_quantization.py); each at a given round length (``solve_at``)
and with the round length searched as well (``solve``: the devices' static power makes it a
decision, and the search solves at tens of lengths). Devices, networks,
distances and data shares are drawn from the shipped profiles; the error bound is 6 bits'.

    bash scripts/bench.sh -k solver
"""

import numpy as np
import pytest
from benchutil import FULL, record

from fedfuse.bench.costs.hardware import shipped_profiles
from fedfuse.protocols.ondemand_quant import solver

PROFILES = {p.name: p for p in shipped_profiles()}
DEVICES = ["raspberry-pi-4", "phone-midrange", "jetson-nano", "laptop-cpu"]
NETWORKS = ["lte", "wifi", "5g-sub6"]


def clients(n: int) -> list[solver.ClientProblem]:
    r = np.random.default_rng(n)
    shares = r.random(n)
    return [solver.ClientProblem(flops=float(r.uniform(1e10, 1e11)), params=1_000_000, weight=float(w),
                                 device=PROFILES[r.choice(DEVICES)], network=PROFILES[r.choice(NETWORKS)],
                                 distance_m=float(r.uniform(20, 200)), min_bits=int(r.integers(1, 6)))
            for w in shares / shares.sum()]


@pytest.mark.parametrize("solve", [solver.solve_at, solver.solve])
@pytest.mark.parametrize("n, exact", [(1000 if FULL else 40, False), (12 if FULL else 4, True)])
def test_solver(benchmark, n, exact, solve):
    problem = clients(n)
    bound = solver.error_bound(problem, 6)
    plan = benchmark.pedantic(solve, args=(problem, 20.0, bound, range(1, 17), exact), rounds=3,
                              iterations=1, warmup_rounds=0)
    assert len(plan) == n and sum(c.weight**2 * solver.error(o.bits) for c, o in zip(problem, plan)) <= bound * 1.000001
    record(benchmark, f"{solve.__name__}_{n}")
