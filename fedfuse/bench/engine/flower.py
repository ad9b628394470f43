"""Flower wiring shared by every protocol: the cell-aware ClientApp and the node handshake."""

from __future__ import annotations

import functools
import os
import time

from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.bench.costs.accounting import COST_KEY, TrafficMeter
from fedfuse.bench.engine.grid import CountingGrid
from fedfuse.bench.engine import scoring
from fedfuse.bench.engine.packing import packed_messages, unpacked
from fedfuse.bench.engine.services import RUN_CONFIG_KEY, client_run, load_client_data
from fedfuse.bench.engine.validation import ReplyPolicy
from fedfuse.bench.suites.cells import CellSpec
from fedfuse.bench.engine.rounds import ClientFailure, check_replies  # noqa: F401 (check_replies: engine API)

IDENTIFY = "query.fedfuse_identify"
#: torch threads per ClientApp. Both engines set it (1: one core per client): a thread count
#: changes the order of float reductions, so runs compare bit for bit only at equal counts.
CLIENT_THREADS_ENV = "FEDFUSE_CLIENT_THREADS"
#: run config key: serve every message in a process of its own (the conformance check's state rule)
FRESH_PROCESS_KEY = "fedfuse-fresh-process"


class CellClientApp(ClientApp):
    """Serves any cell: finds the cell in the run config, and its protocol's ClientApp.

    Under ``flwr run`` (deployment) the cell arrives as run config; the simulation passes
    ``run_config`` here because ``run_simulation`` has no run config of its own.
    """

    def __init__(self, run_config: dict | None = None):
        super().__init__()
        self._run_config = dict(run_config or {})

    def __call__(self, message: Message, context: Context) -> Message:
        if self._run_config:  # Flower forbids editing run_config; share `state` so it persists
            context = Context(run_id=context.run_id, node_id=context.node_id, node_config=context.node_config,
                              state=context.state, run_config={**context.run_config, **self._run_config})
        if message.metadata.message_type == IDENTIFY:
            return Message(RecordDict({"fedfuse": ConfigRecord(
                {"partition-id": int(context.node_config["partition-id"])})}), reply_to=message)
        if context.run_config.get(FRESH_PROCESS_KEY):
            load_client_data(context)  # the harness's data, shared with the children as they fork
            protocol_client_app(context.run_config[RUN_CONFIG_KEY])  # imported, not run
            return in_fresh_process(serve_message, message, context)
        return serve_message(message, context)


def serve_message(message: Message, context: Context) -> Message:
    """The protocol's ClientApp on one message, its FLOPs added to the reply."""
    pin_threads()
    run = client_run(context)
    # Every message measures its first step afresh. FlopCounterMode changes the last bits of
    # a backward pass, so a measured step must come at the same place in every run, however
    # the engine spreads messages over processes (Ray actors; a process per message).
    run.flops.restart()
    reply = protocol_client_app(context.run_config[RUN_CONFIG_KEY])(unpacked(message), context)
    if reply.has_content():  # the harness's cost record: the FLOPs measured for this message
        # not a MetricRecord: strategies expect one
        reply.content[COST_KEY] = ConfigRecord({**run.flops.take(), "train_examples": run.flops.take_examples(),
                                                 **run.take_dp()})
    return packed_messages([reply])[0]


def in_fresh_process(serve, message: Message, context: Context) -> Message:
    """``serve(message, context)`` in a child forked from this process, which has run no client
    code (the conformance check's fresh actors): each message starts from the modules as
    imported, as under Flower's process isolation. What the client keeps in ``context.state``
    comes back; anything it keeps elsewhere (a module global, the harness's cache) is lost."""
    import multiprocessing
    import pickle

    receive, send = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(target=_serve_child, args=(serve, message, context, send))
    child.start()
    send.close()
    try:
        outcome = pickle.loads(receive.recv_bytes())
    except EOFError:
        outcome = ("error", f"the client's process ended without a reply (exit code {child.join() or child.exitcode})")
    child.join()
    if outcome[0] == "error":
        raise RuntimeError(outcome[1])
    reply, state = outcome[1]
    context.state.clear()
    context.state.update(state)
    return reply


def _serve_child(serve, message: Message, context: Context, send) -> None:
    import pickle
    import traceback

    try:
        outcome = ("ok", (serve(message, context), context.state))
    except Exception:  # noqa: BLE001 - reported to the parent, which raises it as the client's error
        outcome = ("error", traceback.format_exc())
    send.send_bytes(pickle.dumps(outcome))
    send.close()


def pin_threads() -> None:
    import torch

    threads = int(os.environ.get(CLIENT_THREADS_ENV, "0"))
    if threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


@functools.lru_cache(maxsize=8)
def protocol_client_app(cell_json: str) -> ClientApp:
    from fedfuse.plugins.manager import registry

    protocol = CellSpec.from_json(cell_json).protocol
    return registry().get("protocols", protocol).load_client_app()


def serve(grid, run, server_loop, node_partitions=None) -> dict:
    """The harness's part of every ServerApp, in either engine: map nodes to partitions, count
    every message, then hand the grid to the protocol's server loop, then score what it deployed. Returns its metrics, with
    ``engine_start_s``: the time until the engine is up and the node map known.
    ``node_partitions`` (the simulation's: it registers the nodes itself) returns that map once its
    actors are up; without it every node is asked (deployment: each node's first answer)."""
    started = time.perf_counter()
    if node_partitions is not None:
        nodes = node_partitions(run.cell.clients)
    else:
        nodes = identify_nodes(grid, run.cell.clients)
    engine_start_s = time.perf_counter() - started
    run.grid = CountingGrid(grid, TrafficMeter(nodes), ReplyPolicy.for_run(run),
                            run.misses_deadline if run.cell.deadline_s else None)
    metrics = server_loop(run.grid, run)
    # the server's training after its last round_end still counts against a track's budget
    late = {"late_train_examples": float(run.flops.take_examples())}
    # the harness, not the protocol, scores what the protocol deployed (run.deploy)
    return {**metrics, **late, **scoring.evaluate(run, run.deployment), "engine_start_s": engine_start_s}


def identify_nodes(grid, expected: int, timeout: float = 300) -> dict[int, int]:
    """{node id: partition id} of the SuperNodes serving partitions 0..expected-1 (harness
    control traffic, not counted as the protocol's). Waits until each partition has answered;
    nodes that cannot answer (a SuperNode gone, not yet dropped by the SuperLink) are left out."""
    deadline = time.time() + timeout
    while True:
        found = ask_partitions(grid, timeout)
        by_partition: dict[int, list[int]] = {}
        for node, partition in found.items():
            if partition < expected:  # a node for another federation size serves no client here
                by_partition.setdefault(partition, []).append(node)
        if clash := {p: n for p, n in by_partition.items() if len(n) > 1}:
            raise ClientFailure(f"several SuperNodes serve the same partition: {clash}")
        if sorted(by_partition) == list(range(expected)):
            return {nodes[0]: partition for partition, nodes in by_partition.items()}
        if time.time() > deadline:
            raise ClientFailure(f"SuperNodes for partitions 0..{expected - 1} did not all answer within "
                                f"{timeout:.0f} s; answered: {sorted(by_partition)}")
        time.sleep(1.0)


def ask_partitions(grid, timeout: float) -> dict[int, int]:
    node_ids = list(grid.get_node_ids())
    messages = [Message(RecordDict(), dst_node_id=n, message_type=IDENTIFY) for n in node_ids]
    replies = grid.send_and_receive(messages, timeout=timeout) if messages else []
    return {r.metadata.src_node_id: int(r.content["fedfuse"]["partition-id"]) for r in replies if not r.has_error()}
