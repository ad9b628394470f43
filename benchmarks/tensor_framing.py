"""What Flower adds to a model's tensors on the wire: each preset's state dict as one ArrayRecord,
its serialized objects (what the harness's byte count sums) against the raw tensor bytes. The
README quotes it (*What it costs*).

    .venv/bin/python benchmarks/tensor_framing.py
"""

from __future__ import annotations

import numpy as np
from flwr.app import ArrayRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

from fedfuse.toolkit.models import build_unet


def framing(preset: str) -> tuple[int, int, int, int]:
    """(values, tensors, wire bytes, payload bytes) of ``preset``'s state dict (digits 8x8)."""
    state = build_unet((1, 8, 8), preset, 0).state_dict()
    record = RecordDict({"model": ArrayRecord(state)})
    wire = sum(len(obj.deflate()) for obj in get_all_nested_objects(record).values())
    payload = sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in record["model"].values())
    return sum(t.numel() for t in state.values()), len(state), wire, payload


if __name__ == "__main__":
    print("preset  values     tensors  wire B     payload B  overhead  per tensor")
    for preset in ("tiny", "small", "base"):
        values, tensors, wire, payload = framing(preset)
        print(f"{preset:7} {values:<10,} {tensors:<8} {wire:<10,} {payload:<10,} {(wire - payload) / payload:<9.1%} "
              f"{(wire - payload) / tensors:.0f} B")
