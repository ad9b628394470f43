"""Shared fixtures: run the real CLI in a subprocess, install test plugins for real."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import CLI, ROOT, make_celeba, write_suite


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
    tail no other worker can share; the short ones fill in at the end. And the shared track run
    starts at once, in the background, when a selected test needs it: the workers go on with
    other tests meanwhile (the tests that read it come last among the slow ones, so that no
    worker waits for it while other end-to-end tests are still to run)."""
    def order(item) -> tuple[bool, bool]:
        return item.get_closest_marker("slow") is None, "quick_track" in getattr(item, "fixturenames", ())

    items.sort(key=order)
    if config.option.collectonly:
        return
    if any("quick_track" in getattr(item, "fixturenames", ()) for item in items):
        start_quick_track(session_root(config))
    users = [item for item in items if "shared_run" in getattr(item, "fixturenames", ())]
    if len(users) >= WHOLE_SESSION:  # a whole end-to-end run, not a test or two being worked on
        start_shared_runs(session_root(config))


WHOLE_SESSION = 8  # tests reading shared runs: from this many, start them all at once in the background


def start_in_background(root: Path, name: str, command: str) -> None:
    """``command`` in the background, once per session (the first worker to get here starts
    it), its output in ``name.log``, its exit status in ``name.rc`` when it has ended."""
    from filelock import FileLock

    with FileLock(str(root / f"{name}.lock")):
        if (root / f"{name}.log").exists():
            return
        log = open(root / f"{name}.log", "w")
        full = f"{command}; echo $? > {shlex.quote(str(root / f'{name}.rc'))}"
        subprocess.Popen(["sh", "-c", full], cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def start_shared_runs(root: Path) -> None:
    """Every shared run (helpers.SHARED_RUNS, and the failing plugins' run with the plugin site
    installed first), each a ``fedfuse run`` in the background: the tests that read one wait for
    it instead of one worker running it while another waits on its lock."""
    from helpers import FAILING, SHARED_RUNS

    for name, spec in SHARED_RUNS.items():
        spec = dict(spec)
        protocols, cli_args, top = spec.pop("protocols"), spec.pop("cli_args", ()), spec.pop("top", "")
        start_run(root, name, write_suite(root / f"{name}.toml", protocols, top=top, **spec), cli_args)
    site = install_plugin_site(root)  # the failing plugins' run (helpers.failing_run)
    start_run(root, "failing", write_suite(root / "failing.toml", FAILING), (),
              f"PYTHONPATH={shlex.quote(str(site))}${{PYTHONPATH:+:$PYTHONPATH}} ")


def start_run(root: Path, name: str, suite: Path, cli_args=(), env: str = "") -> None:
    args = " ".join(shlex.quote(a) for a in ("run", str(suite), "--out", str(root / name), *cli_args))
    start_in_background(root, name, f"{env}COLUMNS=200 {shlex.quote(sys.executable)} -m fedfuse.bench.cli {args}")


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
    deadline = time.time() + 1800
    while not (root / "quick-track.rc").is_file() and time.time() < deadline:
        time.sleep(1)
    rc = (root / "quick-track.rc").read_text().strip() if (root / "quick-track.rc").is_file() else "timeout"
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

    def run(name: str, protocols: str, cli_args=(), top: str = "", extra_path=(), **matrix: str) -> Path:
        out, rc, log = root / name, root / f"{name}.rc", root / f"{name}.log"
        with FileLock(str(root / f"{name}.lock")):
            if not rc.is_file() and not log.exists():  # neither run here nor started in the background
                suite = write_suite(root / f"{name}.toml", protocols, top=top, **matrix)
                done = CLI(root, extra_path)("run", str(suite), "--out", str(out), *cli_args, timeout=900)
                log.write_text(done.stdout + done.stderr)
                rc.write_text(str(done.returncode))
        deadline = time.time() + 1800
        while not rc.is_file() and time.time() < deadline:  # started in the background: wait for it
            time.sleep(1)
        if not rc.is_file() or rc.read_text().strip() not in ("0", "1"):
            pytest.fail(f"the shared run {name} ended {rc.read_text() if rc.is_file() else 'late'}:\n{log.read_text()[-3000:]}")
        return out

    return run


@pytest.fixture
def celeba(tmp_path, monkeypatch):
    monkeypatch.setenv("FEDFUSE_CACHE", str(tmp_path / "cache"))
    return make_celeba(tmp_path / "celeba")
