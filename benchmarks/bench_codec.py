"""Codec throughput: encode + decode of a 10 M-element float32 tensor at every bit-width (1..16),
each beside a ``torch.clone`` of the same tensor (the memory-bandwidth reference) timed just
before it, so that a busy machine's drift between the two stays small; and a numpy copy.

Both references allocate their 40 MB result, as the codec's decode does: torch's allocator
faults in fresh 4 KiB pages for it on every call (≈ 9,800 page faults), numpy's gets transparent
huge pages, so on Linux the numpy copy is the tighter floor (4-5× faster than the clone here)."""

import numpy as np
import pytest
import torch
from benchutil import FULL, PAIRS, record

from fedfuse.toolkit import quantization

N = 10_000_000 if FULL else 10_000
DATA = np.random.default_rng(0).standard_normal(N).astype(np.float32)
BITS = list(range(1, quantization.MAX_BITS + 1))
PAIRS += [(f"codec {b}-bit encode+decode / torch.clone", f"codec_{b}", f"clone_{b}") for b in BITS]
PAIRS += [(f"codec {b}-bit encode+decode / numpy copy", f"codec_{b}", "numpy_copy") for b in (2, 4, 8)]
ROUNDS = 20


def test_numpy_copy_reference(benchmark):
    benchmark.pedantic(DATA.copy, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    record(benchmark, "numpy_copy")


@pytest.mark.parametrize("what", ["clone", "codec"])  # in the order clone b, codec b, clone b+1, ...
@pytest.mark.parametrize("bits", BITS)
def test_codec_round_trip(benchmark, what, bits):
    if what == "clone":
        benchmark.pedantic(torch.from_numpy(DATA).clone, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    else:
        rng = np.random.default_rng(1)
        # the warm-up round loads (or, on a machine's first run, compiles) the kernels
        out = benchmark.pedantic(lambda: quantization.decode(quantization.encode(DATA, bits, rng, 4096)),
                                 rounds=ROUNDS, iterations=1, warmup_rounds=1)
        assert out.shape == DATA.shape
    record(benchmark, f"{what}_{bits}")
