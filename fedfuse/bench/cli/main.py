"""The ``fedfuse`` command line.

Exit codes: 0 success; 1 a cell failed (the others ran and are stored); 2 bad input
(suite, --set, unknown plugin name) — reported before anything runs or is written.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from fedfuse.datasets import DatasetError
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import PluginError, registry

DEFAULT_OUT = "fedfuse-out"


def console() -> Console:
    """Rich draws 80 columns when output is not a terminal; tables need a little more."""
    import shutil

    return Console(width=max(shutil.get_terminal_size((120, 24)).columns, 120))
LISTABLE = ("protocols", "datasets", "partitioners", "metrics", "profiles", "suites")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedfuse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a suite (a shipped name or a TOML path)")
    run.add_argument("suite")
    run.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default ./{DEFAULT_OUT})")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override: rounds=3, seeds=[0], <protocol>.<config key>=value")
    run.add_argument("--only", metavar="PATTERN", help="run only cells whose name matches (glob or substring)")
    run.add_argument("--rerun", action="store_true", help="run cells again even if already ok")
    run.add_argument("--wandb", action="store_true", help="publish each cell to W&B (offline) as it finishes")
    run.add_argument("--accelerator", choices=("auto", "cpu", "cuda"), help="where models train (overrides [resources])")
    run.add_argument("--precision", choices=("32-true", "bf16-mixed", "16-mixed"), help="Fabric precision")
    run.add_argument("--gpus-per-client", type=float, help="Ray's num_gpus per ClientApp (fractional: shared GPU)")
    run.add_argument("--cpus-per-client", type=int, help="Ray's num_cpus per ClientApp (and its torch threads)")
    run.add_argument("--backend", choices=("simulation", "deployment"), default="simulation",
                     help="Flower's simulation engine here (default), or a SuperLink with SuperNodes")
    run.add_argument("--superlink", metavar="HOST:PORT", help="deployment: the SuperLink's API address")
    run.add_argument("--root-certificates", metavar="PATH", help="deployment: the CA that signed the SuperLink's certificate")
    run.add_argument("--insecure", action="store_true", help="deployment: the SuperLink runs without TLS")
    lst = sub.add_parser("list", help="list what the plugins provide")
    lst.add_argument("what", choices=LISTABLE)
    sub.add_parser("plugins", help="registered plugins and where each comes from")
    data = sub.add_parser("data", help="inspect datasets and partitions")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    show = data_sub.add_parser("show", help="a partition's per-client class counts and heterogeneity")
    show.add_argument("dataset")
    show.add_argument("--partitioner", default="iid")
    show.add_argument("--clients", type=int, default=10)
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--arg", action="append", default=[], metavar="K=V", help="partitioner argument")
    show.add_argument("--data-arg", action="append", default=[], metavar="K=V", help="dataset argument")
    show.add_argument("--plot", metavar="PNG", nargs="?", const="partition.png", help="also save a heatmap")
    board = sub.add_parser("leaderboard", help="configurations ranked per track, mean ± std over seeds")
    board.add_argument("--out", default=DEFAULT_OUT)
    board.add_argument("--format", choices=("md", "html", "json"), default="md")
    board.add_argument("--dest", help="write to this file instead of stdout")
    board.add_argument("--plot", nargs=2, metavar=("X", "Y"), help="also save a trade-off plot of metric Y vs X")
    pub = sub.add_parser("publish", help="publish results to a target (wandb, or one a plugin adds)")
    pub.add_argument("target")
    pub.add_argument("--out", default=DEFAULT_OUT)
    pub.add_argument("--project", default="fedfuse")
    pub.add_argument("--entity")
    pub.add_argument("--mode", choices=("offline", "online"), default="offline")
    res = sub.add_parser("results", help="one record per cell")
    res.add_argument("--out", default=DEFAULT_OUT)
    res.add_argument("--format", choices=("table", "json", "csv"), default="table")
    deploy = sub.add_parser("deploy", help="start Flower's deployment engine for `run --backend deployment`")
    where = deploy.add_subparsers(dest="where", required=True)
    local = where.add_parser("local", help="a SuperLink and N SuperNodes on this machine, until Ctrl-C")
    local.add_argument("--nodes", type=int, required=True, help="SuperNodes to start here (partition-id 0..N-1); 0: the SuperLink alone")
    trust = local.add_mutually_exclusive_group(required=True)
    trust.add_argument("--tls", action="store_true", help="make a self-signed CA and serve over TLS")
    trust.add_argument("--insecure", action="store_true", help="no TLS (say so explicitly)")
    local.add_argument("--out", default=f"{DEFAULT_OUT}/deploy", help="logs, certificates, Flower state")
    local.add_argument("--host", default="127.0.0.1", help="interface the SuperLink listens on (0.0.0.0: all)")
    local.add_argument("--port", type=int, default=0, help="the SuperLink's port (default: a free one)")
    local.add_argument("--advertise", action="append", default=[], metavar="NAME_OR_IP",
                       help="another name the SuperLink is reached by (put in its certificate)")
    return parser


def main(argv: list[str] | None = None) -> int:
    from fedfuse.bench.engine.outlock import OutputBusy
    from fedfuse.leaderboard.store import StoreError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (ConfigError, PluginError, DatasetError, StoreError, OutputBusy) as err:
        print(f"fedfuse: error: {err}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as stop:
        stop_now(stop)
    except SystemExit as stop:  # ray.init's own SIGTERM handler exits with the signal's number
        if stop.code != signal.SIGTERM:
            raise
        stop_now(Terminated())


class Terminated(BaseException):
    """SIGTERM (a scheduler, ``timeout``), handled as Ctrl-C is."""


def on_sigterm(signum, frame):
    raise Terminated()


def stop_now(stop: BaseException) -> None:
    """Exit at once after an interruption: the running cell is already marked ``interrupted``
    (the runner does that); end every child process (Ray, Flower) and skip the interpreter's
    shutdown, whose thread pools can wait minutes for workers that will never answer."""
    import psutil

    code = 143 if isinstance(stop, Terminated) else 130
    print(f"fedfuse: {'terminated' if code == 143 else 'interrupted'}; finished cells are kept, the running one "
          "is marked interrupted and runs again next time", file=sys.stderr)
    children = psutil.Process().children(recursive=True)
    for child in children:
        child.terminate()
    psutil.wait_procs(children, timeout=5)
    for child in children:
        if child.is_running():
            child.kill()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_run(args) -> int:
    from fedfuse.bench.engine.outlock import OutputLock
    from fedfuse.bench.engine.runner import select
    from fedfuse.bench.suites.expand import expand
    from fedfuse.bench.suites.parse import load_suite
    from fedfuse.bench.suites.preflight import preflight

    reg = registry()
    suite = load_suite(args.suite, args.set, resource_flags(args))
    check_system(suite.resources)
    cells = select(expand(suite, reg), args.only)  # every check happens before anything is written
    if not cells:
        raise ConfigError(f"--only {args.only!r} matches no cell of suite '{suite.header.name}'")
    preflight(cells)  # the data of every cell, before anything is written
    engine = _engine(args)
    signal.signal(signal.SIGTERM, on_sigterm)
    with OutputLock(Path(args.out)):
        return run_cells(reg, args, suite, cells, engine)


def run_cells(reg, args, suite, cells, engine) -> int:
    """Run the cells while this process holds the output folder (see cmd_run)."""
    from fedfuse.bench.cli.progress import ProgressDisplay
    from fedfuse.bench.engine.runner import SuiteRunner
    from fedfuse.leaderboard.tables import rich_table

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
    console().print(rich_table(runner.store.records([c.cell_id for c in cells])))
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
    names = ("accelerator", "precision", "gpus_per_client", "cpus_per_client")
    return {n: getattr(args, n) for n in names if getattr(args, n) is not None}


def _engine(args):
    """None for the simulation engine; a DeploymentEngine for ``--backend deployment``."""
    given = [f"--{k.replace('_', '-')}" for k in ("superlink", "root_certificates", "insecure") if getattr(args, k)]
    if args.backend == "simulation":
        if given:
            raise ConfigError(f"{', '.join(given)} only apply to --backend deployment")
        return None
    from fedfuse.bench.engine.deployment import DeploymentEngine, SuperLink

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


def cmd_list(args) -> int:
    if args.what == "suites":
        return _list_suites()
    reg = registry()
    table = Table(title=f"fedfuse {args.what}")
    columns = {"protocols": ("version", "summary"), "datasets": ("image_shape", "num_classes", "license", "source", "summary"),
               "partitioners": ("args", "summary"), "metrics": ("unit", "higher_is_better", "aggregate"),
               "profiles": ("kind", "figures", "description")}[args.what]
    for header in ("name", *columns, "plugin"):
        table.add_column(header)
    for name, entry in sorted(reg.entries(args.what).items(), key=lambda kv: (getattr(kv[1].spec, "kind", ""), kv[0])):
        table.add_row(name, *(_cell(entry.spec, c) for c in columns), entry.plugin)
    console().print(table)
    return 0


def _cell(spec, column: str) -> str:
    if column == "figures":
        from fedfuse.bench.costs.hardware import key_figures

        return key_figures(spec)
    return str(getattr(spec, column))


def _list_suites() -> int:
    import tomllib

    from fedfuse.bench.suites.parse import shipped_suites

    table = Table(title="fedfuse suites (shipped)")
    for header in ("name", "version", "description", "path"):
        table.add_column(header)
    for name, path in sorted(shipped_suites().items()):
        header = tomllib.loads(path.read_text()).get("suite", {})
        table.add_row(name, str(header.get("version", "")), header.get("description", ""), str(path))
    console().print(table)
    return 0


def cmd_plugins(args) -> int:
    table = Table(title="fedfuse plugins")
    table.add_column("plugin")
    table.add_column("source")
    for name, source in registry().plugins():
        table.add_row(name, source)
    console().print(table)
    return 0


def cmd_data(args) -> int:
    from fedfuse.bench.cli.datashow import show_partition

    show_partition(args, console())
    return 0


def cmd_leaderboard(args) -> int:
    from fedfuse.bench.engine.results import ranked_rows, read_records
    from fedfuse.leaderboard import render

    records = read_records(args.out)
    rows = ranked_rows(records, registry())
    if args.format == "html":
        from fedfuse.leaderboard.html import page

        text = page(rows, records, Path(args.dest or "leaderboard.html").resolve())
    else:
        text = render.markdown(rows) if args.format == "md" else render.to_json(rows)
    if args.dest:
        Path(args.dest).write_text(text + "\n")
    else:
        print(text)
    if args.plot:
        target = Path(args.dest or "leaderboard").with_suffix(".png")
        render.tradeoff_plot(rows, args.plot[0], args.plot[1], target, f"{args.plot[1]} vs {args.plot[0]}")
    return 0


def cmd_publish(args) -> int:
    from fedfuse.bench.engine.results import ranked_rows, read_records
    records = read_records(args.out)
    options = {"project": args.project, "entity": args.entity, "mode": args.mode, "out": args.out,
               "dir": str(Path(args.out).resolve()), "rows": ranked_rows(records, registry())}
    answer = registry().pm.hook.fedfuse_publish(results=records, target=args.target, options=options)
    if answer is None:
        raise PluginError(f"no plugin publishes to '{args.target}' (built in: wandb)")
    print(f"published {answer}")
    return 0


def cmd_results(args) -> int:
    from fedfuse.bench.engine.results import read_records
    from fedfuse.leaderboard.tables import rich_table, to_csv, to_json

    records = read_records(args.out)
    if args.format == "table":
        console().print(rich_table(records))
    else:
        sys.stdout.write(to_json(records) + "\n" if args.format == "json" else to_csv(records))
    return 0


def cmd_deploy(args) -> int:
    from fedfuse.bench.engine.deploy_local import LocalDeployment, serve

    if args.nodes < 0:
        raise ConfigError(f"--nodes must be >= 0 (0: the SuperLink alone), got {args.nodes}")
    try:
        return serve(LocalDeployment(Path(args.out), args.nodes, args.tls, args.host, args.port, args.advertise))
    except RuntimeError as err:
        print(f"fedfuse: error: {err}", file=sys.stderr)
        return 1


COMMANDS = {"run": cmd_run, "deploy": cmd_deploy, "list": cmd_list, "plugins": cmd_plugins, "results": cmd_results, "data": cmd_data,
            "leaderboard": cmd_leaderboard, "publish": cmd_publish}

if __name__ == "__main__":
    sys.exit(main())
