"""Benchmarks run two ways. In the test suite (``pytest``, as CI runs it) they run once each at
tiny sizes with timing off, so a broken import or API fails CI instead of rotting.
``bash scripts/bench.sh`` sets FEDFUSE_BENCH_FULL=1: full sizes, timed, and the ratios between
paired benchmarks (harness path / plain reference) printed at the end."""

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
