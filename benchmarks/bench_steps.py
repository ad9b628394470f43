"""What one optimizer step of the shared recipe costs, per UNet preset and image side, batch 64,
through ``fedfuse.toolkit.ddpm.fit`` (Fabric, 32-true) on this machine's CPU: the per-step
costs docs/quality.md turns into suite budgets. ``bash scripts/bench.sh -k steps``."""

import pytest
import torch
from benchutil import FULL

from fedfuse.datasets import ClientData
from fedfuse.toolkit import ddpm, models

STEPS = 5 if FULL else 1
SIDES = [8, 14, 28] if FULL else [8]


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("preset", list(models.PRESETS))
def test_train_step(benchmark, preset, side):
    n = 512 if FULL else 64
    data = ClientData(torch.rand(n, 1, side, side) * 2 - 1, torch.zeros(n, dtype=torch.long), torch.arange(n))
    model, scheduler = models.build_unet((1, side, side), preset, 0), ddpm.build_scheduler(200)
    recipe, gen = ddpm.Recipe(batch_size=64, warmup_steps=0), torch.Generator().manual_seed(0)
    ddpm.train(model, scheduler, data, 1, recipe, gen)  # warm-up
    benchmark.pedantic(lambda: ddpm.train(model, scheduler, data, STEPS, recipe, gen), rounds=3, iterations=1)
    if benchmark.stats is not None:
        benchmark.extra_info["seconds_per_step"] = benchmark.stats.stats.median / STEPS
