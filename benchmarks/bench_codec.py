"""Codec throughput: encode + decode of a 10 M-element float32 tensor at 2, 4 and 8 bits, beside
``torch.clone`` of the same tensor (the memory-bandwidth reference)."""

import numpy as np
import pytest
import torch
from benchutil import FULL, PAIRS, record

from fedfuse.toolkit import quantization

N = 10_000_000 if FULL else 10_000
DATA = np.random.default_rng(0).standard_normal(N).astype(np.float32)
PAIRS += [(f"codec {b}-bit encode+decode / torch.clone", f"codec_{b}", "clone") for b in (2, 4, 8)]


def test_clone_reference(benchmark):
    tensor = torch.from_numpy(DATA)
    benchmark.pedantic(tensor.clone, rounds=10, iterations=1)
    record(benchmark, "clone")


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_codec_round_trip(benchmark, bits):
    rng = np.random.default_rng(1)
    out = benchmark.pedantic(lambda: quantization.decode(quantization.encode(DATA, bits, rng, 4096)), rounds=3, iterations=1)
    assert out.shape == DATA.shape
    record(benchmark, f"codec_{bits}")
