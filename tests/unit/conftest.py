"""Unit tests start no process: no CLI in a subprocess, no Flower run, no Ray. A test that
needs one belongs in tests/e2e/; here it fails at once, naming the rule."""

import subprocess

import pytest
from helpers import InProcessCLI

#: what libraries start on their own, once per machine: matplotlib lists the fonts it may use
ALLOWED = {"fc-list"}


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    spawn = subprocess.Popen._execute_child

    def refuse(self, args, *rest, **kwargs):
        program = args[0] if isinstance(args, (list, tuple)) else str(args).split()[0]
        if program.rsplit("/", 1)[-1] in ALLOWED:
            return spawn(self, args, *rest, **kwargs)
        raise AssertionError(f"a unit test started a process ({args!r}): move the test to tests/e2e/")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)


@pytest.fixture
def cli():
    """``fedfuse`` in this process: for commands that start no process (parsing, listing, refusals)."""
    return InProcessCLI()
