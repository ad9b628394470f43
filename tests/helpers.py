"""What the tests share besides fixtures: the CLI runner and a suite writer. (A module of its
own: `conftest` is a name both tests/ and benchmarks/ use, so it cannot be imported by name.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class CLI:
    """Runs ``fedfuse`` as a user would, with extra plugin distributions on the path."""

    def __init__(self, cwd: Path, extra_path: list[Path] = ()):
        self.cwd, self.extra_path = cwd, [str(p) for p in extra_path]

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*self.extra_path, os.environ.get("PYTHONPATH", "")]),
                   COLUMNS="200")
        return subprocess.run([sys.executable, "-m", "fedfuse.bench.cli", *args], cwd=self.cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def results(self, out: Path) -> list[dict]:
        done = self("results", "--out", str(out), "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


def write_suite(path: Path, protocols: str, **matrix: str) -> Path:
    """A small suite file: digits, one seed, 2 clients, 1 round; ``matrix`` values (TOML
    text, e.g. ``rounds="2"``) override those."""
    keys = {"datasets": '["digits"]', "seeds": "[0]", "clients": "2", "rounds": "1", **matrix}
    lines = "\n".join(f"{k} = {v}" for k, v in keys.items())
    path.write_text(f'format = 1\n[suite]\nname = "test"\nversion = "1"\n[matrix]\n{lines}\n{protocols}')
    return path


def copy_store(src: Path, dest: Path) -> Path:
    """A writable copy of a results folder (its store and run directories), e.g. of the session's
    shared track run (conftest's ``quick_track``), which tests only read."""
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("*.lock"))
    return dest
