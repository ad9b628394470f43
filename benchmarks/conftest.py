"""Benchmarks run two ways. In the test suite (``pytest``, as CI runs it) they run once each at
tiny sizes with timing off, so a broken import or API fails CI instead of rotting.
``bash scripts/bench.sh`` sets FEDFUSE_BENCH_FULL=1: full sizes, timed, and the ratios between
paired benchmarks (harness path / plain reference) printed at the end."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

FULL = os.environ.get("FEDFUSE_BENCH_FULL") == "1"
MEANS: dict[str, float] = {}
PAIRS = [("harness ClientApp train / plain torch loop", "harness_client_train", "plain_torch_train"),
         ("reply checks of one reply / one client's training round", "reply_checks", "harness_client_train")]


def record(benchmark, key: str) -> None:
    """Keep a benchmark's mean for the ratios (there is none when timing is off)."""
    if benchmark.stats is not None:
        MEANS[key] = benchmark.stats.stats.mean


def pytest_terminal_summary(terminalreporter):
    if not FULL:
        return
    for title, numerator, denominator in PAIRS:
        if numerator in MEANS and denominator in MEANS:
            ratio = MEANS[numerator] / MEANS[denominator]
            terminalreporter.write_line(f"ratio {title}: {ratio:.3f}x (1.000 = no overhead)")
