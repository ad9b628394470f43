"""Round helpers for a protocol's server loop: send, check every reply, report the round.

A synchronous round needs every client: a failed or vanished client fails the cell with an
error naming it (the next cell runs). Protocols reach these through ``fedfuse.api``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp.exception import InconsistentMessageReplies

log = logging.getLogger("flwr")


def last_line(text: str) -> str:
    """The exception line at the end of a traceback, with Ray's wrapping stripped."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    last = lines[-1] if lines else text
    return last.removeprefix("Exception ClientAppException occurred. Message: ").strip("'<>")


class ClientFailure(RuntimeError):
    """A ClientApp raised: the message names the client and its error's last line;
    ``detail`` holds the client's whole traceback (the harness writes it to error.txt)."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail


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
            raise ClientFailure(f"{who} failed: {last_line(reason)}", detail=reason)
    dropped = getattr(grid, "dropped_last", 0)  # bad or late replies the suite chose to drop, not wait for
    if dropped and not replies:
        late = getattr(grid, "late_last", 0)
        why = "missed the suite's deadline_s" if late == dropped else "was dropped as malformed or late"
        raise ClientFailure(f"every client's reply {why} ({dropped}); see the round's per-client latency_s")
    if len(replies) < expected - dropped:
        raise ClientFailure(f"only {len(replies)} of {expected} clients replied before the timeout")
    return replies


def odd_replies(replies: list[Message], grid=None) -> str:
    """The clients whose replies' record names differ from most clients'."""
    shapes = [(sorted(r.content.array_records), sorted(r.content.metric_records)) for r in replies]
    common = max(shapes, key=shapes.count)
    meter = getattr(grid, "meter", None)
    odd = [meter.client_of(r) if meter else f"node {r.metadata.src_node_id}" for r, s in zip(replies, shapes)
           if s != common]
    return ", ".join(odd) or "a client"


def last_trained(rounds: list[dict]) -> dict:
    """The last round record with a ``train_loss``: rounds in which nobody was online have none."""
    trained = [r for r in rounds if "train_loss" in r]
    if not trained:
        raise ClientFailure("no client was online in any round (the profile's availability): nothing was trained")
    return trained[-1]


def send_each(grid, contents: dict, message_type: str, timeout: float | None = None) -> dict:
    """One message per node (``contents[node]``: a RecordDict), every reply checked; the
    replies by node id. The custom-message pattern (``train.<action>``, ``query.<action>``)."""
    messages = [Message(content, dst_node_id=node, message_type=message_type) for node, content in contents.items()]
    replies = check_replies(grid.send_and_receive(messages, timeout=timeout), len(messages), grid)
    return {reply.metadata.src_node_id: reply for reply in replies}


def fedavg_family(aggregator: str = "mean", trim: float = 0.2, **options):
    """A FedAvg-family strategy of Flower's: ``mean`` (FedAvg, weighted by examples), ``median``
    (FedMedian: coordinate-wise) or ``trimmed-mean`` (FedTrimmedAvg: per coordinate, the mean of
    what is left after cutting a ``trim`` share of the clients from each end). The robust two
    bound what one client can do to a coordinate, at the price of ignoring example counts."""
    from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg

    if aggregator == "trimmed-mean":
        return FedTrimmedAvg(beta=trim, **options)
    return {"mean": FedAvg, "median": FedMedian}[aggregator](**options)


def strategy_rounds(grid, run, strategy, arrays: ArrayRecord, train_config: ConfigRecord | None = None,
                    evaluate_fn=None, timeout: float = 3600) -> ArrayRecord:
    """Run ``run.cell.rounds`` rounds of a Flower strategy's train step (FedAvg, FedProx, ...).

    The same calls as ``Strategy.start``, but it stops on a failed client and reports
    each round to the harness. ``evaluate_fn(round, arrays) -> dict`` adds server-side
    figures to the round record. Returns the final arrays.
    """
    train_config = train_config or ConfigRecord()
    for rnd in range(1, run.cell.rounds + 1):
        if not run.begin_round(rnd):  # the round's participants (the strategy samples from them): nobody online
            run.round_end(rnd)
            continue
        messages = list(strategy.configure_train(rnd, arrays, train_config, grid))
        replies = check_replies(grid.send_and_receive(messages, timeout=timeout), len(messages), grid)
        before = arrays
        try:
            arrays, metrics = strategy.aggregate_train(rnd, replies)
        except InconsistentMessageReplies as err:  # Flower says they differ, not who differs
            raise ClientFailure(f"{odd_replies(replies, grid)} replied with records unlike the others': {err}") from None
        if run.cell.dp.get("level") == "client":  # the harness's DP-FedAvg (privacy.py)
            arrays = run.privacy.client_mean(rnd, before, replies, arrays, strategy)
        figures = dict(metrics or {})
        if evaluate_fn is not None:
            figures.update(evaluate_fn(rnd, arrays))
        run.round_end(rnd, **figures)
    return arrays
