"""Benchmarks run two ways. In the test suite (``pytest``, as CI runs it) they run once each at
tiny sizes with timing off, so a broken import or API fails CI instead of rotting.
``bash scripts/bench.sh`` sets FEDFUSE_BENCH_FULL=1: full sizes, timed, and the ratios between
paired benchmarks (harness path / plain reference) printed at the end.

Beside them, measurement scripts a doc cites, run by hand: step_times.py (seconds per optimizer
step of each UNet preset), client_message_cost.py (one client message in process) and
deployment_overhead.py (the deploy-overhead suite in both engines)."""

from benchutil import FULL, LINES, MEANS, PAIRS


def pytest_terminal_summary(terminalreporter):
    if not FULL:
        return
    for title, numerator, denominator in PAIRS:
        if numerator in MEANS and denominator in MEANS:
            ratio = MEANS[numerator] / MEANS[denominator]
            terminalreporter.write_line(f"ratio {title}: {ratio:.3f}x (1.000 = no overhead)")
    for line in LINES:
        terminalreporter.write_line(line)
