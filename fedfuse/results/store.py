"""The results store: one SQLite file per output directory.

One row per cell (``cells``) and one per round of a cell (``rounds``). Every write is a
transaction, and SQLite's journal makes a crash roll back the write in flight only: a
finished cell is never lost or half-written. Schema and JSON keys: docs/results-schema.md.

While a run is live the store is ``results.sqlite`` with its write-ahead log beside it
(``-wal``, ``-shm``: readers see the run's progress through them). The log is folded into
``results.sqlite`` whenever a cell ends, so that file alone holds every finished cell, and
removed when the run ends: at rest the store is one file.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS cells (
    cell_id TEXT PRIMARY KEY, name TEXT NOT NULL, suite TEXT NOT NULL, suite_version TEXT NOT NULL,
    suite_digest TEXT NOT NULL, label TEXT NOT NULL, protocol TEXT NOT NULL, protocol_version TEXT NOT NULL,
    config_hash TEXT NOT NULL, spec TEXT NOT NULL, dataset TEXT NOT NULL, partitioner TEXT NOT NULL,
    seed INTEGER NOT NULL, status TEXT NOT NULL, error TEXT, started REAL, ended REAL,
    metrics TEXT NOT NULL DEFAULT '{}', data TEXT NOT NULL DEFAULT '{}', run_dir TEXT
);
CREATE TABLE IF NOT EXISTS rounds (
    cell_id TEXT NOT NULL REFERENCES cells(cell_id) ON DELETE CASCADE,
    round INTEGER NOT NULL, record TEXT NOT NULL, PRIMARY KEY (cell_id, round)
);
CREATE TABLE IF NOT EXISTS previous (cell_id TEXT PRIMARY KEY, row TEXT NOT NULL, rounds TEXT NOT NULL);
"""
STATUSES = ("running", "ok", "failed", "interrupted")
ABANDONED = "interrupted: the process running it ended before the cell did (killed?)"


def one_line(err: Exception) -> str:
    """SQLite's and JSON's messages may quote damaged bytes, newlines included."""
    return " ".join(str(err).split())


class StoreError(ValueError):
    """The store cannot be used as asked (damaged, not a results store); the message says what to do."""


class ResultStore:
    """``readonly``: for commands that only read (``results``, ``leaderboard``, ``publish``):
    nothing is created or written, and a store on a read-only filesystem can be read."""

    def __init__(self, path: Path, readonly: bool = False):
        self.path, self.readonly = Path(path), readonly
        try:
            self.db = self._open_readonly() if readonly else self._open_for_writing()
            self.db.execute("SELECT cell_id, status FROM cells LIMIT 1")  # a fedfuse store?
            version = self.db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        except (sqlite3.DatabaseError, UnicodeDecodeError) as err:  # not SQLite, or its pages damaged
            raise StoreError(f"{self.path} is damaged or not a fedfuse results store ({one_line(err)}); move it aside and "
                             "run the suite again: finished cells in another store are not lost") from None
        if version and not version[0].isdigit() or version and int(version[0]) > SCHEMA_VERSION:
            self.db.close()
            raise StoreError(f"{self.path} is a results store of schema version {version[0]}; this fedfuse reads "
                             f"version {SCHEMA_VERSION} and older: upgrade fedfuse to read it (nothing was changed)")

    def _open_for_writing(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        with db:
            db.executescript(SCHEMA)
            db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        return db

    def _open_readonly(self) -> sqlite3.Connection:
        """Creates no file: a store at rest (no log beside it) is read as the immutable file
        it is; a live one (or one whose writer was killed) through its log, read-only."""
        if not self.path.is_file():
            raise StoreError(f"no results store at {self.path}")
        if not self.path.with_name(self.path.name + "-wal").is_file():
            return sqlite3.connect(f"file:{self.path}?immutable=1", uri=True, check_same_thread=False)
        try:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:  # a log SQLite cannot open read-only here (read-only filesystem)
            return self._open_a_copy()

    def _open_a_copy(self) -> sqlite3.Connection:
        """The store and its log copied aside and opened there: SQLite folds the log in."""
        folder = Path(tempfile.mkdtemp(prefix="fedfuse-store-"))
        for suffix in ("", "-wal"):
            shutil.copyfile(f"{self.path}{suffix}", folder / f"results.sqlite{suffix}")
        db = sqlite3.connect(folder / "results.sqlite", check_same_thread=False)
        memory = sqlite3.connect(":memory:", check_same_thread=False)
        db.backup(memory)  # read into memory, so the copy can go at once
        db.close()
        shutil.rmtree(folder, ignore_errors=True)
        return memory

    def checkpoint(self) -> None:
        """Fold the log into ``results.sqlite``: the file alone then holds every finished cell."""
        if not self.readonly:
            with contextlib.suppress(sqlite3.OperationalError):  # a reader mid-read: the next cell's end
                self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def mark_abandoned(self) -> list[str]:
        """Cells left ``running`` by a process that died: a rerun's previous ``ok`` result comes
        back; any other becomes ``interrupted`` (and is redone). Returns the restored cell ids.
        Only a process holding the output folder's lock may call this."""
        running = [r[0] for r in self.db.execute("SELECT cell_id FROM cells WHERE status='running'")]
        restored = [c for c in running if self.restore_previous(c)]
        with self.db:
            self.db.execute("UPDATE cells SET status='interrupted', error=? WHERE status='running'", (ABANDONED,))
        self.checkpoint()
        return restored

    def restore_previous(self, cell_id: str) -> bool:
        """Put back the ``ok`` result a rerun set aside (its attempt failed, or was cut off)."""
        saved = self.db.execute("SELECT row, rounds FROM previous WHERE cell_id=?", (cell_id,)).fetchone()
        if saved is None:
            return False
        row = json.loads(saved[0])
        with self.db:
            self.db.execute("DELETE FROM cells WHERE cell_id=?", (cell_id,))
            self.db.execute(f"INSERT INTO cells ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
            self.db.executemany("INSERT INTO rounds VALUES (?,?,?)",
                                [(cell_id, r["round"], json.dumps(r)) for r in json.loads(saved[1])])
            self.db.execute("DELETE FROM previous WHERE cell_id=?", (cell_id,))
        return True

    def _set_aside(self, cell_id: str) -> None:
        """Keep a cell's ``ok`` result while a rerun attempts it again (in the same transaction)."""
        row = self.db.execute("SELECT * FROM cells WHERE cell_id=? AND status='ok'", (cell_id,)).fetchone()
        if row is not None:
            self.db.execute("INSERT OR REPLACE INTO previous VALUES (?,?,?)",
                            (cell_id, json.dumps(dict(zip(self._columns(), row))), json.dumps(self._rounds_of(cell_id))))

    def _columns(self) -> list[str]:
        return [d[0] for d in self.db.execute("SELECT * FROM cells LIMIT 0").description]

    def _rounds_of(self, cell_id: str) -> list[dict]:
        return [json.loads(r[0]) for r in self.db.execute(
            "SELECT record FROM rounds WHERE cell_id=? ORDER BY round", (cell_id,))]

    def close(self) -> None:
        """At rest the store is one file: the log folded in and removed (unless a reader has
        the store open this moment; then it goes at the next close)."""
        if not self.readonly:
            self.checkpoint()
            with contextlib.suppress(sqlite3.OperationalError):
                self.db.execute("PRAGMA journal_mode=DELETE")
        self.db.close()

    def status(self, cell_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM cells WHERE cell_id = ?", (cell_id,)).fetchone()
        return row[0] if row else None

    def start(self, cell, suite_digest: str, run_dir: Path) -> None:
        """(Re)start a cell: its old row and rounds are replaced in one transaction; an ``ok``
        result is set aside until the new attempt ends (``finish``)."""
        with self.db:
            self._set_aside(cell.cell_id)
            self.db.execute("DELETE FROM cells WHERE cell_id = ?", (cell.cell_id,))
            self.db.execute(
                "INSERT INTO cells (cell_id, name, suite, suite_version, suite_digest, label, protocol,"
                " protocol_version, config_hash, spec, dataset, partitioner, seed, status, started, run_dir)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'running',?,?)",
                (cell.cell_id, cell.name, cell.suite, cell.suite_version, suite_digest, cell.label,
                 cell.protocol, cell.protocol_version, cell.config_hash, cell.to_json(), cell.dataset,
                 cell.partition_name, cell.seed, time.time(), str(run_dir)),
            )

    def set_data(self, cell_id: str, data: dict) -> None:
        """The cell's data facts: partition summary, dataset warnings."""
        with self.db:
            self.db.execute("UPDATE cells SET data=? WHERE cell_id=?", (json.dumps(data), cell_id))

    def add_round(self, cell_id: str, record: dict) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO rounds VALUES (?,?,?)",
                            (cell_id, int(record["round"]), json.dumps(record)))

    def finish(self, cell_id: str, status: str, metrics: dict, error: str | None = None) -> bool:
        """Record the attempt's end. A rerun that did not end ``ok`` gives the previous ``ok``
        result back (returns True then): an ``ok`` result is replaced only by another."""
        assert status in STATUSES, status
        with self.db:
            self.db.execute("UPDATE cells SET status=?, error=?, ended=?, metrics=? WHERE cell_id=?",
                            (status, error, time.time(), json.dumps(metrics), cell_id))
            if status == "ok":
                self.db.execute("DELETE FROM previous WHERE cell_id=?", (cell_id,))
        restored = status != "ok" and self.restore_previous(cell_id)
        self.checkpoint()
        return restored

    def records(self, cell_ids: list[str] | None = None) -> list[dict]:
        """One dict per cell, in the results-schema's shape, oldest first. A cell being rerun
        reads as its previous ``ok`` result until the new attempt succeeds."""
        try:
            return self._records(cell_ids)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as err:  # pages damaged on disk
            raise StoreError(f"{self.path} is damaged ({one_line(err)}); move it aside and run the suite again: "
                             "finished cells in another store are not lost") from None

    def _records(self, cell_ids: list[str] | None) -> list[dict]:
        rows = self.db.execute("SELECT * FROM cells ORDER BY started").fetchall()
        names = self._columns()
        previous = self._previous()
        out = [self._readable(row[0], *previous.get(row[0], (dict(zip(names, row)), None))) for row in rows]
        return [r for r in out if cell_ids is None or r["cell"] in cell_ids]

    def _readable(self, cell_id: str, row: dict, rounds: list[dict] | None) -> dict:
        try:
            return self._record(row, rounds)
        except (ValueError, KeyError, TypeError, AttributeError) as err:  # a row whose JSON was damaged on disk
            raise StoreError(f"{self.path}: the record of cell {cell_id} is damaged ({type(err).__name__}: {one_line(err)}); "
                             "move the store aside and run the suite again: cells in another store are not lost") from None

    def _previous(self) -> dict:
        try:
            return {c: (json.loads(r), json.loads(x)) for c, r, x in self.db.execute("SELECT * FROM previous")}
        except sqlite3.OperationalError:  # a store written before reruns kept results aside (read-only here)
            return {}

    def _record(self, row: dict, rounds: list[dict] | None = None) -> dict:
        spec, data = json.loads(row["spec"]), json.loads(row["data"])
        if rounds is None:
            rounds = self._rounds_of(row["cell_id"])
        return {
            "suite": row["suite"], "suite_version": row["suite_version"], "suite_digest": row["suite_digest"],
            "cell": row["cell_id"], "name": row["name"], "label": row["label"],
            "protocol": row["protocol"], "protocol_version": row["protocol_version"],
            "config_hash": row["config_hash"], "config": spec["config"],
            "dataset": row["dataset"], "dataset_args": spec["dataset_args"], "partitioner": row["partitioner"],
            "partition_summary": data.get("partition"), "dataset_warnings": data.get("warnings", []),
            "profile": spec["profile"]["name"], "hardware": data.get("hardware"),
            "clients": spec["clients"], "rounds_planned": spec["rounds"], "seed": row["seed"],
            "evaluation": spec.get("evaluation", {}),
            "status": row["status"], "error": row["error"], "started": row["started"], "ended": row["ended"],
            "metrics": json.loads(row["metrics"]), "rounds": rounds,
            "run_dir": row["run_dir"],
        }
