"""The session's shared runs: planned here for conftest (``start_plan``, ``wait_for``), run
one after another in one process by ``python shared_runs.py PLAN``.

PLAN is a JSON list of ``{"name": ..., "argv": [...]}``, with optionally ``"after"`` (a run,
perhaps another process's, whose ``.rc`` to wait for first) and ``"copy_from"`` (a results
folder to copy into ``NAME`` first, to run on a copy). Each ``fedfuse`` command line runs as
the CLI would run it (``fedfuse.bench.cli.main``): its standard output in ``NAME.out``, its
errors and progress in ``NAME.log``, its exit status in ``NAME.rc`` beside the plan, where
conftest's ``shared_run`` waits for it. One process means one Ray runtime and one set of warm
ClientApp actors for all of them: a run started on its own pays both again (about 20 s of CPU,
which on CI's 2 cores is the larger part of a small run).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

WAIT_S = 1800  # for a run of another process (the track run) that this one's next run needs


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


def plan(root: Path, runs: dict) -> list[dict]:
    """tests/shared_runs.py's plan: each run's command line, and what it waits for and copies."""
    return [{"name": name, "argv": shared_run_argv(root, name, dict(spec)),
             **{k: rooted(spec[k], root) for k in ("after", "copy_from") if k in spec}}
            for name, spec in runs.items()]


def start_plan(root: Path, name: str, runs: list[dict], env: str = "") -> None:
    """``runs`` one after another in one background process (tests/shared_runs.py), once per
    session; ``NAME.rc`` holds its exit status when it has ended."""
    import json

    from filelock import FileLock

    with FileLock(str(root / f"{name}-plan.lock")):  # start_in_background takes NAME.lock
        if not (root / f"{name}.log").exists():
            for run in runs:  # taken: a test waits for these instead of running them itself
                (root / f"{run['name']}.log").write_text(f"queued in a shared runs' process ({root / name}.log)\n")
                (root / f"{run['name']}.process").write_text(name)
            (root / f"{name}.json").write_text(json.dumps(runs))
            start_in_background(root, name, f"{env}{shlex.quote(sys.executable)} "
                                            f"{shlex.quote(str(Path(__file__).resolve()))} {shlex.quote(str(root / f'{name}.json'))}")


def rooted(text: str, root: Path) -> str:
    """``text`` with its ``{root}`` placeholders naming the shared runs' folder."""
    return text.replace("{root}", str(root))


def shared_run_argv(root: Path, name: str, spec: dict) -> list[str]:
    """``fedfuse``'s arguments for the shared run ``name``: its ``argv``, or ``run`` of a suite
    written beside it (with the files it names)."""
    from helpers import write_suite

    if "argv" in spec:  # a command of its own, e.g. a conformance check
        return [rooted(arg, root) for arg in spec["argv"]]
    protocols, cli_args, top = spec.pop("protocols"), spec.pop("cli_args", ()), spec.pop("top", "")
    spec.pop("after", None), spec.pop("copy_from", None)
    for file, text in spec.pop("files", {}).items():
        (root / file).write_text(text)
    spec.pop("prepare", lambda root: None)(root)
    matrix = {key: rooted(value, root) for key, value in spec.items()}
    suite = write_suite(root / f"{name}.toml", protocols, top=top, **matrix)
    return ["run", str(suite), "--out", str(root / name), *cli_args]


def wait_for(root: Path, name: str, limit_s: float = 1800) -> str:
    """The exit status of the background run ``name`` once it has ended ("late" past the
    limit; "lost" if the shared runs' process that had it ended without running it)."""
    rc, deadline = root / f"{name}.rc", time.time() + limit_s
    process = root / f"{name}.process"
    while not rc.is_file() and time.time() < deadline:
        if process.is_file() and (root / f"{process.read_text()}.rc").is_file() and not rc.is_file():
            time.sleep(1)  # the process may have written its .rc a moment ago
            return rc.read_text().strip() if rc.is_file() else "lost"
        time.sleep(1)
    return rc.read_text().strip() if rc.is_file() else "late"


def run_one(argv: list[str], out: Path, log: Path) -> int:
    """``fedfuse ARGV`` in this process: its exit status (99: it raised)."""
    from fedfuse.bench.cli.main import main as fedfuse

    with open(out, "w") as stdout, open(log, "w") as stderr, \
            contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            return fedfuse(argv)
        except SystemExit as stop:  # argparse's refusals
            return stop.code if isinstance(stop.code, int) else 2
        except Exception:  # a crash of one run is that run's result, not the others'
            traceback.print_exc()
            return 99


def main(plan_file: str) -> None:
    root = Path(plan_file).parent
    os.environ.setdefault("COLUMNS", "200")
    for run in json.loads(Path(plan_file).read_text()):
        print(f"shared run {run['name']}: fedfuse {' '.join(run['argv'])}", flush=True)
        if "after" in run and (status := wait_for(root, run["after"], WAIT_S)) != "0":
            (root / f"{run['name']}.rc").write_text(f"{run['after']} ended {status}")
            continue
        if "copy_from" in run:
            shutil.copytree(run["copy_from"], root / run["name"], ignore=shutil.ignore_patterns("*.lock"))
        rc = run_one(run["argv"], root / f"{run['name']}.out", root / f"{run['name']}.log")
        (root / f"{run['name']}.rc").write_text(str(rc))
        print(f"shared run {run['name']}: exit {rc}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
