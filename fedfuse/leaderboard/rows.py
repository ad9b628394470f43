"""The read side of a run's output folder: its records, and their ranked rows."""

from __future__ import annotations

import tomllib
from pathlib import Path

from fedfuse.results.outlock import has_writer
from fedfuse.bench.suites.parse import shipped_suites, study_digest
from fedfuse.leaderboard import ranking
from fedfuse.results.store import ABANDONED, ResultStore
from fedfuse.results.verification import verified_cells
from fedfuse.plugins.config import ConfigError


def read_records(out: str | Path) -> list[dict]:
    """The store's records, read-only (each marked ``verified`` where a bundle's verification
    ran it again and found it the same; a run folder that moved with its store is found beside it). A cell still ``running`` while no process holds the
    folder's lock was abandoned by a process that died: it reads as ``interrupted``."""
    path = Path(out) / "results.sqlite"
    if not path.is_file():
        raise ConfigError(f"no results in {out}/ (expected {path}); run a suite first: fedfuse run smoke")
    records = ResultStore(path, readonly=True).records()
    verified = verified_cells(out)  # a bundle's: the cells `fedfuse verify` ran again and found the same
    for r in records:
        r["verified"] = r["cell"] in verified
        here = Path(out) / "runs" / r["cell"]  # a store moved (copied from a clone, committed): its files are here
        if r.get("run_dir") and not Path(r["run_dir"]).is_dir() and here.is_dir():
            r["run_dir"] = str(here)
    if not has_writer(Path(out)):
        for r in records:
            if r["status"] == "running":
                r["status"], r["error"] = "interrupted", ABANDONED
    return records


def ranked_rows(records: list[dict], registry, as_recorded: bool = False) -> list[ranking.Row]:
    """Rows grouped by configuration, ranked by the registry's metric specs, Pareto fronts
    marked. Records of a shipped suite are checked against its current digest and seeds.
    ``as_recorded``: a committed study read as it was measured, its protocol versions not held
    against the installed ones (two versions of one row still never pool: their configs differ)."""
    suites = shipped_suites()
    digests = {name: study_digest(p.read_text()) for name, p in suites.items()}
    seeds = {name: len(tomllib.loads(p.read_text())["matrix"]["seeds"]) for name, p in suites.items()}
    specs = {name: e.spec for name, e in registry.entries("metrics").items()}
    versions = {} if as_recorded else {name: e.spec.version for name, e in registry.entries("protocols").items()}
    bounds = {name for name, e in registry.entries("protocols").items() if e.spec.bound}
    rows = ranking.rank(ranking.group(records, digests, seeds, versions, bounds), specs)
    ranking.mark_fronts(rows, specs)
    return rows
