"""Progress display: a plugin on the observe hooks, drawing with rich."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from fedfuse.plugins import hookimpl


class ProgressDisplay:
    """One bar for the suite's cells, one for the rounds of the cell in progress."""

    def __init__(self, total_cells: int, console: Console | None = None):
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[note]}"), console=console or Console(stderr=True), transient=False,
        )
        self.cells = self.progress.add_task("cells", total=total_cells, note="")
        self.rounds = None

    def __enter__(self):
        self.progress.start()
        return self

    def __exit__(self, *exc):
        self.progress.stop()

    def skipped(self, name: str) -> None:
        self.progress.console.print(f"[dim]skip[/] {name} (already ok; --rerun to run again)")
        self.progress.advance(self.cells)

    @hookimpl
    def fedfuse_run_start(self, run):
        self.rounds = self.progress.add_task(f"  {run.cell.name}", total=run.cell.rounds, note="starting Flower")

    @hookimpl
    def fedfuse_round_end(self, run, round, record):
        loss = record.get("train_loss")
        note = record.get("phase") or f"round {round}" + (f" loss {loss:.4f}" if isinstance(loss, float) else "")
        total = max(run.cell.rounds, round)  # a protocol may record a last phase (e.g. sampling) as a round
        self.progress.update(self.rounds, completed=round, total=total, note=note)

    @hookimpl
    def fedfuse_status(self, run, message):
        self.progress.update(self.rounds, note=message)

    @hookimpl
    def fedfuse_run_end(self, run, result):
        status = result["status"]
        mark = "[green]ok[/]" if status == "ok" else f"[red]{status}[/] {result['error']}"
        self.progress.update(self.rounds, note=mark)
        self.progress.advance(self.cells)
