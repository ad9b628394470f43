"""Every client reply is checked where messages cross (the counting Grid), before a protocol
or a Flower strategy uses it: a hostile or broken client fails its cell with an error naming
it, instead of being averaged in (numpy would broadcast a wrong shape; NaN would poison the
model and fail only at scoring).

Checked: the arrays' values are finite; an ``ArrayRecord`` the reply shares a name with the
server's message (a model sent and returned, as FedAvg does) has the same keys, shapes and
dtypes, and moves at most ``max_update_ratio`` times the sent model's norm (or 1) from it (a
scaled model, e.g. every weight x 1e30, is finite but would wreck the average: the client that
sent it is named, not the honest ones whose training fails a round later); the reply's tensor
payload is at most ``FEDFUSE_MAX_REPLY_MB`` (default 1024); a
``num-examples`` metric is a whole number between 1 and the client's partition size; and the
protocol's own schema for its custom records (``ProtocolSpec.reply_check``), if it has one.

What happens to a bad reply is the suite's ``bad_replies``: "fail" (default) fails the cell;
"drop" leaves that client out of the round and records it (``dropped`` in the round's
per-client figures; the reason in cell.log).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from flwr.app import RecordDict

DEFAULT_MAX_MB = 1024
DEFAULT_MAX_UPDATE_RATIO = 100.0


class BadReply(RuntimeError):
    """A client's reply is malformed; the message names the client, the record and the key."""


def max_reply_bytes() -> int:
    return int(float(os.environ.get("FEDFUSE_MAX_REPLY_MB", DEFAULT_MAX_MB)) * 2**20)


@dataclass
class ReplyPolicy:
    """How the counting grid checks a cell's replies, and what it does with a bad one."""

    sizes: dict[int, int] = field(default_factory=dict)  # partition id -> training images
    schema: Callable[..., None] | None = None  # the protocol's reply_check(sent, reply, config)
    config: Any = None
    drop: bool = False  # "drop": leave a bad client out of the round instead of failing the cell
    limit: int = field(default_factory=max_reply_bytes)
    max_update_ratio: float = DEFAULT_MAX_UPDATE_RATIO

    @classmethod
    def for_run(cls, run) -> "ReplyPolicy":
        from fedfuse.bench.suites.cells import cell_partitions

        sizes = {p: len(ix) for p, ix in enumerate(cell_partitions(run.cell))}
        return cls(sizes, run.reply_check, run.config, run.cell.bad_replies == "drop",
                   max_update_ratio=run.max_update_ratio)

    def check(self, reply: RecordDict, sent: RecordDict | None, who: str, partition: int | None) -> None:
        """Raise ``BadReply`` naming ``who`` for anything wrong with the reply: whatever a
        malformed reply makes a check raise is the client's fault, not the harness's."""
        try:
            check_reply(reply, sent, who, self.limit, self.sizes.get(partition), self.max_update_ratio)
            if self.schema is not None and sent is not None:
                self.schema(sent, reply, self.config)
        except BadReply:
            raise
        except Exception as err:  # noqa: BLE001 — the schema's ValueError, or a record too broken to read
            raise BadReply(f"{who}: {err}") from None


def check_reply(reply: RecordDict, sent: RecordDict | None, who: str, limit: int | None = None,
                max_examples: int | None = None, max_update_ratio: float = DEFAULT_MAX_UPDATE_RATIO) -> None:
    limit = max_reply_bytes() if limit is None else limit
    check_examples(reply, who, max_examples)
    total = 0
    for name, record in reply.array_records.items():
        expected = sent.array_records.get(name) if sent is not None else None
        if expected is not None and sorted(expected) != sorted(record):
            missing, extra = sorted(set(expected) - set(record)), sorted(set(record) - set(expected))
            raise BadReply(f"{who} returned '{name}' with missing keys {missing[:3]} / unexpected keys {extra[:3]}")
        for key, array in record.items():
            total += check_array(array, expected[key] if expected is not None else None, f"{who}: '{name}/{key}'")
        if expected is not None:
            check_update_size(record, expected, f"{who}: '{name}'", max_update_ratio)
    if total > limit:
        raise BadReply(f"{who} sent {total / 2**20:.1f} MiB of arrays, over the limit of {limit / 2**20:.0f} MiB "
                       "(FEDFUSE_MAX_REPLY_MB)")


def check_array(array, expected, where: str) -> int:
    if expected is not None and (tuple(array.shape) != tuple(expected.shape) or array.dtype != expected.dtype):
        raise BadReply(f"{where} has shape {tuple(array.shape)} and dtype {array.dtype}; the server sent "
                       f"{tuple(expected.shape)} {expected.dtype}")
    values = array.numpy()
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise BadReply(f"{where} holds {int((~np.isfinite(values)).sum())} non-finite values (NaN or inf)")
    return values.nbytes


def check_update_size(record, expected, where: str, max_ratio: float) -> None:
    """A returned model moves at most ``max_ratio`` times the sent model's norm (or 1) from it."""
    moved = sent_norm = 0.0
    for key, array in record.items():
        new, old = array.numpy(), expected[key].numpy()
        if new.dtype.kind == "f":
            moved += float(np.square(new.astype(np.float64) - old).sum())
            sent_norm += float(np.square(old.astype(np.float64)).sum())
    moved, bound = math.sqrt(moved), max_ratio * max(math.sqrt(sent_norm), 1.0)
    if moved > bound:
        raise BadReply(f"{where} moved {moved:.3g} from the model the server sent (norm {math.sqrt(sent_norm):.3g}), "
                       f"over the bound of {bound:.3g} (max_update_ratio = {max_ratio:g})")


def check_examples(reply: RecordDict, who: str, max_examples: int | None) -> None:
    """``num-examples`` weights a client in FedAvg: a whole number in [1, its partition size]."""
    for name, record in reply.metric_records.items():
        if "num-examples" in record:
            n = record["num-examples"]
            bad = not isinstance(n, (int, float)) or not math.isfinite(n) or n != int(n) or n < 1
            if bad or (max_examples is not None and n > max_examples):
                raise BadReply(f"{who}: '{name}/num-examples' is {n!r}; it must be a whole number from 1 to the "
                               f"client's {max_examples if max_examples is not None else 'partition'} training images")
