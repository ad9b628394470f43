"""Seconds per optimizer step of each UNet preset, through the shared training loop
(``fedfuse.bench.costs.steptime.TrainStep``: ``ddpm.train``'s batch draw on the CPU, move to the
device, forward, backward, AdamW, EMA), and the step's FLOPs by torch's counter.
The suites' expected times (docs/quality.md, each suite file's header) are steps x these.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/step_times.py --side 8 --side 28
    .venv/bin/python benchmarks/step_times.py --accelerator cuda --precision bf16-mixed --json out.json
    .venv/bin/python benchmarks/step_times.py --accelerator cuda --compile cudagraphs --side 28

With ``--compile`` the step is ``torch.compile``d as ``[resources] compile`` does it; a preset
whose compiled gradients differ from eager mode's is reported (``compile_refused``), one whose
compiler fails too (``compile_failed``), not timed.

Random images stand in for data: a step's cost does not depend on what the pixels show.
``fedfuse profile measure`` times the same step to write a device profile.
"""

from __future__ import annotations

import argparse
import json

import torch

from fedfuse.bench.costs.steptime import TrainStep
from fedfuse.toolkit import models
from fedfuse.toolkit.compiling import CompileMismatch
from fedfuse.toolkit.device import Resources, describe


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, action="append", help="image side in pixels (repeatable; default 8 and 28)")
    p.add_argument("--preset", action="append", choices=list(models.PRESETS), help="default: all")
    p.add_argument("--accelerator", default="cpu", choices=["cpu", "cuda", "auto"])
    p.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--compile", default="false", metavar="true|false|BACKEND",
                   help="torch.compile the step (true: inductor), checked against eager first")
    p.add_argument("--json", help="append one JSON line per measurement to this file")
    args = p.parse_args()
    resources = Resources(accelerator=args.accelerator, precision=args.precision, compile=args.compile)
    system = describe(resources)
    for side in args.side or [8, 28]:
        for preset in dict.fromkeys(args.preset or models.PRESETS):  # each once, in order
            row = {"preset": preset, "side": side, "batch_size": args.batch_size,
                   **measure(TrainStep(preset, side, args.batch_size, resources), args.steps),
                   "threads": torch.get_num_threads(), **system}
            print(json.dumps(row), flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(row) + "\n")


def measure(step: TrainStep, steps: int) -> dict:
    """Seconds per step and FLOPs, after a warm-up (which compiles, where compiling)."""
    try:
        step.warm_up(max(3, steps // 10))
    except CompileMismatch as refused:
        return {"compile_refused": str(refused)}
    except Exception as failed:  # noqa: BLE001  (a compiler's crash is a result here, not the end of the run)
        if not step.resources.compile_backend:
            raise
        return {"compile_failed": f"{type(failed).__name__}: {failed}"[:500]}
    s = step.seconds_per_step(steps)
    return {"s_per_step": round(s, 5), "images_per_s": round(step.recipe.batch_size / s, 1),
            "flops_per_step": step.flops_per_step}


if __name__ == "__main__":
    main()
