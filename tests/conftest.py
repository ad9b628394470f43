"""Shared fixtures: run the real CLI in a subprocess, install test plugins for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CLI, ROOT, make_celeba


def pytest_collection_modifyitems(items):
    """End-to-end (``slow``) tests first: with several workers, a long test that starts last is a
    tail no other worker can share; the short ones fill in at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


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


@pytest.fixture(scope="session")
def quick_track(tmp_path_factory, worker_id) -> Path:
    """``track-edge-quick`` run once for the whole test session, shared by the xdist workers (the
    first to ask runs it under a lock, the others wait and read it): its output folder. Read it
    only; a test that writes copies it first (``copy_store``)."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    root = root.parent if worker_id != "master" else root  # the session's folder, common to its workers
    out, failed = root / "quick-track", root / "quick-track.failed"
    with FileLock(str(root / "quick-track.lock")):
        if not (out / "results.sqlite").is_file() and not failed.is_file():
            done = CLI(root)("run", "track-edge-quick", "--out", str(out), timeout=1800)
            if done.returncode != 0:
                failed.write_text(done.stdout[-3000:] + done.stderr[-3000:])
    if failed.is_file():
        pytest.fail(f"fedfuse run track-edge-quick failed:\n{failed.read_text()}")
    return out


@pytest.fixture
def celeba(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    return make_celeba(tmp_path / "celeba")
