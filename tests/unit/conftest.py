"""Unit tests start no process: no CLI in a subprocess, no Flower run, no Ray. A test that
needs one belongs in tests/e2e/; here it fails at once, naming the rule."""

import subprocess

import pytest


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    def refuse(self, args, *rest, **kwargs):
        raise AssertionError(f"a unit test started a process ({args!r}): move the test to tests/e2e/")

    monkeypatch.setattr(subprocess.Popen, "_execute_child", refuse)
