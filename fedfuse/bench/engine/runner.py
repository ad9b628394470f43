"""Run a suite's cells one after another, on Flower, into a results store.

A cell that raises is recorded as failed with its error and the suite goes on; a cell
already ``ok`` in the store is skipped unless ``rerun``. Ctrl-C marks the running cell
``interrupted`` and stops; every finished cell stays as it was.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import shutil
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path

from fedfuse.bench.engine.envinfo import environment
from fedfuse.bench.engine.services import PARTITIONS_FILE, ServerRun
from fedfuse.bench.metrics.dp import DpSpec, check_delta
from fedfuse.bench.metrics.target import FIGURES as TARGET_FIGURES, to_target
from fedfuse.bench.suites.cells import CellSpec, cell_partitions, partition_file_key
from fedfuse.datasets.partition import describe, save_partitions
from fedfuse.results.store import ResultStore
from fedfuse.plugins.manager import Registry

log = logging.getLogger("fedfuse")


@dataclass
class CellOutcome:
    cell: CellSpec
    status: str  # ok | failed | skipped
    error: str | None = None


def select(cells: list[CellSpec], pattern: str | None) -> list[CellSpec]:
    """``--only``: a glob on the cell name (``fedavg/*/seed0``), or a substring of it."""
    if not pattern:
        return cells
    return [c for c in cells if fnmatch(c.name, pattern) or pattern in c.name]


class SuiteRunner:
    """``engine``: None for Flower's simulation engine in this process, or a
    ``fedfuse.deploy.engine.DeploymentEngine`` (a SuperLink and its SuperNodes)."""

    def __init__(self, registry: Registry, out_dir: Path, suite_digest: str, rerun: bool = False, engine=None):
        self.registry, self.hook = registry, registry.pm.hook
        self.metric_specs, self.measured = metric_specs(registry)
        self.out_dir, self.suite_digest, self.rerun, self.engine = Path(out_dir), suite_digest, rerun, engine
        self.store = ResultStore(self.out_dir / "results.sqlite")
        # The caller holds the folder's lock: any 'running' cell is a dead process's.
        settle_running(self.out_dir, self.store)

    def run(self, cells: list[CellSpec]) -> list[CellOutcome]:
        return [self.run_one(cell) for cell in cells]

    def run_one(self, cell: CellSpec) -> CellOutcome:
        if not self.rerun and self.store.status(cell.cell_id) == "ok":
            return CellOutcome(cell, "skipped")
        run = self._prepare(cell)
        self.hook.fedfuse_run_start(run=run)
        started = time.time()
        status, error, metrics = "failed", None, {}
        try:
            with cell_log(run.run_dir / "cell.log"):
                metrics = self._execute(run)
            status = "ok"
        except Exception as err:  # noqa: BLE001 — any failure of a cell is recorded, the suite goes on
            error = f"{type(err).__name__}: {err}"
            (run.run_dir / "error.txt").write_text(traceback.format_exc() + client_trace(err))
        except BaseException as stop:  # Ctrl-C, SIGTERM (as an exception): record, then let it end the run
            if self.store.finish(cell.cell_id, "interrupted", {}, f"interrupted ({type(stop).__name__})"):
                restore_artifacts(run.run_dir)
            raise
        metrics = {**final_metrics(run, metrics, self.metric_specs, self.measured),
                   "wall_s": time.time() - started, "peak_rss_mb": peak_rss_mb(), "system": run.system}
        if status == "ok":
            metrics.update(budget_figures(metrics, cell.budget))
            metrics.update(dp_budget_figures(metrics, cell.dp_budget))
        if self.store.finish(cell.cell_id, status, metrics, error):
            restore_artifacts(run.run_dir)
        else:
            shutil.rmtree(aside(run.run_dir), ignore_errors=True)
        self.hook.fedfuse_run_end(run=run, result={"status": status, "error": error, "metrics": metrics})
        return CellOutcome(cell, status, error)

    def _prepare(self, cell: CellSpec) -> ServerRun:
        run_dir = self.out_dir / "runs" / cell.cell_id
        rerun = self.store.status(cell.cell_id) == "ok" and run_dir.is_dir()
        if rerun:  # an aside folder now is a finished rerun's leftover: run_dir holds the ok files
            shutil.rmtree(aside(run_dir), ignore_errors=True)
        # The store first: from here on a process killed at any point finds the cell "running"
        # at the next start, and the ok result and its files (set aside next) come back.
        self.store.start(cell, self.suite_digest, run_dir)
        if rerun:  # keep the ok artifacts aside until the new attempt ends
            run_dir.rename(aside(run_dir))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "cell.json").write_text(cell.to_json())
        env = environment(cell.system)
        (run_dir / "environment.json").write_text(json.dumps(env, indent=2))
        run = ServerRun.for_cell(cell, run_dir, self.registry)
        run.system = system_label(env["system"])
        (run_dir / "clients.json").write_text(json.dumps(run.hardware.describe(), indent=1))
        run.on_round = lambda record: self._round_end(run, record)
        run.on_status = lambda message: self.hook.fedfuse_status(run=run, message=message)
        return run

    def _record_data(self, run: ServerRun) -> None:
        """Load the data and partition it here first: a data problem fails the cell before
        Flower starts, and the partition's summary is stored with the cell."""
        data, parts = run.data, cell_partitions(run.cell)
        try:  # the ClientApps read it rather than partition again; without it they still can
            save_partitions(run.run_dir / PARTITIONS_FILE, parts, partition_file_key(run.cell))
        except OSError as err:
            log.warning("fedfuse: could not write %s (%s); each ClientApp partitions on its own", PARTITIONS_FILE, err)
        if run.cell.dp:  # before anything trains: ε at a δ near 1/N would mean nothing
            check_delta(DpSpec(**run.cell.dp), run.cell.clients, [len(p) for p in parts])
        partition = describe(data, parts, run.cell.partitioner, run.cell.partitioner_args)
        facts = {"partition": partition, "warnings": list(data.warnings), "hardware": run.hardware.describe()}
        (run.run_dir / "partition.json").write_text(json.dumps(facts, indent=1))
        self.store.set_data(run.cell.cell_id, facts)

    def _round_end(self, run: ServerRun, record: dict) -> None:
        self.store.add_round(run.cell.cell_id, record)
        self.hook.fedfuse_round_end(run=run, round=record["round"], record=record)

    def _execute(self, run: ServerRun) -> dict:
        self._record_data(run)
        if self.engine is not None:  # the ServerApp runs where the SuperLink starts it
            metrics = {**self.engine.run_cell(run), "backend": "deployment"}
        else:
            from fedfuse.bench.engine.simulation import (
                run_cell,  # imports flwr's simulation engine (Ray)
            )

            server_loop = self.registry.get("protocols", run.cell.protocol).load_server()
            metrics = {**run_cell(run, server_loop), "backend": "simulation"}
        check_finite(metrics)
        return metrics


def run_anew(registry: Registry, out: Path, suite_digest: str, cells: list[CellSpec]) -> list[dict]:
    """Run ``cells`` into ``out`` (held while they run; each run anew) and return their records:
    the conformance check's runs and a verification's re-runs."""
    from fedfuse.results.outlock import OutputLock

    with OutputLock(out):
        runner = SuiteRunner(registry, out, suite_digest, rerun=True)
        runner.run(cells)
        records = runner.store.records([c.cell_id for c in cells])
        runner.store.close()
    return records


def metric_specs(registry: Registry) -> tuple[dict, set]:
    """Every registered metric's spec by name, and the names the harness itself measures and
    folds over rounds (bytes, FLOPs, latency, energy: sums; the slowest client: a maximum)."""
    entries = registry.entries("metrics")
    measured = {n for n, e in entries.items() if e.plugin_name == "fedfuse-core" and e.spec.aggregate in ("sum", "max")}
    return {name: entry.spec for name, entry in entries.items()}, measured


def final_metrics(run: ServerRun, metrics: dict, specs: dict, measured: set) -> dict:
    """A cell's metrics: its round records folded (each metric by its aggregate), the server
    loop's and the harness's scoring's ``metrics``, then what the harness measures (0 if nothing
    was exchanged) and the quality target's figures: the protocol cannot override them."""
    folded = {**totals(run.rounds, specs), **to_target(run.rounds, run.cell.evaluation.get("target", {}))}
    loops = {k: v for k, v in metrics.items() if k not in TARGET_FIGURES}
    # the privacy budget: null where nothing is claimed (no DP, or σ = 0), never a bare ∞
    budget = {"dp_epsilon": folded.get("dp_epsilon"), "dp_delta": run.cell.dp.get("delta")}
    return {**folded, **loops, **{k: folded.get(k, 0) for k in measured if k != "wall_s"}, **budget}


BUDGETED = ("client_train_examples", "server_train_examples", "pretrain_examples", "late_train_examples")


def budget_figures(metrics: dict, budget: int) -> dict:
    """``train_examples``: every training image processed, clients', server's and a pre-training's
    (optimizer steps x batch: what a track's budget binds); with a budget, ``over_budget``."""
    # a protocol reports its pre-training itself: a negative count never lowers the sum
    used = sum(max(0.0, float(metrics.get(k, 0))) for k in BUDGETED)
    return {"train_examples": float(used), **({"over_budget": float(used > budget)} if budget else {})}


def dp_budget_figures(metrics: dict, dp_budget: dict) -> dict:
    """With a track's DP budget, ``over_dp_budget``: 1 for a cell that claims no ε, or a larger
    one, or one at a larger δ (the row is then not ranked)."""
    if not dp_budget:
        return {}
    eps, delta = metrics.get("dp_epsilon"), metrics.get("dp_delta")
    met = eps is not None and eps <= dp_budget["epsilon"] and delta is not None and delta <= dp_budget["delta"]
    return {"over_dp_budget": float(not met)}


def client_trace(err: BaseException) -> str:
    """A failed client's own traceback (it ran in another process), for error.txt."""
    detail = getattr(err, "detail", "")
    return f"\nThe client's traceback:\n{detail}" if detail else ""


def restore_artifacts(run_dir: Path) -> None:
    """The rerun did not succeed: its files go to ``<cell>.failed-attempt``, the ok ones come back."""
    if aside(run_dir).is_dir():
        failed = run_dir.with_name(run_dir.name + ".failed-attempt")
        shutil.rmtree(failed, ignore_errors=True)
        if run_dir.is_dir():
            run_dir.rename(failed)
        aside(run_dir).rename(run_dir)


def settle_running(out_dir: Path, store: ResultStore | None = None) -> None:
    """Cells left ``running`` become ``interrupted``; a rerun's ``ok`` result and files come
    back. For a dead process's cells (at start), or for this process's when it must stop at
    once: with its own connection when none is given, so it is safe from another thread."""
    store = store or ResultStore(Path(out_dir) / "results.sqlite")
    for cell_id in store.mark_abandoned():
        restore_artifacts(Path(out_dir) / "runs" / cell_id)


def aside(run_dir: Path) -> Path:
    """Where a cell's ok artifacts wait while a rerun attempts it."""
    return run_dir.with_name(run_dir.name + ".previous")


def system_label(system: dict) -> str:
    """What the leaderboard shows of a cell's system: ``cuda NVIDIA H100 (80 GB) bf16-mixed``
    (and ``compile=inductor`` where training was compiled)."""
    memory = f" ({system['device_memory_gb']:.0f} GB)" if system.get("device_memory_gb") else ""
    compiled = f" compile={system['compile']}" if system.get("compile") else ""
    return f"{system['device']} {system.get('device_name', '')}{memory} {system['precision']}{compiled}".replace("  ", " ")


ROUND_AGGREGATES = {
    "sum": sum,
    "mean": lambda values: sum(values) / len(values),
    "last": lambda values: values[-1],
    "max": max,
}


def totals(rounds: list[dict], specs: dict) -> dict:
    """Per-round figures folded into the cell's, each as its metric spec's ``aggregate`` says.
    A figure the protocol also reports at the end is overridden by that final value."""
    out = {}
    for name, spec in specs.items():
        values = [r[name] for r in rounds if isinstance(r.get(name), (int, float))]
        if values and spec.aggregate in ROUND_AGGREGATES:
            out[name] = ROUND_AGGREGATES[spec.aggregate](values)
    return out


def check_finite(metrics: dict) -> None:
    bad = [k for k, v in metrics.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise FloatingPointError(f"metric(s) {', '.join(bad)} not finite: {[metrics[k] for k in bad]}")


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (the server side; Ray workers not included)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@contextmanager
def cell_log(path: Path):
    """Flower's log lines go to the cell's log file, not the console: a client's error is
    recorded with the cell (status, error) and in full in the log."""
    import flwr.common.logger  # noqa: F401 — creates Flower's console handler before we look for it

    flwr_logger = logging.getLogger("flwr")
    console = list(flwr_logger.handlers)
    levels = [h.level for h in console]
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    for h in console:
        h.setLevel(logging.CRITICAL)
    flwr_logger.setLevel(logging.INFO)
    flwr_logger.addHandler(handler)
    try:
        yield
    finally:
        flwr_logger.removeHandler(handler)
        handler.close()
        for h, level in zip(console, levels):
            h.setLevel(level)
