"""The environment record kept with every cell: what ran, on what (as MLPerf's system description)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys

PACKAGES = ("fedfuse", "torch", "flwr", "flwr-datasets", "diffusers", "lightning-fabric", "numpy", "pluggy", "ray",
            "datasets")


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=os.path.dirname(__file__))
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def environment(resources=None) -> dict:
    """The machine, the packages and, given a cell's resources, its *system*: the device
    (kind, name, count, memory) and precision that training and sampling ran on."""
    from fedfuse.toolkit.device import describe

    return {
        "system": describe(resources),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "packages": package_versions(),
        "git_commit": git_commit(),
    }
