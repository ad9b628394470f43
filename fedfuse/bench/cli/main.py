"""The ``fedfuse`` command line.

Exit codes: 0 success; 1 a cell failed (the others ran and are stored); 2 bad input
(suite, --set, unknown plugin name) — reported before anything runs or is written.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys

from fedfuse.bench.cli.common import Terminated, stop_now
from fedfuse.datasets import DatasetError
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import PluginError

DEFAULT_OUT = "fedfuse-out"
UNWRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT)  # the user's disk, not a bug
LISTABLE = ("protocols", "datasets", "partitioners", "metrics", "profiles", "suites", "studies")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedfuse", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (add_run_parser, add_inspect_parsers, add_check_parser, add_data_parser, add_results_parsers,
                add_submission_parsers, add_deploy_parsers, add_profile_parser):
        add(sub)
    return parser


def add_run_parser(sub) -> None:
    """`fedfuse run`: a suite or track, where and how its cells run."""
    run = sub.add_parser("run", help="run a suite (a shipped name or a TOML path)")
    run.add_argument("suite")
    run.add_argument("--out", default=DEFAULT_OUT, help=f"output directory (default ./{DEFAULT_OUT})")
    run.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                     help="override: rounds=3, seeds=[0], <protocol>.<config key>=value")
    run.add_argument("--only", metavar="PATTERN", help="run only cells whose name matches (glob or substring)")
    run.add_argument("--rerun", action="store_true", help="run cells again even if already ok")
    run.add_argument("--entry", metavar="FILE",
                     help="a track: run these [[protocols]] on its task instead of its own entries (docs/tracks.md)")
    run.add_argument("--tuning", action="store_true",
                     help="a track: run on its tuning seeds (tune there; its evaluation seeds are for reporting)")
    run.add_argument("--wandb", action="store_true", help="publish each cell to W&B (offline) as it finishes")
    run.add_argument("--accelerator", choices=("auto", "cpu", "cuda"), help="where models train (overrides [resources])")
    run.add_argument("--precision", choices=("32-true", "bf16-mixed", "16-mixed"), help="Fabric precision")
    run.add_argument("--gpus-per-client", type=float, help="Ray's num_gpus per ClientApp (fractional: shared GPU)")
    run.add_argument("--cpus-per-client", type=int, help="Ray's num_cpus per ClientApp (and its torch threads)")
    run.add_argument("--compile", metavar="true|false|BACKEND",
                     help="torch.compile what clients train, checked against eager first (true: inductor)")
    run.add_argument("--ray-address", metavar="HOST:PORT",
                     help="simulation: join this running Ray cluster (default: $RAY_ADDRESS, else start Ray here)")
    run.add_argument("--backend", choices=("simulation", "deployment"), default="simulation",
                     help="Flower's simulation engine here (default), or a SuperLink with SuperNodes")
    run.add_argument("--superlink", metavar="HOST:PORT", help="deployment: the SuperLink's API address")
    run.add_argument("--root-certificates", metavar="PATH", help="deployment: the CA that signed the SuperLink's certificate")
    run.add_argument("--insecure", action="store_true", help="deployment: the SuperLink runs without TLS")


def add_inspect_parsers(sub) -> None:
    """`fedfuse list`, `show protocol`: what the plugins provide."""
    lst = sub.add_parser("list", help="list what the plugins provide")
    lst.add_argument("what", choices=LISTABLE)
    lst.add_argument("-v", "--verbose", action="store_true", help="protocols: also every config field")
    show_protocol = sub.add_parser("show", help="one protocol: its config fields with type, default and help")
    show_protocol.add_argument("kind", choices=("protocol",))
    show_protocol.add_argument("name")


def add_check_parser(sub) -> None:
    """`fedfuse check protocol` and `fedfuse plugins`: a plugin's contract, and where each comes from."""
    check = sub.add_parser("check", help="run a protocol on a tiny cell and check the plugin contract")
    check.add_argument("kind", choices=("protocol",))
    check.add_argument("name")
    check.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="config override for the tiny cell (default: tiny presets, 2 local steps)")
    check.add_argument("--data-arg", action="append", default=[], metavar="K=V",
                       help="an argument of the digits dataset, e.g. public_classes=[5,6,7,8,9] for fine-tuning")
    check.add_argument("--rounds", type=int, default=2, help="rounds of the checked cell (default 2)")
    check.add_argument("--clients", type=int, default=3, help="clients of the checked cell (default 3)")
    check.add_argument("--keep", metavar="DIR", help="keep the runs' output folders here")
    check.add_argument("--format", choices=("table", "json"), default="table")
    sub.add_parser("plugins", help="registered plugins and where each comes from")


def add_data_parser(sub) -> None:
    """`fedfuse data show`: a dataset's partition."""
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


def add_results_parsers(sub) -> None:
    """`leaderboard`, `site`, `publish`, `results`, `report`: what a results store shows."""
    board = sub.add_parser("leaderboard", help="configurations ranked per track, mean ± std over seeds")
    board.add_argument("--out", default=DEFAULT_OUT)
    board.add_argument("--format", choices=("md", "html", "json"),
                       help="default: from --dest's extension (.html, .json), else md")
    board.add_argument("--dest", help="write to this file instead of stdout")
    board.add_argument("--plot", nargs=2, metavar=("X", "Y"), help="also save a trade-off plot of metric Y vs X")
    site = sub.add_parser("site", help="one static site over results stores: an index and a page per store")
    site.add_argument("stores", nargs="*", help="output folders (default: every runs/*/ with a results store)")
    site.add_argument("--dest", default="site", help="the site's folder (default ./site)")
    pub = sub.add_parser("publish", help="publish results to a target (wandb, or one a plugin adds)")
    pub.add_argument("target")
    pub.add_argument("--out", default=DEFAULT_OUT)
    pub.add_argument("--project", default="fedfuse")
    pub.add_argument("--entity")
    pub.add_argument("--mode", choices=("offline", "online"), default="offline")
    res = sub.add_parser("results", help="one record per cell")
    res.add_argument("--out", default=DEFAULT_OUT)
    res.add_argument("--format", choices=("table", "json", "csv"), default="table")
    rep = sub.add_parser("report", help="a study's page (tables, figure, sample grids, claims) from its results store")
    rep.add_argument("study", help="a registered study: fedfuse list studies")
    rep.add_argument("--out", default=DEFAULT_OUT, help="the study's results store (its output folder)")
    where_to = rep.add_mutually_exclusive_group()
    where_to.add_argument("--dest", metavar="DIR", help="the page's folder (default docs/studies/STUDY)")
    where_to.add_argument("--into", metavar="FILE",
                          help="instead, the tables and claims between FILE's markers <!-- fedfuse report STUDY --> "
                               "and <!-- /fedfuse report STUDY --> (no figure, no grids)")


def add_submission_parsers(sub) -> None:
    """`submit` and `verify`: a results bundle for anyone to check."""
    subm = sub.add_parser("submit", help="bundle a results store with what produced it, for anyone to verify")
    subm.add_argument("--out", default=DEFAULT_OUT, help="the output folder of one suite or track run")
    subm.add_argument("--track", metavar="NAME", help="the shipped track (or suite) the run must be, unmodified")
    subm.add_argument("--dest", metavar="DIR", help="the bundle's folder (default OUT-bundle)")
    ver = sub.add_parser("verify", help="check a bundle here and re-run a seeded choice of its cells")
    ver.add_argument("bundle")
    ver.add_argument("--cells", type=int, default=2, help="cells to run again (default 2: a few minutes of CPU)")


def add_deploy_parsers(sub) -> None:
    """`deploy local` and `worker`: Flower's deployment engine on this machine."""
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
    worker = sub.add_parser("worker", help="a warm executor beside a SuperNode of your own (docs/deployment.md)")
    worker.add_argument("--supernode", required=True, metavar="HOST:PORT",
                        help="the Runtime API of a SuperNode started with --isolation process (its --port)")


def add_profile_parser(sub) -> None:
    """`fedfuse profile measure NAME`: a device profile from a measurement on this machine."""
    profile = sub.add_parser("profile", help="device profiles from measurement")
    what = profile.add_subparsers(dest="profile_command", required=True)
    m = what.add_parser("measure", help="time the shared training step here and write a device profile TOML")
    m.add_argument("name", help="the profile's name (letters, digits, - and _)")
    m.add_argument("--out", metavar="FILE", help="where to write it (default ./NAME.toml)")
    m.add_argument("--description", help="the profile's description (default: the CPU model and the date)")
    m.add_argument("--preset", default="small", choices=("tiny", "small", "base"), help="UNet preset timed (default small)")
    m.add_argument("--side", type=int, default=28, help="image side in px (default 28)")
    m.add_argument("--batch-size", type=int, default=64)
    m.add_argument("--steps", type=int, default=20, help="timed steps (default 20)")
    m.add_argument("--warmup", type=int, default=3, help="untimed steps first; the first counts the FLOPs (default 3)")
    m.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    m.add_argument("--idle-s", type=float, default=5.0, help="seconds of idle package power for static_power_w (RAPL)")
    m.add_argument("--static-power-w", type=float, help="static (idle) power in W, where RAPL cannot measure it")
    load = m.add_mutually_exclusive_group()
    load.add_argument("--load-power-w", type=float, help="power under load in W; kappa = (load - static) / f_max^3")
    load.add_argument("--kappa", type=float, help="kappa itself (E = kappa * cycles * f^2)")
    m.add_argument("--print-only", action="store_true",
                   help="time the step and print how the registered profiles predict it; write nothing (no power needed)")


def main(argv: list[str] | None = None) -> int:
    from fedfuse.results.outlock import OutputBusy
    from fedfuse.results.store import StoreError

    args = build_parser().parse_args(argv)
    try:
        return command(args.command)(args)
    except (ConfigError, DatasetError, StoreError, OutputBusy) as err:  # echoes of input: one line, always
        print(f"fedfuse: error: {str(err).replace(chr(10), chr(92) + 'n')}", file=sys.stderr)
        return 2
    except PluginError as err:  # may list the plugins that failed to load, a line each
        print(f"fedfuse: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno not in UNWRITABLE:
            raise
        print(f"fedfuse: error: cannot write {err.filename or 'the output folder'}: {err.strerror}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, Terminated) as stop:
        stop_now(stop)
    except SystemExit as stop:  # ray.init's own SIGTERM handler exits with the signal's number
        if stop.code != signal.SIGTERM:
            raise
        stop_now(Terminated())


COMMANDS = {"run": "run:cmd_run", "deploy": "run:cmd_deploy", "worker": "run:cmd_worker", "list": "inspect:cmd_list", "show": "inspect:cmd_show",
            "plugins": "inspect:cmd_plugins", "data": "inspect:cmd_data", "check": "inspect:cmd_check",
            "results": "report:cmd_results", "leaderboard": "report:cmd_leaderboard", "publish": "report:cmd_publish",
            "report": "report:cmd_report", "site": "report:cmd_site", "submit": "submission:cmd_submit", "verify": "submission:cmd_verify",
            "profile": "profile:cmd_profile"}


def command(name: str):
    """The function behind a command, imported only when that command runs (a fast --help)."""
    import importlib

    module, function = COMMANDS[name].split(":")
    return getattr(importlib.import_module(f"fedfuse.bench.cli.{module}"), function)


if __name__ == "__main__":
    sys.exit(main())
