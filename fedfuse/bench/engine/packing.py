"""One array per record on the wire: the engine packs every multi-array ``ArrayRecord`` of a
message into a single byte array, with its layout in a ``ConfigRecord``, and unpacks on arrival.

Flower moves a message as a tree of objects, each array its own object pushed and pulled on
its own; in a deployment every object is an HTTP request per hop, so a UNet's hundred arrays cost
far more than their bytes. Protocols never see packed records: the CountingGrid packs what the
server sends and unpacks replies, CellClientApp unpacks what a client receives and packs its
reply, in both engines alike. Lossless: the arrays' raw bytes, dtypes and shapes come back as
they were, so models stay bit-identical. The payload (elements x item size) is unchanged; the
wire bytes are what crosses, packed.
"""

from __future__ import annotations

import json

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedfuse.bench.costs.accounting import EVAL_KEY

LAYOUT_KEY = "fedfuse.packed"  # ConfigRecord: {record name: JSON [[key, dtype, shape], ...]}
PACKED = "packed"  # the one array of a packed record


def pack(content: RecordDict) -> RecordDict:
    """A copy of ``content`` with each multi-array record as one uint8 array (records shared, not copied)."""
    if LAYOUT_KEY in content:
        return content
    packed, layout = RecordDict(), {}
    for name, record in content.items():
        # Evaluation-only records (EVAL_KEY) stay as they are: they are left out of the wire
        # count, and a layout for them in the counted record would count them after all.
        if isinstance(record, ArrayRecord) and len(record) > 1 and name != EVAL_KEY:
            arrays = {key: array.numpy() for key, array in record.items()}
            layout[name] = json.dumps([[key, a.dtype.str, list(a.shape)] for key, a in arrays.items()])
            record = ArrayRecord({PACKED: Array(np.frombuffer(b"".join(a.tobytes() for a in arrays.values()), np.uint8))})
        packed[name] = record
    if layout:
        packed[LAYOUT_KEY] = ConfigRecord(layout)
    return packed if layout else content


def unpack(content: RecordDict) -> RecordDict:
    """``content`` as it was before ``pack``."""
    if LAYOUT_KEY not in content:
        return content
    layout, unpacked = content[LAYOUT_KEY], RecordDict()
    for name, record in content.items():
        if name == LAYOUT_KEY:
            continue
        unpacked[name] = unpack_record(record, json.loads(layout[name])) if name in layout else record
    return unpacked


def unpack_record(record: ArrayRecord, layout: list) -> ArrayRecord:
    buffer, offset, arrays = record[PACKED].numpy().tobytes(), 0, {}
    for key, dtype, shape in layout:
        count = int(np.prod(shape, dtype=np.int64))
        arrays[key] = Array(np.frombuffer(buffer, np.dtype(dtype), count=count, offset=offset).reshape(shape))
        offset += count * np.dtype(dtype).itemsize
    return ArrayRecord(arrays)


def packed_messages(messages: list[Message]) -> list[Message]:
    """Each message with packed content; a content shared by several messages is packed once."""
    done: dict[int, RecordDict] = {}
    for message in messages:
        if message.has_content():
            key = id(message.content)
            if key not in done:
                done[key] = pack(message.content)
            message.content = done[key]
    return messages


def unpacked(message: Message) -> Message:
    if message.has_content():
        message.content = unpack(message.content)
    return message
