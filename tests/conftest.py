"""Shared fixtures: run the real CLI in a subprocess, install test plugins for real."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

# One torch (OpenMP) thread per process, set before torch is imported here and inherited by every
# process a test starts: two xdist workers, the shared runs' processes and Ray's actors share
# the cores, and OpenMP threads spin-wait when the cores are oversubscribed (the unit tests took
# 2.3x as long with torch's default of a thread per core, beside one background run on 2 cores).
# Cells set their clients' threads themselves (cpus_per_client), as before.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
from helpers import CLI, ROOT, copy_store, make_celeba  # noqa: E402
from shared_runs import plan, shared_run_argv, start_in_background, start_plan, wait_for  # noqa: E402


@pytest.fixture
def cli(tmp_path) -> CLI:
    return CLI(tmp_path)


@pytest.fixture(scope="session")
def plugin_site(pytestconfig) -> Path:
    """The template plugin and two broken fixture plugins (a failing client, a misspelt hook), pip-installed into a folder of their
    own (``--target``), so entry points are discovered exactly as for any installed package. Read only."""
    return install_plugin_site(session_root(pytestconfig))


def install_plugin_site(root: Path) -> Path:
    """``plugin_site``'s folder, installed once per session for all its xdist workers."""
    from filelock import FileLock

    site = root / "plugin-site"
    with FileLock(str(root / "plugin-site.lock")):
        if not (root / "plugin-site.done").is_file():
            fixtures, sources = ROOT / "tests" / "fixtures", []
            for src in (ROOT / "examples" / "plugin-template", fixtures / "failing-plugin", fixtures / "typo-plugin"):
                shutil.copytree(src, root / "plugin-src" / src.name, dirs_exist_ok=True)
                sources.append(str(root / "plugin-src" / src.name))
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(site), *sources], check=True, capture_output=True)
            (root / "plugin-site.done").touch()
    return site


@pytest.fixture
def plugin_cli(tmp_path, plugin_site) -> CLI:
    return CLI(tmp_path, [plugin_site])


def session_root(config) -> Path:
    """The session's temporary folder, common to its xdist workers."""
    root = config._tmp_path_factory.getbasetemp()
    return root.parent if hasattr(config, "workerinput") else root


@pytest.hookimpl(trylast=True)  # after -k and -m have deselected
def pytest_collection_modifyitems(config, items):
    """End-to-end (``slow``) tests first: with several workers, a long test that starts last is a
    tail no other worker can share; the short ones fill in at the end. And the shared runs
    start at once, in the background, when the selected tests need them: the workers go on with
    other tests meanwhile (the tests that read a shared run come last among the slow ones, those
    of the track run, the longest, at the very end, so that no worker waits for one while other
    end-to-end tests are still to run)."""
    def order(item) -> tuple[bool, bool, bool]:
        fixtures = getattr(item, "fixturenames", ())
        return item.get_closest_marker("slow") is None, "shared_run" in fixtures, "quick_track" in fixtures

    items.sort(key=order)
    if config.option.collectonly:
        return
    quick = any("quick_track" in getattr(item, "fixturenames", ()) for item in items)
    users = [item for item in items if "shared_run" in getattr(item, "fixturenames", ())]
    if len(users) >= WHOLE_SESSION:  # a whole end-to-end run, not a test or two being worked on
        start_shared_runs(session_root(config), quick)
    elif quick:
        start_quick_track(session_root(config))


WHOLE_SESSION = 8  # tests reading shared runs: from this many, start them all at once in the background


def start_shared_runs(root: Path, quick_track: bool) -> None:
    """Every shared run in the background as the session begins, so that the tests that read
    one wait for it instead of one worker running it while another waits on its lock: the
    plugin-free ones (helpers.SHARED_RUNS) one after another in one process
    (tests/shared_runs.py: one Ray runtime and one set of warm actors for all), those with the
    test plugins (helpers.PLUGIN_RUNS) the same way in a second process, with the plugin site on
    its path (its plugins stay out of the other runs' registry), and track-edge-quick, if a test
    needs it, in a third (it takes as long as the others together)."""
    from helpers import PLUGIN_RUNS, SHARED_RUNS

    if quick_track:  # the longest: a process of its own from the start
        start_quick_track(root)
    start_plan(root, "shared", plan(root, SHARED_RUNS))
    site = install_plugin_site(root)
    plugins = plan(root, {k: v for k, v in PLUGIN_RUNS.items() if quick_track or "track" not in k})
    start_plan(root, "plugins", plugins, f"PYTHONPATH={shlex.quote(str(site))}${{PYTHONPATH:+:$PYTHONPATH}} ")


def start_quick_track(root: Path) -> None:
    """``track-edge-quick`` into ``root/quick-track``, once per session; ``quick-track.rc`` holds
    its exit status when it has ended."""
    start_in_background(root, "quick-track", f"{shlex.quote(sys.executable)} -m fedfuse.bench.cli run "
                                              f"track-edge-quick --out {shlex.quote(str(root / 'quick-track'))}")


@pytest.fixture(scope="session")
def quick_track(pytestconfig) -> Path:
    """``track-edge-quick`` run once for the whole test session, shared by the xdist workers:
    its output folder, once the run has ended. Read it only; a test that writes copies it first
    (``copy_store``)."""
    root = session_root(pytestconfig)
    start_quick_track(root)  # started at collection; here too for a session that did not collect it
    rc = wait_for(root, "quick-track")
    if rc != "0":
        pytest.fail(f"fedfuse run track-edge-quick ended {rc}:\n{(root / 'quick-track.log').read_text()[-4000:]}")
    return root / "quick-track"


@pytest.fixture(scope="session")
def shared_run(pytestconfig):
    """``shared_run(name, protocols, cli_args=(), top="", extra_path=(), **matrix)``: ``fedfuse
    run`` of a small suite (``write_suite``'s arguments; ``extra_path``: plugin folders, as
    ``CLI``'s) once for the whole test session, shared by the xdist workers: the first test to
    ask runs it (or a whole session started it in the background: start_shared_runs), the
    others wait for it. Returns its output folder, which tests only read. Tests
    that need the same kind of cell assert on one run instead of paying a CLI process, a Ray
    runtime and the cell each. A run that ends 1 (a failed cell) is a result too: ``.rc`` says."""
    from filelock import FileLock

    root = session_root(pytestconfig)

    def run(name: str, protocols: str = "", cli_args=(), top: str = "", extra_path=(), **matrix) -> Path:
        out, rc, log = root / name, root / f"{name}.rc", root / f"{name}.log"
        with FileLock(str(root / f"{name}.lock")):
            if not rc.is_file() and not log.exists():  # neither run here nor started in the background
                spec = dict(matrix, protocols=protocols, cli_args=cli_args, top=top)
                if "copy_from" in spec and not out.exists():
                    copy_store(Path(spec["copy_from"].replace("{root}", str(root))), out)
                done = CLI(root, extra_path)(*shared_run_argv(root, name, spec), timeout=900)
                (root / f"{name}.out").write_text(done.stdout)
                log.write_text(done.stderr)
                rc.write_text(str(done.returncode))
        status = wait_for(root, name)  # started in the background: wait for it
        if status not in ("0", "1"):
            pytest.fail(f"the shared run {name} ended {status}:\n{log.read_text()[-3000:]}")
        return out

    return run


@pytest.fixture
def celeba(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    return make_celeba(tmp_path / "celeba")
