"""The session's shared runs, one after another in one process: ``python shared_runs.py PLAN``.

PLAN is a JSON list of ``{"name": ..., "argv": [...]}``, with optionally ``"after"`` (a run,
perhaps another process's, whose ``.rc`` to wait for first) and ``"copy_from"`` (a results
folder to copy into ``NAME`` first, to run on a copy): each ``fedfuse`` command line runs as
the CLI would run it (``fedfuse.bench.cli.main``), its standard output in ``NAME.out``, its
errors and progress in ``NAME.log`` and its exit status in ``NAME.rc`` beside the plan, where conftest's ``shared_run`` waits for it. One process
means one Ray runtime and one set of warm ClientApp actors for all of them: a run started on
its own pays both again (about 20 s of CPU each, which on CI's 2 cores is the larger part of a
small run).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import time
import traceback
from pathlib import Path

WAIT_S = 1800  # for a run of another process (the track run) that this one's next run needs


def run_one(argv: list[str], out: Path, log: Path) -> int:
    from fedfuse.bench.cli.main import main

    with open(out, "w") as stdout, open(log, "w") as stderr, \
            contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            return main(argv)
        except SystemExit as stop:  # argparse's refusals
            return stop.code if isinstance(stop.code, int) else 2
        except Exception:  # a crash of one run is that run's result, not the others'
            traceback.print_exc()
            return 99


def main(plan_path: str) -> None:
    plan = Path(plan_path)
    os.environ.setdefault("COLUMNS", "200")
    for run in json.loads(plan.read_text()):
        print(f"shared run {run['name']}: fedfuse {' '.join(run['argv'])}", flush=True)
        if "after" in run and not ready(plan.parent / f"{run['after']}.rc"):
            (plan.parent / f"{run['name']}.rc").write_text(f"{run['after']} failed or never ended")
            continue
        if "copy_from" in run:
            shutil.copytree(run["copy_from"], plan.parent / run["name"], ignore=shutil.ignore_patterns("*.lock"))
        rc = run_one(run["argv"], plan.parent / f"{run['name']}.out", plan.parent / f"{run['name']}.log")
        (plan.parent / f"{run['name']}.rc").write_text(str(rc))
        print(f"shared run {run['name']}: exit {rc}", flush=True)


def ready(rc: Path) -> bool:
    """Whether the run whose exit status ``rc`` will hold ends well (waits for it)."""
    deadline = time.time() + WAIT_S
    while not rc.is_file() and time.time() < deadline:
        time.sleep(1)
    return rc.is_file() and rc.read_text().strip() == "0"


if __name__ == "__main__":
    main(sys.argv[1])
