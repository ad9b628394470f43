"""What DP-SGD adds to a training step: the shared step (``TrainStep``: batch draw, forward,
backward, AdamW, EMA) with and without DP-SGD (Poisson batch, opacus's per-sample gradients,
clipping, seeded noise), batch 64 expected. docs/privacy.md quotes the ratio:
``bash scripts/bench.sh -k dp_step``."""

import pytest
from benchutil import FULL, record

from fedfuse.bench.costs.steptime import TrainStep

STEPS = 5 if FULL else 1
SIZES = [("tiny", 8), ("small", 28)] if FULL else [("tiny", 8)]


@pytest.mark.parametrize("dp", [False, True], ids=["plain", "dp"])
@pytest.mark.parametrize("preset, side", SIZES)
def test_dp_step(benchmark, preset, side, dp):
    step = TrainStep(preset, side, batch=64, images=512 if FULL else 64, dp=dp)
    step.warm_up(1)
    benchmark.pedantic(lambda: step.run(STEPS), rounds=3, iterations=1)
    record(benchmark, f"{'dp' if dp else 'plain'}_step_{preset}_{side}")
