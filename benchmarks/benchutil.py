"""What the benchmarks share: the size switch and the means kept for the printed ratios."""

import os

FULL = os.environ.get("FEDFUSE_BENCH_FULL") == "1"
MEANS: dict[str, float] = {}
LINES: list[str] = []  # printed at the end of a full run (e.g. the scaling comparison)
PAIRS = [("harness ClientApp train / plain torch loop", "harness_client_train", "plain_torch_train"),
         ("reply checks of one reply / one client's training round", "reply_checks", "harness_client_train"),
         ("DP-SGD step / plain step, tiny at 8 px", "dp_step_tiny_8", "plain_step_tiny_8"),
         ("DP-SGD step / plain step, small at 28 px", "dp_step_small_28", "plain_step_small_28")]


def record(benchmark, key: str) -> None:
    """Keep a benchmark's mean for the ratios (there is none when timing is off)."""
    if benchmark.stats is not None:
        MEANS[key] = benchmark.stats.stats.mean
