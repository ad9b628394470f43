"""The shared training step, ready to be timed: what ``benchmarks/step_times.py``,
``benchmarks/bench_steps.py`` and ``fedfuse profile measure`` all time, defined once so that
their numbers describe the same work (``ddpm.train``: batch draw on the CPU, move to the
device, forward, backward, AdamW, EMA; the recipe's defaults, T = 200).

Random images stand in for data: a step's cost does not depend on what the pixels show.
"""

from __future__ import annotations

import time

import torch

from fedfuse.bench.costs.flops import FlopMeter
from fedfuse.datasets import ClientData
from fedfuse.toolkit import ddpm, models
from fedfuse.toolkit.device import Resources
from fedfuse.toolkit.privacy import DpSgd


def random_images(count: int, side: int) -> ClientData:
    """``count`` one-channel ``side``-px images in [-1, 1], all of class 0."""
    return ClientData(torch.rand(count, 1, side, side) * 2 - 1, torch.zeros(count, dtype=torch.long),
                      torch.arange(count))


class TrainStep:
    """One UNet preset's training step at ``side`` px and ``batch`` images. ``warm_up`` first
    (kernels chosen, allocator filled; its first step also counts the FLOPs), then
    ``seconds_per_step``."""

    def __init__(self, preset: str, side: int, batch: int = 64, resources: Resources | None = None,
                 images: int = 1024, dp: bool = False):
        self.data = random_images(images, side)
        self.model = models.build_unet((1, side, side), preset, 0)
        self.recipe, self.scheduler = ddpm.Recipe(batch_size=batch), ddpm.build_scheduler(200)
        self.ema = ddpm.Ema(self.model, self.recipe.ema_decay)
        self.resources = resources
        self.meter = FlopMeter()
        self.dp = dp  # DP-SGD steps (clip 1, σ 1: Poisson batches, per-sample gradients, noise)

    def run(self, steps: int, flops: FlopMeter | None = None) -> None:
        """``steps`` steps; ends with ``loss.item()`` and a move back to the CPU, so whatever
        device trained has finished when this returns."""
        dp = DpSgd(1.0, 1.0, torch.Generator().manual_seed(1), records=len(self.data)) if self.dp else None
        ddpm.train(self.model, self.scheduler, self.data, steps, self.recipe, torch.Generator().manual_seed(0),
                   self.resources, flops=flops, ema=self.ema, dp=dp)

    def warm_up(self, steps: int = 3) -> None:
        self.run(steps, flops=self.meter)

    @property
    def flops_per_step(self) -> float:
        """Forward + backward FLOPs of one step (torch's counter, as the harness charges them)."""
        if not self.meter.per_step:
            raise RuntimeError("call warm_up() first: it counts the FLOPs")
        return float(next(iter(self.meter.per_step.values())))

    def seconds_per_step(self, steps: int) -> float:
        start = time.perf_counter()
        self.run(steps)
        return (time.perf_counter() - start) / steps
