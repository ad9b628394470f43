"""A device profile from a measurement on this machine (``fedfuse profile measure NAME``), so
that a user adds their own board from what it does, not from a datasheet guess.

What is measured, and how (each value's comment in the written TOML repeats it):

- ``flops_per_cycle``: the shared training step (``steptime.TrainStep``) is timed; its FLOPs by
  torch's counter / seconds per step = effective FLOP/s, divided by f_max. It is *effective*,
  not peak: the cost model's ``T_cmp = FLOPs / (flops_per_cycle * f_max)`` then gives back the
  measured step time (the shipped profiles use vendor peaks, so they predict faster steps).
- ``cpu_freq_min_hz``/``cpu_freq_max_hz``: cpufreq's range, else /proc/cpuinfo's clock.
- ``memory_bytes``: MemTotal of /proc/meminfo.
- ``static_power_w``: RAPL package power while the command sleeps (``idle_s``); ``kappa`` =
  (P_load - P_static) / f_max^3 with P_load the package power over the timed steps, as the
  shipped profiles' header defines it. Where RAPL is absent or unreadable, these two must be
  given (``Given``: from a power meter, say) and are written as given, with the reason; without
  them nothing is timed or written.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from fedfuse.bench.costs import machine
from fedfuse.bench.costs.hardware import DeviceProfile, parse_profiles
from fedfuse.plugins.config import ConfigError

ORDER = ("description", "flops_per_cycle", "cpu_freq_min_hz", "cpu_freq_max_hz", "kappa", "static_power_w",
         "memory_bytes")


@dataclass(frozen=True)
class Setup:
    """What is timed: one preset's training step at ``side`` px and ``batch`` images, ``steps``
    steps after ``warmup``; ``idle_s`` seconds of sleep before it for the static power."""

    preset: str = "small"
    side: int = 28
    batch: int = 64
    steps: int = 20
    warmup: int = 3
    idle_s: float = 5.0

    def __post_init__(self):
        from fedfuse.toolkit.recipe import PRESETS

        if self.preset not in PRESETS or min(self.side, self.batch, self.steps, self.warmup) < 1 or self.idle_s <= 0:
            raise ConfigError(f"measure: preset one of {', '.join(PRESETS)}; side, batch, steps, warmup >= 1 "
                              "(the first warm-up step counts the FLOPs); idle_s > 0")

    def describe(self) -> str:
        return (f"UNet preset {self.preset}, {self.side}x{self.side} px, batch {self.batch}, mean of {self.steps} "
                f"steps after {self.warmup} warm-up")


@dataclass(frozen=True)
class Given:
    """Power figures from elsewhere (a power meter at the wall, a datasheet), for where RAPL
    cannot measure them, or to override it: static power, and load power or kappa itself."""

    static_power_w: float | None = None
    load_power_w: float | None = None
    kappa: float | None = None

    def __post_init__(self):
        positive = [v for v in (self.load_power_w, self.kappa) if v is not None]
        if not (self.static_power_w is None or self.static_power_w >= 0) or not all(v > 0 for v in positive):
            raise ConfigError("--static-power-w must be >= 0, --load-power-w and --kappa > 0")

    def covers_power(self) -> bool:
        return self.static_power_w is not None and (self.load_power_w is not None or self.kappa is not None)


@dataclass
class Measured:
    """The profile's values, each with the comment that says where it came from."""

    name: str
    header: list[str]
    values: dict[str, object] = field(default_factory=dict)
    how: dict[str, str] = field(default_factory=dict)
    facts: dict[str, float] = field(default_factory=dict)  # seconds and FLOPs per step, watts: for the printout

    def set(self, key: str, value, how: str) -> None:
        self.values[key], self.how[key] = value, how


def check_name(name: str) -> None:
    """A profile name is a bare TOML key ([devices.NAME]) and what a suite's [[profiles]] names."""
    if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
        raise ConfigError(f"profile name '{name}': use letters, digits, '-' and '_' only")


@dataclass(frozen=True)
class Context:
    """Where and how this measurement runs: what each value's comment repeats."""

    stamp: str  # "measured <when> on <CPU, torch, threads>"
    meter: machine.PackageEnergy | None  # RAPL's package counters; None where unavailable
    power_line: str  # how package power was (or why it was not) measured
    given: Given


def power_meter(given: Given, root: Path) -> tuple[machine.PackageEnergy | None, str]:
    """RAPL's package counters (None where unavailable) and a line on how or why not; an error
    before anything is timed if neither RAPL nor ``given`` can supply the power figures."""
    try:
        meter = machine.package_energy(root)
        return meter, f"RAPL package energy ({meter.where()})"
    except machine.Unavailable as why:
        if not given.covers_power():
            raise ConfigError(f"package power cannot be measured here: {why}. Give the power figures instead "
                              "(from a power meter): --static-power-w W and --load-power-w W (or --kappa K)") from None
        return None, f"not measured here: {why}"


def measure(name: str, setup: Setup, given: Given, command: str, description: str | None = None,
            root: Path = machine.ROOT, power: bool = True) -> Measured:
    """Measure this machine and return the profile (``write`` turns it into TOML). ``power``
    False: the step and the machine only (no kappa, no static power: not a profile to write)."""
    import torch

    check_name(name)
    meter, power_line = power_meter(given, root) if power else (None, "not measured (--print-only)")
    when = datetime.now(UTC).isoformat(timespec="seconds")
    threads, load = torch.get_num_threads(), machine.load_average(root)
    on = f"{machine.cpu_model(root)}, torch {torch.__version__}, {threads} thread{'s' if threads > 1 else ''}"
    ctx = Context(f"measured {when} on {on}", meter, power_line, given)
    out = Measured(name, header_lines(name, command, when, on, setup, power_line, load), facts={"load_average": load})
    out.set("description", description or f"{machine.cpu_model(root)}, measured {when[:10]}",
            f"written by `{command}` on {when}")
    describe_machine(out, ctx, root)
    static_w = static_power(out, ctx, setup.idle_s) if power else None
    load_w = time_step(out, ctx, setup)
    if power:
        set_kappa(out, ctx, static_w, load_w)
    return out


def header_lines(name, command, when, on, setup: Setup, power_line: str, load: float) -> list[str]:
    import os
    import platform

    import fedfuse

    return [f"Device profile '{name}', measured by `{command}` on {when} (UTC).",
            f"On: {on}; {os.cpu_count()} logical CPUs, Linux {platform.release()}, fedfuse {fedfuse.__version__}.",
            f"Timed: the shared training step (fedfuse.bench.costs.steptime.TrainStep), {setup.describe()}.",
            (f"Load average (1 min) when measuring began: {load:.2f} on {os.cpu_count()} CPUs "
             "(other processes slow the step down and add to package power)."),
            f"Package power: {power_line}.",
            (f"Use it: list this file in a suite's profile_files (top level, relative to the suite), then "
             f"device = \"{name}\" in a [[profiles]] entry (docs/suites.md)."),
            "Measured values are effective (what this step reaches here), not datasheet peaks."]


def describe_machine(out: Measured, ctx: Context, root: Path) -> None:
    """Clock range and RAM, as Linux reports them."""
    f_min, f_max, clock_how = machine.clock_range(root)
    out.set("cpu_freq_min_hz", f_min, f"{ctx.stamp}: {clock_how}")
    out.set("cpu_freq_max_hz", f_max, f"{ctx.stamp}: {clock_how}")
    out.set("memory_bytes", machine.memory_bytes(root), f"{ctx.stamp}: MemTotal in /proc/meminfo")


def static_power(out: Measured, ctx: Context, idle_s: float) -> float:
    """Package power while this process sleeps (the machine's other work included), or as given."""
    if ctx.given.static_power_w is not None:
        out.set("static_power_w", ctx.given.static_power_w,
                "given on the command line (--static-power-w), not measured by this command "
                "(package power: see the header)")
        return ctx.given.static_power_w
    before, start = ctx.meter.read(), time.perf_counter()
    time.sleep(idle_s)
    watts = ctx.meter.joules(before, ctx.meter.read()) / (time.perf_counter() - start)
    out.set("static_power_w", watts, f"{ctx.stamp}: {ctx.power_line} while this command slept {idle_s:g} s before "
            "the timing; the CPU package only, not the board; other processes' power included")
    return watts


def time_step(out: Measured, ctx: Context, setup: Setup) -> float | None:
    """Time the step and set flops_per_cycle; return the package power over the timed steps
    (None without RAPL)."""
    from fedfuse.bench.costs.steptime import TrainStep

    step = TrainStep(setup.preset, setup.side, setup.batch)
    step.warm_up(setup.warmup)
    before, start = (ctx.meter.read() if ctx.meter else None), time.perf_counter()
    seconds = step.seconds_per_step(setup.steps)
    load_w = ctx.meter.joules(before, ctx.meter.read()) / (time.perf_counter() - start) if ctx.meter else None
    flops, f_max = step.flops_per_step, out.values["cpu_freq_max_hz"]
    out.facts.update(seconds_per_step=seconds, flops_per_step=flops, flop_per_s=flops / seconds)
    out.set("flops_per_cycle", flops / seconds / f_max,
            f"{ctx.stamp}: {flops:.4g} FLOPs per step (torch FlopCounterMode, forward + backward) / {seconds:.4g} s "
            f"per step ({setup.describe()}) = {flops / seconds:.4g} FLOP/s effective; / f_max {f_max:.4g} Hz")
    return load_w


def set_kappa(out: Measured, ctx: Context, static_w: float, load_w: float | None) -> None:
    """kappa = (P_load - P_static) / f_max^3 (the shipped profiles' definition), P_load from RAPL
    over the timed steps or as given; or kappa itself as given."""
    out.facts["static_power_w"] = static_w
    if ctx.given.kappa is not None:
        out.set("kappa", ctx.given.kappa, "given on the command line (--kappa), not measured by this command "
                "(package power: see the header)")
        return
    if ctx.given.load_power_w is not None:
        load_w = ctx.given.load_power_w
        source = (f"P_load = {load_w:.4g} W given on the command line (--load-power-w), not measured by this "
                  "command (package power: see the header)")
    else:
        source = f"{ctx.stamp}: P_load = {load_w:.4g} W, {ctx.power_line} over the timed steps"
    out.facts["load_power_w"] = load_w
    if not load_w > static_w:
        raise ConfigError(f"power under load ({load_w:.3g} W) is not above static power ({static_w:.3g} W), so kappa "
                          "would be <= 0: time more steps (--steps) on a quieter machine, or give --kappa")
    out.set("kappa", (load_w - static_w) / out.values["cpu_freq_max_hz"] ** 3,
            f"{source}; kappa = (P_load - static_power_w) / f_max^3")


def to_toml(profile: Measured) -> str:
    """The profile as a ``[devices.NAME]`` table (what a suite's inline devices and its
    ``profile_files`` read), every value under its comment."""
    lines = [f"# {line}" for line in profile.header] + ["", f"[devices.{profile.name}]"]
    for key in ORDER:
        value = profile.values[key]
        lines += [f"# {profile.how[key]}", f"{key} = {json.dumps(value) if isinstance(value, str) else f'{value:.6g}'}"]
    return "\n".join(lines) + "\n"


def write(profile: Measured, path: Path) -> DeviceProfile:
    """Write the TOML, after checking that the harness's loader takes it; returns what it loads as."""
    import tomllib

    from fedfuse.files import write_atomic

    text = to_toml(profile)
    [loaded] = parse_profiles(tomllib.loads(text)["devices"], DeviceProfile, str(path))
    write_atomic(path, lambda tmp: tmp.write_text(text))
    return loaded
