"""Shared fixtures: run the real CLI in a subprocess, install test plugins for real."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import CLI, ROOT


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
