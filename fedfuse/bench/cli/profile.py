"""`fedfuse profile measure NAME`: a device profile TOML from a measurement on this machine
(fedfuse/bench/costs/measure.py says what is measured and how)."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

from rich.table import Table

from fedfuse.bench.cli.common import console
from fedfuse.plugins.config import ConfigError


def cmd_profile(args) -> int:
    import torch

    from fedfuse.bench.costs import measure

    if args.threads:
        torch.set_num_threads(args.threads)
    setup = measure.Setup(args.preset, args.side, args.batch_size, args.steps, args.warmup, args.idle_s)
    given = measure.Given(args.static_power_w, args.load_power_w, args.kappa)
    command = shlex.join(["fedfuse", *sys.argv[1:]]) if sys.argv[1:2] == ["profile"] else "fedfuse profile measure"
    path = Path(args.out or f"{args.name}.toml")
    if not args.print_only and not path.parent.is_dir():
        raise ConfigError(f"--out {path}: no folder {path.parent}")  # said before minutes of timing, not after
    profile = measure.measure(args.name, setup, given, command, args.description, power=not args.print_only)
    report(profile)
    if not args.print_only:
        measure.write(profile, path)
        console().print(f"wrote {path}: name it in a suite with profile_files = [\"{path.name}\"] (docs/suites.md)",
                        markup=False, highlight=False)
    return 0


def report(profile) -> None:
    """What was measured, and what the registered device profiles predict for the same step."""
    facts, values, out = profile.facts, profile.values, console()
    for line in profile.header[1:5]:
        out.print(line, markup=False, highlight=False)
    power = f"; static {values['static_power_w']:.3g} W, kappa {values['kappa']:.3g}" if "kappa" in values else ""
    out.print(f"step: {facts['flops_per_step']:.4g} FLOPs in {facts['seconds_per_step']:.4g} s = "
              f"{facts['flop_per_s'] / 1e9:.3g} GFLOP/s; flops_per_cycle {values['flops_per_cycle']:.4g} "
              f"(effective) at f_max {values['cpu_freq_max_hz'] / 1e9:.4g} GHz{power}", markup=False, highlight=False)
    out.print(predictions(facts["flops_per_step"], facts["seconds_per_step"]))
    if facts["load_average"] >= (os.cpu_count() or 1):
        out.print(f"warning: load average {facts['load_average']:.2f} on {os.cpu_count()} CPUs: other processes shared "
                  "them, so the step was slower than on a quiet machine (fewer --threads can help; or measure later)",
                  markup=False, highlight=False)


def predictions(flops: float, measured_s: float) -> Table:
    """T_cmp of this step (its counted FLOPs) on each registered device at f_max, beside the
    time measured here: how far each (datasheet-peak) profile is from this machine."""
    from fedfuse.bench.costs.costmodel import compute_time
    from fedfuse.plugins.manager import registry

    table = Table(title=f"this step ({flops:.4g} FLOPs) by the cost model at f_max; measured here: {measured_s:.4g} s")
    for header in ("device profile", "predicted s", "measured / predicted"):
        table.add_column(header)
    devices = [e.spec for e in registry().entries("profiles").values() if e.spec.kind == "device"]
    for device in sorted(devices, key=lambda d: d.name):
        predicted = compute_time(flops, device)
        table.add_row(device.name, f"{predicted:.4g}", f"{measured_s / predicted:.3g}x")
    return table
