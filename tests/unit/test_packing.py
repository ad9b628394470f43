"""Packed records: a message's arrays cross as one array per record, and come back bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedfuse.bench.costs.accounting import EVAL_KEY, payload_bytes, wire_bytes
from fedfuse.bench.engine.packing import LAYOUT_KEY, PACKED, pack, packed_messages, unpack, unpacked
from fedfuse.toolkit.models import build_unet


@pytest.fixture(autouse=True)
def task_identity():
    from fedfuse.testing import SERVER_NODE, as_flower_task

    with as_flower_task(SERVER_NODE):  # a Message needs one, as in Flower's engines
        yield


def unet_content() -> tuple[dict, RecordDict]:
    state = build_unet((1, 8, 8), "tiny", seed=0).state_dict()
    extra = {"step": torch.tensor(7), "empty": torch.zeros(0, 3), "scalar": torch.tensor(0.5, dtype=torch.float64)}
    return {**state, **extra}, RecordDict({"arrays": ArrayRecord({**state, **extra}),
                                           "one": ArrayRecord({"x": Array(np.arange(3.0))}),
                                           "config": ConfigRecord({"lr": 0.1})})


def test_a_unet_crosses_as_one_array_and_comes_back_bit_for_bit():
    state, content = unet_content()
    packed = pack(content)
    assert list(packed["arrays"]) == [PACKED] and len(state) > 50
    assert packed["one"] is content["one"] and packed["config"] is content["config"]  # nothing to gain there
    back = unpack(packed)
    assert LAYOUT_KEY not in back and list(back["arrays"]) == list(state)  # names in order
    for key, tensor in back["arrays"].to_torch_state_dict().items():
        assert tensor.dtype == state[key].dtype and tensor.shape == state[key].shape
        assert torch.equal(tensor, state[key]), key
        assert back["arrays"][key].data == content["arrays"][key].data  # the very bytes Flower would send


def test_packing_keeps_the_payload_and_shrinks_the_wire():
    _, content = unet_content()
    plain = Message(content, dst_node_id=1, message_type="train")
    packed = Message(pack(content), dst_node_id=1, message_type="train")
    assert payload_bytes(packed) == payload_bytes(plain) > 0
    assert wire_bytes(packed) < wire_bytes(plain)
    assert len(get_all_nested_objects(packed)) < len(get_all_nested_objects(plain)) / 10


def test_a_content_shared_by_several_messages_is_packed_once_and_unpacking_leaves_plain_content_alone():
    _, content = unet_content()
    messages = packed_messages([Message(content, dst_node_id=n, message_type="train") for n in (1, 2)])
    assert messages[0].content is messages[1].content and LAYOUT_KEY in messages[0].content
    assert unpacked(messages[0]).content["arrays"].keys() == content["arrays"].keys()
    plain = RecordDict({"one": ArrayRecord({"x": Array(np.arange(3.0))})})
    assert pack(plain) is plain and unpack(plain) is plain
    # Evaluation-only arrays are not counted on the wire, so no layout of theirs may be either.
    scored = RecordDict({EVAL_KEY: ArrayRecord({"x0": Array(np.ones(4)), "cond": Array(np.zeros(4))})})
    assert pack(scored) is scored


def test_uncounted_traffic_is_handed_back_and_the_rounds_figures_are_kept():
    """What crosses inside ``uncounted`` is not the round's, but is measured: the harness prices a
    deployment's traffic per image with it (docs/metrics.md, client_gen_bytes)."""
    from fedfuse.bench.costs.accounting import TrafficMeter

    meter = TrafficMeter({7: 0})
    content = RecordDict({"x": ArrayRecord({"x_cut": Array(np.zeros((4, 1, 8, 8), np.float32))})})
    meter.sent(Message(content, dst_node_id=7, message_type="train"))
    before = dict(meter.clients[0])
    with meter.uncounted() as inside:
        meter.sent(Message(content, dst_node_id=7, message_type="query"))
        meter.sent(Message(content, dst_node_id=7, message_type="query"))
    assert meter.clients[0] == before and meter.messages == 1
    assert inside[0]["bytes_down"] == 2 * before["bytes_down"] and inside[0]["payload_down"] == 2 * 4 * 64 * 4
