"""The Grid every protocol is handed: Flower's, with every message counted and every reply checked."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable

from flwr.app import Error, Message, RecordDict
from flwr.common.constant import ErrorCode
from flwr.serverapp import Grid

from fedfuse.bench.costs.accounting import TrafficMeter
from fedfuse.bench.engine.packing import packed_messages, unpacked
from fedfuse.bench.engine.validation import BadReply, ReplyPolicy

log = logging.getLogger("flwr")
# How often a round asks the SuperLink for replies in a deployment. Flower's HttpGrid waits a
# hard-coded 3 s between pulls, half of which a reply pays on average; a pull is one small
# request. The simulation's grid keeps its own `pull_interval` (0.1 s).
PULL_INTERVAL_S = 0.02
_FAIL_ROUND: list[int] = []  # set by inject_client_failure: the round a client's reply fails in


@contextlib.contextmanager
def inject_client_failure(round: int):
    """In cells run here, the first reply (by client) of round ``round`` reaches the protocol
    as the error Flower delivers for a ClientApp that raised: the conformance check's rule
    that a failed client fails the cell by name."""
    _FAIL_ROUND.append(round)
    try:
        yield
    finally:
        _FAIL_ROUND.pop()


class CountingGrid(Grid):
    """A Grid that forwards to Flower's and counts every message both ways."""

    def __init__(self, inner: Grid, meter: TrafficMeter, policy: ReplyPolicy | None = None,
                 misses_deadline: Callable[[int, dict], bool] | None = None):
        self._inner = inner
        self.meter = meter
        self.policy = policy or ReplyPolicy()
        # (partition, its round figures so far) -> whether its simulated latency exceeds the
        # suite's deadline_s: then its training reply is left out, as a straggler's would be
        self.misses_deadline = misses_deadline
        self.dropped_last = 0  # replies of the last send_and_receive left out ("drop" policy or deadline)
        self.active: list[int] | None = None  # this round's participants (ServerRun.begin_round), else all
        self.late_last = 0  # of those, the ones that missed the deadline
        self.round: int | None = None  # the round begun last (ServerRun.begin_round)
        self.fail_round = _FAIL_ROUND[-1] if _FAIL_ROUND else None  # see inject_client_failure
        self._sent: dict[str, Message] = {}  # messages by id, while a failure is to be injected

    def set_run(self, run) -> None:
        self._inner.set_run(run)

    @property
    def run(self):
        return self._inner.run

    def create_message(self, *args, **kwargs) -> Message:
        return self._inner.create_message(*args, **kwargs)

    def get_node_ids(self) -> Iterable[int]:
        """The cell's nodes, one per partition (in a deployment the SuperLink may also list
        other or stale nodes, which the harness's handshake left out); during a round with
        partial participation, only the round's participants."""
        return list(self.meter.partition_of) if self.active is None else list(self.active)

    # Outgoing messages are measured after Flower has stamped their ids, as they travel.
    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        messages = packed_messages(list(messages))
        ids = list(self._inner.push_messages(messages))
        for message in messages:
            self.meter.sent(message)
            if self.fail_round is not None:
                self._sent[message.metadata.message_id] = message
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        replies = list(self._inner.pull_messages(message_ids))
        for reply in replies:
            self.meter.received(reply)
        return self._failing([unpacked(reply) for reply in replies])

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        messages, started = list(messages), time.perf_counter()
        contents = [m.content if m.has_content() else None for m in messages]  # as the protocol wrote them
        # Inner push/pull, not this grid's: counting (which deflates every message) stays outside
        # the timed exchange, as before, so exchange_s is the engine's and the clients' time.
        replies = self._exchange(packed_messages(messages), timeout)
        self.meter.exchanges += 1  # one exchange: the engine's round trip plus the clients' work
        self.meter.exchange_s += time.perf_counter() - started
        for message in messages:
            self.meter.sent(message)
        sent = {m.metadata.message_id: content for m, content in zip(messages, contents)}
        self._sent.update({m.metadata.message_id: m for m in messages} if self.fail_round is not None else {})
        for reply in replies:
            self.meter.received(reply)
        # By client, not in the order they came back: a protocol that sums replies (FedAvg) then
        # adds floats in the same order in every run and in both engines.
        replies = self._failing([unpacked(r) for r in sorted(replies, key=self._partition_of)])
        kept = [r for r in replies if r.has_error() or self._acceptable(r, sent.get(r.metadata.reply_to_message_id))]
        on_time = [r for r in kept if r.has_error() or not self._late(r)]
        self.dropped_last, self.late_last = len(replies) - len(on_time), len(kept) - len(on_time)
        return on_time

    def _failing(self, replies: list[Message]) -> list[Message]:
        """``replies``, the first one's made an error if a failure is due (inject_client_failure)."""
        if self.fail_round is None or self.round != self.fail_round or not replies:
            return replies
        first, self.fail_round = replies[0], None
        reason = f"injected failure of client {self._partition_of(first)} in round {self.round} (the conformance check)"
        failed = Message(Error(code=ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason=reason),
                         reply_to=self._sent[first.metadata.reply_to_message_id])
        return [failed, *replies[1:]]

    def _partition_of(self, reply: Message) -> int:
        node = self.meter.node_of(reply)
        return self.meter.partition_of.get(node, node)

    def _exchange(self, messages: list[Message], timeout: float | None) -> list[Message]:
        """Flower's send_and_receive (push, then pull until every reply is in or the timeout
        passes), polling at the engine's own interval if it has one, else PULL_INTERVAL_S."""
        interval = getattr(self._inner, "pull_interval", PULL_INTERVAL_S)
        waiting = set(self._inner.push_messages(messages))
        end, replies = time.time() + (timeout or 0.0), []
        while timeout is None or time.time() < end:
            pulled = list(self._inner.pull_messages(waiting))
            replies += pulled
            waiting -= {reply.metadata.reply_to_message_id for reply in pulled}
            if not waiting:
                break
            time.sleep(interval)
        return replies

    def _late(self, reply: Message) -> bool:
        """A training reply whose client's simulated round latency exceeds the deadline: marked
        late (costed up to the deadline) and left out of the round."""
        if self.misses_deadline is None or not reply.metadata.message_type.startswith("train"):
            return False
        node = self.meter.node_of(reply)
        late = self.misses_deadline(self.meter.partition_of.get(node, node), self.meter.client_figures(node))
        if late:
            self.meter.mark_late(node)
        return late

    def _acceptable(self, reply: Message, sent: RecordDict | None) -> bool:
        """Check a reply; a bad one fails the cell, or is dropped (and recorded) under "drop"."""
        node = self.meter.node_of(reply)
        try:
            self.policy.check(reply.content, sent, self.meter.client_of(reply),
                              self.meter.partition_of.get(node))
        except BadReply as err:
            if not self.policy.drop:
                raise
            log.warning("dropped from this round: %s", err)
            self.meter.drop(node)
            return False
        return True
