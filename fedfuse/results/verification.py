"""What ``fedfuse verify`` wrote beside a bundle's store: the cells it ran again and found the same."""

from __future__ import annotations

import json
from pathlib import Path

VERIFICATION_FILE = "verification.json"


def verified_cells(folder: str | Path) -> set[str]:
    """The cells a passed verification of the store in ``folder`` ran again (none without one)."""
    path = Path(folder) / VERIFICATION_FILE
    try:
        verdict = json.loads(path.read_text())
    except (OSError, ValueError):
        return set()
    return set(verdict.get("cells", [])) if verdict.get("ok") is True else set()
