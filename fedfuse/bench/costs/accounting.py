"""Bytes on the wire, counted where messages cross (the engine's CountingGrid calls the meter).

The wire size of a message is what Flower pushes for it: the serialized ("deflated") bytes
of the message and every object nested in it (records, arrays, array chunks). The logical
payload is the tensor data it carries (elements x item size), or the size a protocol
declares for a packed format (``MetricRecord({"logical_bytes": n})`` under ``PAYLOAD_KEY``).
Clients' FLOPs arrive in the harness's record ``COST_KEY`` on each reply (see flower.py).
A protocol never counts its own traffic, so none can count in its own favour. What it can do
is mark traffic as evaluation (``EVAL_KEY``, ``run.uncounted()``), which is then left out of
every figure: the harness trusts that mark, so a protocol's use of it is for its reviewers to
read (the built-ins mark only what the harness scores).
"""

from __future__ import annotations

from collections import defaultdict
from contextlib import contextmanager

import numpy as np
from flwr.app import Message
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

PAYLOAD_KEY = "fedfuse.payload"
COST_KEY = "fedfuse.cost"
#: results handed to the harness only for scoring (e.g. generated images that in a deployment
#: would stay on the client): not the protocol's traffic, so neither wire nor payload counts them.
EVAL_KEY = "fedfuse.eval"
FIELDS = ("bytes_down", "bytes_up", "payload_down", "payload_up", "flops_train", "flops_sample", "train_examples")


def wire_bytes(message: Message) -> int:
    objects = get_all_nested_objects(message)
    if message.has_content() and EVAL_KEY in message.content:
        for object_id in get_all_nested_objects(message.content[EVAL_KEY]):
            objects.pop(object_id, None)
    return sum(len(obj.deflate()) for obj in objects.values())


def payload_bytes(message: Message) -> int:
    if not message.has_content():
        return 0
    content = message.content
    if PAYLOAD_KEY in content:
        return int(content[PAYLOAD_KEY]["logical_bytes"])
    return sum(int(np.prod(arr.shape)) * np.dtype(arr.dtype).itemsize
               for key, record in content.array_records.items() if key != EVAL_KEY for arr in record.values())


class TrafficMeter:
    """Per-client (partition id) bytes, payload and reported FLOPs for the round in progress."""

    def __init__(self, partition_of: dict[int, int] | None = None):
        self.partition_of = partition_of or {}
        self.sent_to: dict[str, int] = {}  # message id -> destination node, to place error replies
        self.reset()

    def reset(self) -> None:
        self.clients: dict[int, dict[str, float]] = defaultdict(lambda: dict.fromkeys(FIELDS, 0))
        self.messages = 0
        self.exchanges, self.exchange_s = 0, 0.0  # send_and_receive calls and their wall time

    def _client(self, node_id: int) -> dict:
        return self.clients[self.partition_of.get(node_id, node_id)]

    def node_of(self, reply: Message) -> int:
        """The client node a reply concerns: its sender, or, for an error the SuperLink
        issued in a node's place (e.g. node unavailable), the node the request went to."""
        return self.sent_to.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)

    def client_of(self, reply: Message) -> str:
        node = self.node_of(reply)
        return f"client {self.partition_of[node]} (node {node})" if node in self.partition_of else f"node {node}"

    def sent(self, message: Message) -> None:
        self.sent_to[message.metadata.message_id] = message.metadata.dst_node_id
        client = self._client(message.metadata.dst_node_id)
        client["bytes_down"] += wire_bytes(message)
        client["payload_down"] += payload_bytes(message)
        self.messages += 1

    def received(self, message: Message) -> None:
        client = self._client(self.node_of(message))
        client["bytes_up"] += wire_bytes(message)
        client["payload_up"] += payload_bytes(message)
        if message.has_content() and COST_KEY in message.content:
            for key, value in message.content[COST_KEY].items():
                client[key] = client.get(key, 0) + value
        self.messages += 1

    @contextmanager
    def uncounted(self):
        """Whatever crosses inside is evaluation, not the protocol's: the round's figures are
        put back as they were on leaving (bytes, payload, client FLOPs, messages, exchanges).
        Yields a dict that, on leaving, holds what crossed inside: {partition id: figures}."""
        saved, inside = ({k: dict(v) for k, v in self.clients.items()}, self.messages, self.exchanges,
                         self.exchange_s), {}
        try:
            yield inside
        finally:
            inside.update({pid: {k: v - saved[0].get(pid, {}).get(k, 0) for k, v in figures.items()}
                           for pid, figures in self.clients.items()})
            self.reset()
            self.clients.update(saved[0])
            self.messages, self.exchanges, self.exchange_s = saved[1:]

    def drop(self, node_id: int) -> None:
        """The client's reply was left out of this round (the suite's ``bad_replies = "drop"``)."""
        self._client(node_id)["dropped"] = 1

    def mark_late(self, node_id: int) -> None:
        """The client missed the round's deadline: its reply was left out (costed up to the deadline)."""
        self._client(node_id)["late"] = 1

    def client_figures(self, node_id: int) -> dict:
        """The round's figures so far of the client a node serves."""
        return self._client(node_id)

    def take_round(self) -> tuple[dict[int, dict], dict]:
        """({partition id: figures}, {messages, exchanges, exchange_s}) since the last call, then reset."""
        counts = {"messages": self.messages, "exchanges": self.exchanges, "exchange_s": self.exchange_s}
        out = ({k: dict(v) for k, v in sorted(self.clients.items())}, counts)
        self.reset()
        return out
