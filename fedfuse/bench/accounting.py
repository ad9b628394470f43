"""Bytes on the wire, counted where messages cross: a Grid wrapper every protocol is handed.

The size of a message is what Flower pushes for it: the serialized ("deflated") bytes of
the message and every object nested in it (records, arrays, array chunks). A protocol
never counts its own traffic, so none can count in its own favour.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from flwr.app import Message
from flwr.serverapp import Grid
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects


def wire_bytes(message: Message) -> int:
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(message).values())


class TrafficMeter:
    """Per-client byte and message counters for the round in progress."""

    def __init__(self):
        self._down: dict[int, int] = defaultdict(int)
        self._up: dict[int, int] = defaultdict(int)
        self._messages = 0

    def sent(self, message: Message) -> None:
        self._down[message.metadata.dst_node_id] += wire_bytes(message)
        self._messages += 1

    def received(self, message: Message) -> None:
        self._up[message.metadata.src_node_id] += wire_bytes(message)
        self._messages += 1

    def take_round(self) -> dict:
        """The figures since the last call, then reset: the round's traffic."""
        nodes = sorted(set(self._down) | set(self._up))
        figures = {
            "bytes_down": sum(self._down.values()),
            "bytes_up": sum(self._up.values()),
            "messages": self._messages,
            "per_client": {str(n): {"bytes_down": self._down[n], "bytes_up": self._up[n]} for n in nodes},
        }
        self.__init__()
        return figures


class CountingGrid(Grid):
    """A Grid that forwards to Flower's and counts every message both ways."""

    def __init__(self, inner: Grid, meter: TrafficMeter):
        self._inner = inner
        self.meter = meter

    def set_run(self, run) -> None:
        self._inner.set_run(run)

    @property
    def run(self):
        return self._inner.run

    def create_message(self, *args, **kwargs) -> Message:
        return self._inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        return self._inner.get_node_ids()

    # Outgoing messages are measured after Flower has stamped their ids, as they travel.
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = list(messages)
        ids = list(self._inner.push_messages(messages))
        for message in messages:
            self.meter.sent(message)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._inner.pull_messages(message_ids))
        for reply in replies:
            self.meter.received(reply)
        return replies

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages = list(messages)
        replies = list(self._inner.send_and_receive(messages, timeout=timeout))
        for message in messages:
            self.meter.sent(message)
        for reply in replies:
            self.meter.received(reply)
        return replies
