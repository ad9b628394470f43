"""Shared fixtures: run the real CLI in a subprocess, install test plugins for real."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class CLI:
    """Runs ``fedfuse`` as a user would, with extra plugin distributions on the path."""

    def __init__(self, cwd: Path, extra_path: list[Path] = ()):
        self.cwd, self.extra_path = cwd, [str(p) for p in extra_path]

    def __call__(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([*self.extra_path, os.environ.get("PYTHONPATH", "")]),
                   COLUMNS="200")
        return subprocess.run([sys.executable, "-m", "fedfuse.bench.cli.main", *args], cwd=self.cwd, env=env,
                              capture_output=True, text=True, timeout=timeout)

    def results(self, out: Path) -> list[dict]:
        done = self("results", "--out", str(out), "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)


@pytest.fixture
def cli(tmp_path) -> CLI:
    return CLI(tmp_path)


@pytest.fixture(scope="session")
def plugin_site(tmp_path_factory) -> Path:
    """The template plugin and two broken fixture plugins (a failing client, a misspelt hook), pip-installed into a folder of their
    own (``--target``), so entry points are discovered exactly as for any installed package."""
    site = tmp_path_factory.mktemp("plugin-site")
    sources = []
    fixtures = ROOT / "tests" / "fixtures"
    for src in (ROOT / "examples" / "plugin-template", fixtures / "failing-plugin", fixtures / "typo-plugin"):
        copy = tmp_path_factory.mktemp("src") / src.name
        shutil.copytree(src, copy)
        sources.append(str(copy))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(site), *sources], check=True, capture_output=True)
    return site


@pytest.fixture
def plugin_cli(tmp_path, plugin_site) -> CLI:
    return CLI(tmp_path, [plugin_site])


def write_suite(path: Path, protocols: str, **matrix: str) -> Path:
    """A small suite file: digits, one seed, 2 clients, 1 round; ``matrix`` values (TOML
    text, e.g. ``rounds="2"``) override those."""
    keys = {"datasets": '["digits"]', "seeds": "[0]", "clients": "2", "rounds": "1", **matrix}
    lines = "\n".join(f"{k} = {v}" for k, v in keys.items())
    path.write_text(f'format = 1\n[suite]\nname = "test"\nversion = "1"\n[matrix]\n{lines}\n{protocols}')
    return path
