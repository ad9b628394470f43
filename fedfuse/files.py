"""Files that concurrent runs share (caches of data, feature nets, references, pre-trained
bases): each is written whole or not at all."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable


def write_atomic(path: Path, write: Callable[[Path], object]) -> None:
    """``write(tmp)`` fills a temporary file beside ``path`` (one per process, so concurrent
    writers never mix theirs), which then replaces ``path`` in one step: a reader, or a crash,
    never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    write(tmp)
    tmp.replace(path)
