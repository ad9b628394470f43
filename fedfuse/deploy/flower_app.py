"""The Flower app that Flower's deployment engine runs: one ServerApp and one ClientApp for
every protocol. ``flwr run`` ships a FAB whose pyproject names these two objects; the cell
travels in the run config (``fedfuse-cell``), so the same code serves any suite.

The ServerApp runs where the SuperLink starts it, on the SuperLink's machine, beside the
runner that submitted the run: it reports each round as a JSON line in the cell's run
directory (``rounds.jsonl``) and the outcome in ``result.json``, which the runner follows
(``fedfuse.deploy.engine``). The ClientApps run on the SuperNodes and load their own
partition there: raw data never travels.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path

from flwr.serverapp import ServerApp

from fedfuse.bench.engine.flower import CellClientApp, serve
from fedfuse.bench.engine.services import RUN_CONFIG_KEY, RUN_DIR_KEY
from fedfuse.files import write_atomic
from fedfuse.bench.suites.cells import CellSpec

ROUNDS_FILE, RESULT_FILE, SERVER_FILE = "rounds.jsonl", "result.json", "serverapp.json"

PYPROJECT = """\
# Written by fedfuse: the Flower app that `flwr run` submits for each cell.
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "fedfuse-cell"
version = "{version}"
description = "fedfuse: any protocol's cell on Flower's deployment engine"
dependencies = []  # fedfuse is installed on every machine; nothing is installed per run

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedfuse"

[tool.flwr.app.components]
serverapp = "fedfuse.deploy.flower_app:server_app"
clientapp = "fedfuse.deploy.flower_app:client_app"

[tool.flwr.app.config]
{run_config_key} = ""
{run_dir_key} = ""
"""

client_app = CellClientApp()
server_app = ServerApp()


def write_app(directory: Path) -> Path:
    """The app's directory (only a pyproject.toml: the code is the installed fedfuse)."""
    from fedfuse import __version__

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(PYPROJECT.format(
        version=__version__, run_config_key=json.dumps(RUN_CONFIG_KEY), run_dir_key=json.dumps(RUN_DIR_KEY)))
    return directory


def write_json_atomic(path: Path, value: dict) -> None:
    write_atomic(path, lambda tmp: tmp.write_text(json.dumps(value)))


@server_app.main()
def main(grid, context) -> None:
    from fedfuse.deploy.flower_patches import shorten_grid_pulls, warn_unless

    warn_unless(shorten_grid_pulls(), "ServerApp")  # Flower's 1 s, 2 s, 4 s... retries (flower_patches.py)
    run_dir = Path(str(context.run_config[RUN_DIR_KEY]))
    if not run_dir.is_dir():  # the runner and this ServerApp must share the SuperLink's machine
        raise RuntimeError(f"run directory {run_dir} not found on the SuperLink's machine: run `fedfuse run` "
                           "there (docs/deployment.md)")
    write_json_atomic(run_dir / SERVER_FILE, this_process())  # the runner watches it instead of asking Flower
    try:
        outcome = {"status": "ok", "metrics": run_cell_here(grid, context.run_config[RUN_CONFIG_KEY], run_dir)}
    except Exception as err:  # noqa: BLE001 — reported to the runner, which records the cell as failed
        outcome = {"status": "failed", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()}
    write_json_atomic(run_dir / RESULT_FILE, outcome)


def this_process() -> dict:
    import os

    import psutil

    return {"pid": os.getpid(), "started": psutil.Process().create_time()}


def run_cell_here(grid, cell_json: str, run_dir: Path) -> dict:
    """The cell's server loop in this process; every round appended to ``rounds.jsonl``."""
    from fedfuse.bench.engine.services import ServerRun
    from fedfuse.plugins.manager import registry

    cell, reg = CellSpec.from_json(cell_json), registry()
    run = ServerRun.for_cell(cell, run_dir, reg)
    with (run_dir / ROUNDS_FILE).open("a") as log:
        def report(line: dict) -> None:
            log.write(json.dumps(line) + "\n")
            log.flush()

        run.on_round = lambda record: report({"round": record})
        run.on_status = lambda message: report({"status": message})
        return serve(grid, run, reg.get("protocols", cell.protocol).load_server())
