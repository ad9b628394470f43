"""Flower wiring shared by every protocol: the cell-aware ClientApp and a strategy loop."""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from flwr.clientapp import ClientApp

from fedfuse.bench.accounting import COST_KEY, CountingGrid, TrafficMeter
from fedfuse.bench.cells import CellSpec
from fedfuse.bench.services import RUN_CONFIG_KEY, client_run

IDENTIFY = "query.fedfuse_identify"
#: torch threads per ClientApp. Both engines set it (1: one core per client): a thread count
#: changes the order of float reductions, so runs compare bit for bit only at equal counts.
CLIENT_THREADS_ENV = "FEDFUSE_CLIENT_THREADS"


log = logging.getLogger("flwr")


def last_line(text: str) -> str:
    """The exception line at the end of a traceback, with Ray's wrapping stripped."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else text
    return last.removeprefix("Exception ClientAppException occurred. Message: ").strip("'<>")


class ClientFailure(RuntimeError):
    """A ClientApp raised; the message carries the client's own error."""


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
        pin_threads()
        run = client_run(context)
        # Every message measures its first step afresh. FlopCounterMode changes the last bits of
        # a backward pass, so a measured step must come at the same place in every run, however
        # the engine spreads messages over processes (Ray actors; a process per message).
        run.flops.restart()
        reply = protocol_client_app(context.run_config[RUN_CONFIG_KEY])(message, context)
        if reply.has_content():  # the harness's cost record: the FLOPs measured for this message
            reply.content[COST_KEY] = ConfigRecord(run.flops.take())  # not a MetricRecord: strategies expect one
        return reply


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


def serve(grid, run, server_loop) -> dict:
    """The harness's part of every ServerApp, in either engine: map nodes to partitions, count
    every message, then hand the grid to the protocol's server loop. Returns its metrics."""
    run.grid = CountingGrid(grid, TrafficMeter(identify_nodes(grid, run.cell.clients)))
    return server_loop(run.grid, run)


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


def check_replies(replies: Iterable[Message], expected: int, grid=None) -> list[Message]:
    """All replies, or an error naming the client that failed (or went missing). Every
    built-in protocol's policy: a synchronous round needs every client, so a failed or
    vanished client fails the cell (recorded with this error; the next cell runs)."""
    replies = list(replies)
    meter = getattr(grid, "meter", None)
    for reply in replies:
        if reply.has_error():
            reason = reply.error.reason or f"error code {reply.error.code}"
            who = meter.client_of(reply) if meter else f"node {reply.metadata.src_node_id}"
            log.error("%s failed:\n%s", who, reason)  # full trace: cell.log
            raise ClientFailure(f"{who} failed: {last_line(reason)}")
    if len(replies) < expected:
        raise ClientFailure(f"only {len(replies)} of {expected} clients replied before the timeout")
    return replies


def send_each(grid, contents: dict, message_type: str, timeout: float | None = None) -> dict:
    """One message per node (``contents[node]``: a RecordDict), every reply checked; the
    replies by node id. The custom-message pattern (``train.<action>``, ``query.<action>``)."""
    messages = [Message(content, dst_node_id=node, message_type=message_type) for node, content in contents.items()]
    replies = check_replies(grid.send_and_receive(messages, timeout=timeout), len(messages), grid)
    return {reply.metadata.src_node_id: reply for reply in replies}


def strategy_rounds(grid, run, strategy, arrays: ArrayRecord, train_config: ConfigRecord | None = None,
                    evaluate_fn=None, timeout: float = 3600) -> ArrayRecord:
    """Run ``run.cell.rounds`` rounds of a Flower strategy's train step (FedAvg, FedProx, ...).

    The same calls as ``Strategy.start``, but it stops on a failed client and reports
    each round to the harness. ``evaluate_fn(round, arrays) -> dict`` adds server-side
    figures to the round record. Returns the final arrays.
    """
    train_config = train_config or ConfigRecord()
    for rnd in range(1, run.cell.rounds + 1):
        messages = list(strategy.configure_train(rnd, arrays, train_config, grid))
        replies = check_replies(grid.send_and_receive(messages, timeout=timeout), len(messages), grid)
        arrays, metrics = strategy.aggregate_train(rnd, replies)
        figures = dict(metrics or {})
        if evaluate_fn is not None:
            figures.update(evaluate_fn(rnd, arrays))
        run.round_end(rnd, **figures)
    return arrays
