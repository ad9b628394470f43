"""Where can on-demand quantization's bit choice win? The planner's own energy for one round,
on-demand against the same problem with every device's bits fixed (fixed-b + dvfs: the same
frequency, power and round-length choice), on the hardware each seed of `seed-ondemand-quant`
v4 drew (devices, links, distances, data shares from its committed store). It solves plans
only (no training), so it reads in seconds:

    .venv/bin/python benchmarks/ondemand_headroom.py [runs/seed-ondemand-quant-v4]

Rows: the error bound (on-demand's `error_bits`; fixed-b uses b = that bound, which meets it
exactly), with the shipped devices' static power and without it (the paper's model), and with
the update 1x and 10x the small UNet's 651 k values (a bigger model: the upload weighs more;
at 30x client 0's NB-IoT link misses the 20 s deadline at any bit-width). On-demand may pick any
bit-width (`min_bits = 1`), as the moving-clients row of the study. "infeasible": no plan meets
the deadline.
"""

import dataclasses
import json
import sqlite3
import sys
from pathlib import Path

from fedfuse.bench.costs.costing import resolve_profile
from fedfuse.plugins.manager import registry
from fedfuse.protocols.ondemand_quant import solver

DEADLINE_S, ROUNDS = 20.0, 20  # the suite's deadline_s and rounds


def seeds(store: Path) -> list[tuple[int, list[dict], list[int], float, int]]:
    """(seed, clients.json, partition sizes, a client's training FLOPs a round, model values) of
    each on-demand cell in ``store``."""
    db = sqlite3.connect(store / "results.sqlite")
    rows = db.execute("SELECT seed, run_dir, metrics FROM cells WHERE label = 'on-demand (error 6 bits)' "
                      "AND status = 'ok' ORDER BY seed").fetchall()
    out = []
    for seed, run_dir, metrics in rows:
        folder, m = store / "runs" / Path(run_dir).name, json.loads(metrics)
        sizes = json.loads((folder / "partition.json").read_text())["partition"]["sizes"]
        clients = json.loads((folder / "clients.json").read_text())
        out.append((seed, clients, sizes, m["client_flops"] / ROUNDS / len(clients), int(m["model_params"])))
    return out


def problems(clients, sizes, flops, params, static: bool) -> list[solver.ClientProblem]:
    reg, total = registry(), sum(sizes)

    def device(name):
        d = resolve_profile(name, "device", {}, reg)
        return d if static else dataclasses.replace(d, static_power_w=0.0)

    return [solver.ClientProblem(flops, params, n / total, device(c["device"]), resolve_profile(c["network"], "network", {}, reg),
                                 c["distance_m"]) for c, n in zip(clients, sizes)]


def round_energy(clients, bits: int, free: bool) -> tuple[float, list[int]] | None:
    """The plan's energy for one round (static energy for its length included) and its bits:
    on-demand (``free``) within the error bound of ``bits``, or every device at ``bits``; None
    where no plan meets the deadline."""
    bound = solver.error_bound(clients, bits)
    try:
        plan = solver.solve(clients, DEADLINE_S, bound) if free else solver.solve(clients, DEADLINE_S, float("inf"), [bits])
    except solver.Infeasible:
        return None
    return solver.plan_energy(clients, plan), [p.bits for p in plan]


def compared(fixed, ondemand) -> str:
    if ondemand is None:
        return "infeasible | infeasible | – | –" if fixed is None else f"{fixed[0]:.3f} | infeasible | – | –"
    if fixed is None:
        return f"infeasible | {ondemand[0]:.3f} | only on-demand meets the deadline | {ondemand[1]}"
    return f"{fixed[0]:.3f} | {ondemand[0]:.3f} | {1 - ondemand[0] / fixed[0]:.2%} | {ondemand[1]}"


def main(store: Path) -> None:
    print("seed | static power | model values | error bits | fixed-b + dvfs J | on-demand J | saved | on-demand bits")
    for seed, clients, sizes, flops, params in seeds(store):
        for static in (True, False):
            for scale in (1, 10):
                problem = problems(clients, sizes, flops, params * scale, static)
                for bits in (2, 4, 6, 8):
                    fixed, ondemand = round_energy(problem, bits, False), round_energy(problem, bits, True)
                    print(f"{seed} | {static} | {params * scale:,} | {bits} | {compared(fixed, ondemand)}")

if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/seed-ondemand-quant-v4"))
