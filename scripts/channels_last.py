"""Is channels-last memory format faster for fedfuse's training step on this CPU? Times the
shared step (fedfuse/bench/costs/steptime.py) with the UNet in contiguous and in channels-last
format, interleaved, 3 repetitions; prints the median and the minimum seconds per step.

    .venv/bin/python scripts/channels_last.py
"""

import statistics

import torch

from fedfuse.bench.costs.steptime import TrainStep

CASES = [("small", 8, 20), ("small", 28, 6), ("base", 28, 4)]  # preset, side, steps per timing


def prepared(preset: str, side: int, channels_last: bool) -> TrainStep:
    step = TrainStep(preset, side)
    if channels_last:
        step.model.to(memory_format=torch.channels_last)
    step.warm_up(2)
    return step


def main() -> None:
    torch.set_num_threads(2)
    for preset, side, steps in CASES:
        runs = {fmt: prepared(preset, side, fmt == "channels_last") for fmt in ("contiguous", "channels_last")}
        times = {fmt: [] for fmt in runs}
        for _ in range(3):  # interleaved, so load changes hit both formats alike
            for fmt, step in runs.items():
                times[fmt].append(step.seconds_per_step(steps))
        print(f"{preset} {side} px: " + ", ".join(f"{fmt} median {statistics.median(t):.4f} s, min {min(t):.4f} s"
                                                 for fmt, t in times.items()))


if __name__ == "__main__":
    main()
