"""What one optimizer step of the shared recipe costs, per UNet preset and image side, batch 64,
through ``fedfuse.bench.costs.steptime.TrainStep`` (``ddpm.train``, Fabric, 32-true, EMA on) on
this machine's CPU: the per-step costs docs/quality.md turns into suite budgets.
``bash scripts/bench.sh -k steps``."""

import pytest
from benchutil import FULL

from fedfuse.bench.costs.steptime import TrainStep

STEPS = 5 if FULL else 1
SIDES = [8, 14, 28] if FULL else [8]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("preset", ["tiny", "small", "base"])  # the CPU presets; wide, large: benchmarks/step_times.py on a GPU
def test_train_step(benchmark, preset, side):
    step = TrainStep(preset, side, batch=64, images=512 if FULL else 64)
    step.warm_up(1)
    benchmark.pedantic(lambda: step.run(STEPS), rounds=3, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["seconds_per_step"] = benchmark.stats.stats.median / STEPS
        benchmark.extra_info["flops_per_step"] = step.flops_per_step
