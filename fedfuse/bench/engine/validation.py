"""Every client reply is checked where messages cross (the counting Grid), before a protocol
or a Flower strategy uses it: a hostile or broken client fails its cell with an error naming
it, instead of being averaged in (numpy would broadcast a wrong shape; NaN would poison the
model and fail only at scoring).

Checked: the arrays' values are finite; an ``ArrayRecord`` the reply shares a name with the
server's message (a model sent and returned, as FedAvg does) has the same keys, shapes and
dtypes; the reply's tensor payload is at most ``FEDFUSE_MAX_REPLY_MB`` (default 1024).
"""

from __future__ import annotations

import os

import numpy as np
from flwr.app import RecordDict

DEFAULT_MAX_MB = 1024


class BadReply(RuntimeError):
    """A client's reply is malformed; the message names the client, the record and the key."""


def max_reply_bytes() -> int:
    return int(float(os.environ.get("FEDFUSE_MAX_REPLY_MB", DEFAULT_MAX_MB)) * 2**20)


def check_reply(reply: RecordDict, sent: RecordDict | None, who: str, limit: int | None = None) -> None:
    limit = max_reply_bytes() if limit is None else limit
    total = 0
    for name, record in reply.array_records.items():
        expected = sent.array_records.get(name) if sent is not None else None
        if expected is not None and sorted(expected) != sorted(record):
            missing, extra = sorted(set(expected) - set(record)), sorted(set(record) - set(expected))
            raise BadReply(f"{who} returned '{name}' with missing keys {missing[:3]} / unexpected keys {extra[:3]}")
        for key, array in record.items():
            total += check_array(array, expected[key] if expected is not None else None, f"{who}: '{name}/{key}'")
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
