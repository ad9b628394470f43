"""Prints the ratios between paired benchmarks (harness path / plain reference)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

MEANS: dict[str, float] = {}
PAIRS = [("harness ClientApp train / plain torch loop", "harness_client_train", "plain_torch_train")]


def pytest_terminal_summary(terminalreporter):
    for title, numerator, denominator in PAIRS:
        if numerator in MEANS and denominator in MEANS:
            ratio = MEANS[numerator] / MEANS[denominator]
            terminalreporter.write_line(f"ratio {title}: {ratio:.3f}x (1.000 = no overhead)")
