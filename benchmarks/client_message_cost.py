"""What one fedavg client message costs in process (no Ray, no network): the harness's ClientApp
called for one training step of batch 8 of the tiny UNet on digits, for many partitions, as
Flower would call it. docs/performance.md quotes it.

    .venv/bin/python benchmarks/client_message_cost.py [--clients 100] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from dataclasses import asdict

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedfuse.bench.engine.flower import CellClientApp
from fedfuse.bench.engine.services import RUN_CONFIG_KEY
from fedfuse.bench.suites.cells import CellSpec
from fedfuse.protocols.fedavg import task
from fedfuse.protocols.fedavg.plugin import FedAvgConfig


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=100)
    p.add_argument("--profile", action="store_true", help="also print where the second round's time goes")
    args = p.parse_args()
    config = asdict(FedAvgConfig(model="tiny", local_steps=1, batch_size=8, warmup_steps=0))
    cell = CellSpec("cost", "1", "fedavg", "fedavg", "2", config, "digits", {}, "iid", clients=args.clients, rounds=3)
    TaskIdentity.task_id = TaskIdentity.run_id = TaskIdentity.node_id = 1  # as run_simulation sets them
    app = CellClientApp({RUN_CONFIG_KEY: cell.to_json()})
    arrays = ArrayRecord(task.build_model((1, 8, 8), "tiny", seed=0).state_dict())
    contexts = [Context(run_id=1, node_id=i + 1, node_config={"partition-id": i, "num-partitions": args.clients},
                        state=RecordDict(), run_config={}) for i in range(args.clients)]

    def call(i: int, rnd: int) -> None:
        content = RecordDict({"arrays": arrays, "config": ConfigRecord({"server-round": rnd})})
        app(Message(content, dst_node_id=i + 1, message_type="train"), contexts[i])

    started = time.perf_counter()
    call(0, 1)
    print(f"first message in this process: {time.perf_counter() - started:.3f} s (loads the data and partitions)")
    for rnd in (1, 2):
        profiler = cProfile.Profile() if args.profile and rnd == 2 else None
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        for i in range(1, args.clients):
            call(i, rnd)
        if profiler:
            profiler.disable()
        print(f"round {rnd}: {(time.perf_counter() - started) / (args.clients - 1):.4f} s per client message")
        if profiler:
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)


if __name__ == "__main__":
    main()
