"""Seeds and stable hashes: every random stream in a cell derives from the cell's seed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import numpy as np


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers: one independent stream per (cell seed, client, round, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(2, np.uint64)[0] >> 1)


def stable_hash(obj: Any, length: int = 12) -> str:
    """Hash of a JSON-able object that does not depend on key order."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
