"""Seconds per optimizer step of each UNet preset, through the shared training loop
(``ddpm.train``: batch draw on the CPU, move to the device, forward, backward, AdamW, EMA).
The suites' expected times (docs/quality.md, each suite file's header) are steps x these.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/step_times.py --side 8 --side 28
    .venv/bin/python scripts/step_times.py --accelerator cuda --precision bf16-mixed --json out.json

Random images stand in for data: a step's cost does not depend on what the pixels show.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fedfuse.datasets import ClientData
from fedfuse.toolkit import ddpm, models
from fedfuse.toolkit.device import Resources, describe


def seconds_per_step(preset: str, side: int, resources: Resources, steps: int, batch: int) -> float:
    data = ClientData(torch.rand(1024, 1, side, side) * 2 - 1, torch.zeros(1024, dtype=torch.long), torch.arange(1024))
    model = models.build_unet((1, side, side), preset, 0)
    recipe, scheduler = ddpm.Recipe(batch_size=batch), ddpm.build_scheduler(200)
    ema = ddpm.Ema(model, recipe.ema_decay)
    run = lambda n: ddpm.train(model, scheduler, data, n, recipe, torch.Generator().manual_seed(0), resources, ema=ema)  # noqa: E731
    run(max(3, steps // 10))  # warm-up: kernels chosen, allocator filled
    start = time.perf_counter()
    run(steps)  # ends with loss.item() and a move back to the CPU: the device has finished
    return (time.perf_counter() - start) / steps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, action="append", help="image side in pixels (repeatable; default 8 and 28)")
    p.add_argument("--preset", action="append", choices=list(models.PRESETS), help="default: all")
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", help="append one JSON line per measurement to this file")
    args = p.parse_args()
    resources = Resources(accelerator=args.accelerator, precision=args.precision)
    system = describe(resources)
    for side in args.side or [8, 28]:
        for preset in args.preset or list(models.PRESETS):
            s = seconds_per_step(preset, side, resources, args.steps, args.batch_size)
            row = {"preset": preset, "side": side, "batch_size": args.batch_size, "s_per_step": round(s, 5),
                   "threads": torch.get_num_threads(), **system}
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
