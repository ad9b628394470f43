"""How the engine scales: per-round wall time and peak memory of a fedavg cell against the
clients that take part in a round and the clients registered, beside a plain Flower simulation
doing the same work (benchmarks/plain_flower.py) in the same run.

The work is deliberately tiny (the tiny UNet, one local step of batch 8, MNIST at 14 px), so
that what is measured is the engine: a round's time per participating client is the cost of
sending, running and receiving one client's message. Each configuration runs in a process of
its own (its peak memory is the proportional set size of that process and every process it
starts: Ray's, the ClientApp actors), for ``ROUNDS`` rounds; a round's time is the time between
the ends of consecutive rounds, and the first round, which starts the actors, is reported apart.

    bash scripts/bench.sh -k scaling      # the full points: about 25 min on 2 cores
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from benchutil import FULL, LINES

HERE = Path(__file__).resolve().parent
#: (registered, participating) clients per round: the issue's points, or one tiny one in CI.
POINTS = [(1000, 10), (1000, 100), (1000, 1000), (10000, 100)] if FULL else [(4, 2)]
ROUNDS = 3 if FULL else 2
DATA = {"dataset": "mnist", "side": 14} if FULL else {"dataset": "digits", "side": 8}
RESULTS: dict[tuple, dict] = {}

SUITE = """format = 1
[suite]
name = "scaling"
version = "1"
description = "the scaling benchmark's cell"
[matrix]
datasets = [{dataset}]
partitioners = ["iid"]
seeds = [0]
clients = {registered}
participation = {participants}
rounds = {rounds}
samples = 16
sample_steps = 2
[[protocols]]
name = "fedavg"
config = {{ model = "tiny", local_steps = 1, batch_size = 8, warmup_steps = 0 }}
"""


def fedfuse_cell(tmp: Path, registered: int, participants: int) -> tuple[list[str], callable]:
    dataset = '"digits"' if DATA["dataset"] == "digits" else f'{{ name = "mnist", size = {DATA["side"]} }}'
    suite = tmp / "scaling.toml"
    suite.write_text(SUITE.format(dataset=dataset, registered=registered, participants=participants, rounds=ROUNDS))
    cli = str(Path(sys.executable).with_name("fedfuse"))

    def rounds() -> dict:
        out = subprocess.run([cli, "results", "--out", str(tmp / "out"), "--format", "json"], check=True,
                             capture_output=True, text=True).stdout
        (cell,) = json.loads(out)
        assert cell["status"] == "ok", cell["error"]
        ends = [r["elapsed_s"] for r in cell["rounds"]]
        return {"round_s": [b - a for a, b in zip([0.0, *ends], ends)], "engine_start_s": cell["metrics"]["engine_start_s"],
                "participants": [r.get("participants") for r in cell["rounds"]]}

    return [cli, "run", str(suite), "--out", str(tmp / "out")], rounds


def plain_flower(tmp: Path, registered: int, participants: int) -> tuple[list[str], callable]:
    out = tmp / "plain.json"
    command = [sys.executable, str(HERE / "plain_flower.py"), "--registered", str(registered), "--participants",
               str(participants), "--rounds", str(ROUNDS), "--dataset", DATA["dataset"], "--side", str(DATA["side"]),
               "--json", str(out)]
    return command, lambda: json.loads(out.read_text())


def peak_pss(process: subprocess.Popen, every: float = 0.5) -> callable:
    """Polls the proportional set size of ``process`` and its descendants until it ends;
    returns a function giving the peak in bytes."""
    peak = [0]

    def poll():
        root = psutil.Process(process.pid)
        while process.poll() is None:
            total = 0
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_full_info().pss
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            peak[0] = max(peak[0], total)
            time.sleep(every)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    return lambda: (thread.join(), peak[0])[1]


def measure(make, tmp: Path, registered: int, participants: int) -> dict:
    command, read = make(tmp, registered, participants)
    started = time.perf_counter()
    with open(tmp / "log.txt", "w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        peak = peak_pss(process)
        assert process.wait() == 0, (tmp / "log.txt").read_text()[-3000:]
    result = {**read(), "wall_s": time.perf_counter() - started, "peak_gb": peak() / 2**30}
    steady = result["round_s"][1:]
    return {**result, "first_round_s": result["round_s"][0], "per_round_s": statistics.median(steady),
            "per_client_s": statistics.median(steady) / participants}


@pytest.mark.slow
@pytest.mark.parametrize("registered,participants", POINTS)
# In the test run (not FULL) both sides are left to `-m long`: plain Flower's checks Flower, not
# fedfuse, and fedfuse's engine at this size is what the end-to-end tests run (participation's
# seeded draws: tests/e2e/test_participation.py); CI's time goes to those.
@pytest.mark.parametrize("engine", ["fedfuse", "plain-flower"] if FULL else
                         [pytest.param(e, marks=pytest.mark.long) for e in ("fedfuse", "plain-flower")])
def test_round_scaling(benchmark, tmp_path, engine, registered, participants):
    make = fedfuse_cell if engine == "fedfuse" else plain_flower
    result = benchmark.pedantic(lambda: measure(make, tmp_path, registered, participants), rounds=1, iterations=1)
    assert len(result["round_s"]) == ROUNDS and all(s > 0 for s in result["round_s"])
    if engine == "fedfuse" and participants < registered:  # (a round of everyone records no draw)
        assert result["participants"] == [participants] * ROUNDS  # the draw took part, no more, no fewer
    benchmark.extra_info.update({k: v for k, v in result.items() if not isinstance(v, list)})
    RESULTS[engine, registered, participants] = result
    pair = [RESULTS.get((e, registered, participants)) for e in ("fedfuse", "plain-flower")]
    if all(pair):  # both engines measured at this point (in either order): the comparison
        LINES.append(row(registered, participants, *pair))


def row(registered: int, participants: int, ours: dict, plain: dict) -> str:
    return (f"scaling {registered:>6} registered {participants:>5} per round: fedfuse {ours['per_round_s']:7.2f} s/round "
            f"({ours['per_client_s']:.3f} s/client, first {ours['first_round_s']:.1f} s, engine start "
            f"{ours['engine_start_s']:.1f} s, peak {ours['peak_gb']:.2f} GB) | plain Flower {plain['per_round_s']:7.2f} s/round "
            f"({plain['per_client_s']:.3f} s/client, first {plain['first_round_s']:.1f} s, peak {plain['peak_gb']:.2f} GB) "
            f"| ratio {ours['per_round_s'] / plain['per_round_s']:.2f}x")
