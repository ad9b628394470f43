"""What Linux says about this machine: CPU model, clock range, RAM, load, package energy (RAPL).

Every reader says where its number came from, or raises ``Unavailable`` with the reason: a
measured device profile names its sources and never fills a gap with a guess. ``root`` is the
file system's root (a test points it at a fake /proc and /sys).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from fedfuse.plugins.config import ConfigError

ROOT = Path("/")
POWERCAP = "sys/class/powercap"


class Unavailable(ConfigError):
    """This machine does not expose the number (the message says why; the CLI exits 2 with it)."""


def cpuinfo(root: Path = ROOT) -> str:
    path = root / "proc/cpuinfo"
    return path.read_text() if path.is_file() else ""


def cpu_model(root: Path = ROOT) -> str:
    """The CPU's name: 'model name' on x86, 'Model' or 'Hardware' on ARM boards (a Raspberry Pi)."""
    import platform

    for key in ("model name", "Model", "Hardware"):
        if found := re.search(rf"^{key}\s*:\s*(.+)$", cpuinfo(root), re.MULTILINE):
            return found.group(1).strip()
    return platform.processor() or platform.machine()


def clock_range(root: Path = ROOT) -> tuple[float, float, str]:
    """(f_min, f_max) in Hz and how they were read: cpufreq's cpuinfo_min_freq/cpuinfo_max_freq
    (the hardware's DVFS range), else the highest 'cpu MHz' in /proc/cpuinfo (the clock now,
    with no range: it is both ends)."""
    folders = [f for f in sorted((root / "sys/devices/system/cpu").glob("cpu[0-9]*/cpufreq"))
               if (f / "cpuinfo_min_freq").is_file() and (f / "cpuinfo_max_freq").is_file()]
    if folders:
        low = min(_int(f / "cpuinfo_min_freq") for f in folders)
        high = max(_int(f / "cpuinfo_max_freq") for f in folders)
        how = (f"cpufreq: lowest cpuinfo_min_freq and highest cpuinfo_max_freq of {len(folders)} CPUs "
               "(/sys/devices/system/cpu/cpu*/cpufreq)")
        return low * 1e3, high * 1e3, how
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([0-9.]+)", cpuinfo(root), re.MULTILINE)]
    if not mhz:
        raise Unavailable("neither cpufreq (/sys/devices/system/cpu/cpu*/cpufreq) nor 'cpu MHz' in /proc/cpuinfo "
                          "says this CPU's clock")
    how = (f"highest 'cpu MHz' of {len(mhz)} CPUs in /proc/cpuinfo: no cpufreq here, so no DVFS range (the clock "
           "now is both ends; frequency scaling cannot slow this device)")
    return max(mhz) * 1e6, max(mhz) * 1e6, how


def memory_bytes(root: Path = ROOT) -> float:
    path = root / "proc/meminfo"
    found = re.search(r"^MemTotal:\s*(\d+) kB", path.read_text(), re.MULTILINE) if path.is_file() else None
    if not found:
        raise Unavailable("no MemTotal in /proc/meminfo")
    return int(found.group(1)) * 1024.0


def load_average(root: Path = ROOT) -> float:
    """The 1-minute load average (other processes sharing the CPUs slow a timing down)."""
    path = root / "proc/loadavg"
    return float(path.read_text().split()[0]) if path.is_file() else float("nan")


def _int(path: Path) -> int:
    return int(path.read_text().split()[0])


@dataclass(frozen=True)
class PackageEnergy:
    """The CPU packages' cumulative energy counters (RAPL ``package-N`` zones; the package only,
    not DRAM, the board or its power supply). Each counter wraps at its max_energy_range_uj."""

    zones: tuple[Path, ...]
    ranges: tuple[int, ...]

    def read(self) -> tuple[int, ...]:
        return tuple(_int(z / "energy_uj") for z in self.zones)

    def joules(self, before: tuple[int, ...], after: tuple[int, ...]) -> float:
        return sum((a - b) % r for a, b, r in zip(after, before, self.ranges)) / 1e6

    def where(self) -> str:
        return ", ".join(f"/{z.relative_to(z.anchor)}/energy_uj" for z in self.zones)


def package_energy(root: Path = ROOT) -> PackageEnergy:
    """The RAPL package counters, read once to prove they can be; ``Unavailable`` says why not."""
    folder = root / POWERCAP
    if not folder.is_dir():
        raise Unavailable("/sys/class/powercap is absent (no powercap driver: e.g. a VM, a container "
                          "without it, or a CPU without RAPL)")
    zones = [z for z in sorted(folder.glob("intel-rapl:*")) if re.fullmatch(r"intel-rapl:\d+", z.name)
             and (z / "name").is_file() and (z / "name").read_text().startswith("package")]
    if not zones:
        raise Unavailable("no RAPL package zone (intel-rapl:N named package-N) under /sys/class/powercap")
    try:
        meter = PackageEnergy(tuple(zones), tuple(_int(z / "max_energy_range_uj") for z in zones))
        meter.read()
    except PermissionError:
        raise Unavailable("the RAPL energy_uj counters are not readable by this user (root only since "
                          "Linux 5.10): run as root, or let this user read them") from None
    return meter
