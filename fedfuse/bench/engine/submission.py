"""Submissions anyone can verify.

``fedfuse submit`` bundles a results store with what produced it: each cell's spec and
environment record, the suite's (or track's) digest, fedfuse's version and commit, and for each
protocol where it came from and a hash of its code. ``fedfuse verify`` checks a bundle against
this installation (the same fedfuse, the same protocol code, the same track, the store as
bundled), re-runs a seeded choice of its cells, and compares them with what the bundle says:
bit for bit on the same machine kind, torch build and precision (CPU 32-true runs are
deterministic for a seed), within ``TOLERANCE`` otherwise. Its verdict, with one line per
difference, is written into the bundle (``verification.json``); the leaderboard marks the rows
of verified cells.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import shutil
import sqlite3
import tempfile
from pathlib import Path

import numpy as np

from fedfuse import __version__
from fedfuse.bench.engine.conformance import DETERMINISTIC, WIRE_SLACK  # bytes a message: Flower's ids differ
from fedfuse.bench.engine.envinfo import environment, git_commit
from fedfuse.bench.suites.cells import CellSpec
from fedfuse.files import write_atomic
from fedfuse.results.store import ResultStore
from fedfuse.results.verification import VERIFICATION_FILE
from fedfuse.toolkit.seeding import stable_hash

BUNDLE_FILE, STORE_FILE = "bundle.json", "results.sqlite"
#: compared bit for bit on the same machine kind, torch build and precision: what the
#: conformance check requires of two runs, and every quality figure
EXACT = (*DETERMINISTIC, "kid", "recall", "coverage", "pop_fid", "fid_vs_noise")
COUNTS = ("payload_up", "payload_down", "messages")  # equal on any machine
TOLERANCE = 0.02  # relative, for figures from another machine kind, torch build or precision


class BundleError(ValueError):
    """A bundle that cannot be read or written (a missing file, no results)."""


def submit(out: Path, dest: Path, registry) -> dict:
    """Write the bundle of the results store in ``out`` into ``dest``; returns its manifest."""
    records = ResultStore(Path(out) / STORE_FILE, readonly=True).records()
    if not records:
        raise BundleError(f"no results in {out}")
    suites = sorted({(r["suite"], r["suite_version"], r["suite_digest"]) for r in records})
    if len(suites) > 1:
        raise BundleError(f"{out} holds results of {len(suites)} suites ({', '.join(s for s, _, _ in suites)}): "
                          "bundle one suite's output folder")
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    copy_store(Path(out) / STORE_FILE, dest / STORE_FILE)
    for r in records:
        copy_cell_files(Path(r["run_dir"] or Path(out) / "runs" / r["cell"]), dest / "cells" / r["cell"])
    (suite, version, digest), = suites
    manifest = {"format": 1, "suite": suite, "suite_version": version, "suite_digest": digest,
                "fedfuse": {"version": __version__, "commit": git_commit()},
                "protocols": {p: protocol_identity(registry, p) for p in sorted({r["protocol"] for r in records})},
                "store_sha256": file_sha256(dest / STORE_FILE),
                "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    write_atomic(dest / BUNDLE_FILE, lambda tmp: tmp.write_text(json.dumps(manifest, indent=1)))
    return manifest


def copy_store(source: Path, dest: Path) -> None:
    """A consistent copy of a SQLite store, even one a run is writing (SQLite's backup)."""
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(dest) as out:
        src.backup(out)


def copy_cell_files(run_dir: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("cell.json", "environment.json"):
        if (run_dir / name).is_file():
            shutil.copyfile(run_dir / name, dest / name)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def protocol_identity(registry, name: str) -> dict:
    """Where protocol ``name`` comes from here, and a hash of its code: every .py file of the
    folder that holds its server loop (its own package; a built-in's folder in fedfuse)."""
    entry = registry.entries("protocols").get(name)
    if entry is None:
        return {"plugin": None, "version": None, "files_sha256": None}
    server = entry.spec.server
    module = server.split(":")[0] if isinstance(server, str) else server.__module__
    folder = Path(importlib.import_module(module).__file__).parent
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return {"plugin": entry.plugin, "version": entry.spec.version, "files_sha256": digest.hexdigest()}


def verify(bundle: Path, registry, cells: int = 2, shipped_digest: str | None = None) -> dict:
    """Check ``bundle`` here and re-run ``cells`` of its ok cells (a seeded choice); write and
    return the verdict: ``{"ok", "reasons", "cells", "date", "machine", ...}``."""
    bundle = Path(bundle)
    manifest = read_manifest(bundle)
    reasons = provenance_reasons(bundle, manifest, registry, shipped_digest)
    records = {r["cell"]: r for r in ResultStore(bundle / STORE_FILE, readonly=True).records() if r["status"] == "ok"}
    chosen = choose(sorted(records), cells, manifest["store_sha256"])
    for cell_id in chosen:
        reasons += rerun_reasons(bundle, records[cell_id], registry)
    verdict = {"ok": not reasons, "reasons": reasons, "cells": chosen, "of": len(records),
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "machine": environment()["system"], "fedfuse": __version__, "commit": git_commit()}
    write_atomic(bundle / VERIFICATION_FILE, lambda tmp: tmp.write_text(json.dumps(verdict, indent=1)))
    return verdict


def read_manifest(bundle: Path) -> dict:
    if not (bundle / BUNDLE_FILE).is_file() or not (bundle / STORE_FILE).is_file():
        raise BundleError(f"{bundle} is not a bundle (it needs {BUNDLE_FILE} and {STORE_FILE}: fedfuse submit)")
    return json.loads((bundle / BUNDLE_FILE).read_text())


def provenance_reasons(bundle: Path, manifest: dict, registry, shipped_digest: str | None) -> list[str]:
    """What differs between the bundle and this installation, one line each."""
    reasons = []
    if file_sha256(bundle / STORE_FILE) != manifest["store_sha256"]:
        reasons.append(f"{STORE_FILE} differs from the one bundled (edited after `fedfuse submit`)")
    if manifest["fedfuse"]["version"] != __version__:
        reasons.append(f"a different fedfuse version: the bundle's {manifest['fedfuse']['version']}, here {__version__}")
    if shipped_digest is not None and shipped_digest != manifest["suite_digest"]:
        reasons.append(f"a different track: {manifest['suite']} here is not the suite the bundle ran "
                       f"(digest {shipped_digest[:12]} here, {manifest['suite_digest'][:12]} in the bundle)")
    for name, bundled in manifest["protocols"].items():
        here = protocol_identity(registry, name)
        if here["files_sha256"] is None:
            reasons.append(f"protocol {name}: not installed here")
        elif here["files_sha256"] != bundled["files_sha256"]:
            reasons.append(f"protocol {name}: its installed files differ from the bundle's ({here['plugin']}, "
                           f"files {here['files_sha256'][:12]} here, {bundled['files_sha256'][:12]} in the bundle)")
    return reasons


def choose(cell_ids: list[str], k: int, salt: str) -> list[str]:
    """A seeded choice of k cells: the same bundle re-runs the same cells anywhere."""
    rng = np.random.default_rng(int(stable_hash(salt), 16) % 2**63)
    return sorted(rng.choice(cell_ids, size=min(k, len(cell_ids)), replace=False).tolist()) if cell_ids else []


def rerun_reasons(bundle: Path, record: dict, registry) -> list[str]:
    """Run the cell again here (a temporary folder) and say what differs from the bundle."""
    from fedfuse.bench.engine.runner import run_anew

    folder = bundle / "cells" / record["cell"]
    if not (folder / "cell.json").is_file():
        return [f"cell {record['cell']}: its cell.json is not in the bundle"]
    cell = CellSpec.from_json((folder / "cell.json").read_text())
    with tempfile.TemporaryDirectory(prefix="fedfuse-verify-") as tmp:
        (again,) = run_anew(registry, Path(tmp), record["suite_digest"], [cell])
    if again["status"] != "ok":
        return [f"cell {record['cell']} ({record['label']}): failed when run again: {again['error']}"]
    exact = same_system(folder / "environment.json")
    return [f"cell {record['cell']} ({record['label']}): {line}" for line in differences(record["metrics"], again["metrics"], exact)]


def same_system(bundled_environment: Path) -> bool:
    """Bit for bit only on the same machine kind, torch build, device and precision."""
    if not bundled_environment.is_file():
        return False
    theirs, here = json.loads(bundled_environment.read_text()), environment()

    def kind(env: dict) -> tuple:
        return env["machine"], env["packages"].get("torch"), env["system"]["device"], env["system"]["precision"]

    return kind(theirs) == kind(here) and here["system"]["device"] == "cpu"


def differences(bundled: dict, again: dict, exact: bool) -> list[str]:
    """One line per figure that differs (bit for bit where ``exact``, else beyond TOLERANCE)."""
    lines = []
    for key in EXACT:
        a, b = bundled.get(key), again.get(key)
        if a is None and b is None:
            continue
        if isinstance(a, str) or isinstance(b, str) or exact or key in COUNTS:
            agree = a == b or key == "model_sha256" and not exact
        else:
            agree = a is not None and b is not None and abs(a - b) <= TOLERANCE * max(abs(a), abs(b), 1e-12)
        if not agree:
            lines.append(f"{key} is {a} in the bundle, {b} when run again")
    slack = WIRE_SLACK * again.get("messages", 0)
    lines += [f"{key} is {bundled.get(key)} in the bundle, {again.get(key)} when run again"
              for key in ("bytes_up", "bytes_down") if abs(bundled.get(key, 0) - again.get(key, 0)) > slack]
    return lines
