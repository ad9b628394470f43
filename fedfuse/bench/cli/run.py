"""`fedfuse run` and `fedfuse deploy`: run a suite's cells, here or on a SuperLink."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from fedfuse.bench.cli.common import console, stop_on_signals
from fedfuse.bench.cli.reaper import reap_on_exit
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import registry


def cmd_run(args) -> int:
    from fedfuse.results.outlock import OutputLock
    from fedfuse.bench.engine.runner import select, settle_running
    from fedfuse.bench.suites.expand import expand
    from fedfuse.bench.suites.parse import load_suite
    from fedfuse.bench.suites.preflight import preflight

    reg = registry()
    suite = load_suite(args.suite, args.set, resource_flags(args), tuning=args.tuning, entry=args.entry)
    check_system(suite.resources)
    cells = select(expand(suite, reg), args.only)  # every check happens before anything is written
    if not cells:
        raise ConfigError(f"--only {args.only!r} matches no cell of suite '{suite.header.name}'")
    preflight(cells)  # the data of every cell, before anything is written
    engine = _engine(args)
    stop_on_signals(lambda: settle_running(Path(args.out)))
    with OutputLock(Path(args.out)):
        reap_on_exit()  # before any process starts: Ray's (or Flower's) end with this one, SIGKILL included
        return run_cells(reg, args, suite, cells, engine)


def run_cells(reg, args, suite, cells, engine) -> int:
    """Run the cells while this process holds the output folder (see cmd_run)."""
    from fedfuse.bench.cli.progress import ProgressDisplay
    from fedfuse.bench.engine.runner import SuiteRunner
    from fedfuse.leaderboard.tables import rich_table
    from fedfuse.results.store import ResultStore

    runner = SuiteRunner(reg, Path(args.out), suite.digest, rerun=args.rerun, engine=engine)
    observers = {"fedfuse-progress": ProgressDisplay(len(cells))}
    if args.wandb:
        from fedfuse.leaderboard.wandb_sink import LivePublisher

        options = {"project": "fedfuse", "mode": "offline", "dir": str(Path(args.out).resolve())}
        observers["fedfuse-wandb-live"] = LivePublisher(runner.store, options)
    with observers["fedfuse-progress"] as display:
        for name, plugin in observers.items():
            reg.pm.register(plugin, name=name)
        try:
            outcomes = [_run_or_skip(runner, display, cell) for cell in cells]
        finally:
            for plugin in observers.values():
                reg.pm.unregister(plugin)
            runner.store.close()  # at rest the store is one file (results.sqlite)
    stored = ResultStore(Path(args.out) / "results.sqlite", readonly=True)
    console().print(rich_table(stored.records([c.cell_id for c in cells])))
    return 1 if any(o.status == "failed" for o in outcomes) else 0


def check_system(resources: dict) -> None:
    """A suite that asks for a GPU, on a machine whose torch sees none, stops before anything
    is written (Ray would otherwise wait forever for a GPU share)."""
    import torch

    wants = resources.get("accelerator") == "cuda" or resources.get("gpus_per_client", 0) > 0
    if wants and not torch.cuda.is_available():
        raise ConfigError("this suite asks for a GPU (accelerator = 'cuda' or gpus_per_client > 0) but torch sees no "
                          "CUDA device; to run it on the CPU: --accelerator cpu --gpus-per-client 0")


def resource_flags(args) -> dict:
    names = ("accelerator", "precision", "gpus_per_client", "cpus_per_client", "compile")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _engine(args):
    """None for the simulation engine (on the Ray cluster of ``--ray-address``, which Ray reads
    as RAY_ADDRESS); a DeploymentEngine for ``--backend deployment``."""
    given = [f"--{k.replace('_', '-')}" for k in ("superlink", "root_certificates", "insecure") if getattr(args, k)]
    if args.backend == "simulation":
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --backend deployment")
        if args.ray_address:
            os.environ["RAY_ADDRESS"] = args.ray_address
        return None
    if args.ray_address:
        raise ConfigError("--ray-address applies to --backend simulation (a deployment runs on its SuperNodes)")
    from fedfuse.deploy.engine import DeploymentEngine, SuperLink

    if not args.superlink:
        raise ConfigError("--backend deployment needs --superlink HOST:PORT (see `fedfuse deploy local`)")
    certs = Path(args.root_certificates) if args.root_certificates else None
    engine = DeploymentEngine(SuperLink(args.superlink, certs, args.insecure), Path(args.out))
    engine.check()
    return engine


def _run_or_skip(runner, display, cell):
    outcome = runner.run_one(cell)
    if outcome.status == "skipped":
        display.skipped(cell.name)
    return outcome


def cmd_deploy(args) -> int:
    from fedfuse.deploy.local import LocalDeployment, serve

    if args.nodes < 0:
        raise ConfigError(f"--nodes must be >= 0 (0: the SuperLink alone), got {args.nodes}")
    reap_on_exit()  # the SuperLink, SuperNodes and executors end with this process, SIGKILL included
    try:
        return serve(LocalDeployment(Path(args.out), args.nodes, args.tls, args.host, args.port, args.advertise))
    except RuntimeError as err:
        print(f"fedfuse: error: {err}", file=sys.stderr)
        return 1


def cmd_worker(args) -> int:
    """Run one SuperNode's ClientApp tasks in this process until stopped (deploy/executor.py)."""
    from fedfuse.deploy.executor import log_tasks, serve_executor

    log_tasks()
    serve_executor(args.supernode)
    return 0
