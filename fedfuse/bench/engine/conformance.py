"""What every protocol plugin must satisfy, checked by running it: ``fedfuse check protocol NAME``.

The protocol runs on one tiny cell as a track would run it (digits, 3 clients and 2 rounds by
default, with partial participation where the protocol allows it, 64 samples scored, the
membership attack on 32 images) in the simulation engine, each run into a fresh output folder:

1. **fresh**: every client message in a process of its own, forked from a new actor that runs
   no client code (as Flower's process isolation would): only what a client keeps in
   ``context.state`` survives from one message to the next;
2. **warm**: the usual run, with one warm actor serving every client (so anything a client keeps
   outside its Context certainly reaches its next message, and the other clients');
3. **fresh-again** (only if 1 and 2 differ): fresh once more. If it agrees with 1, the protocol
   is deterministic and only the process layout changed its results: a client keeps state
   outside its Context. If not, the protocol is not deterministic;
4. **failing** (with 2 rounds or more): the first client's reply in round 2 reaches the server
   as the error Flower delivers for a ClientApp that raised.

The report lists each rule with what was seen. The rules:

- it **finishes**: the fresh and warm runs end ``ok``;
- it **reports the harness's keys**: the quality and cost figures every leaderboard shows (quality:
  the harness's scores of what the server loop deployed, ``run.deploy_model``/``run.deploy``);
- it is **deterministic** for a seed: two runs give the same quality, losses, payload and FLOPs;
- its **client state lives in the Context**: the fresh run gives what the warm one does, so
  per-client state persists across rounds for its client only, never through a global, the
  harness's cache or a warm process, and never reaches another client or cell;
- **a failed client fails the cell by name**: the failing run ends ``failed`` with an error
  naming the client (the server loop calls ``run.begin_round`` each round and checks replies);
- its **wire bytes are reproducible** to within a few bytes per message (Flower's ids differ);
- its **bytes are counted at the grid**: messages went both ways, and the logical payload
  does not exceed what crossed the wire;
- its **config rejects unknown keys** (a typo in a suite is an error, not a default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import tempfile
from pathlib import Path

from fedfuse.plugins.config import ConfigError, build_config

#: fields a config may have, shrunk so the check takes seconds (applied where the field exists)
TINY = {"model": "tiny", "client_model": "tiny", "local_steps": 2, "server_steps": 2, "pretrain_steps": 4,
        "share_size": 8, "batch_size": 8, "warmup_steps": 1}
REQUIRED = ("train_loss", "fid", "fid_vs_noise", "recall", "pop_fid", "bytes_up", "bytes_down",
            "client_flops", "latency_s", "energy_j")
DEPLOY_HINT = " (the harness scores what the server loop deploys: run.deploy_model(...) or run.deploy(...))"
#: wire bytes may differ by a few bytes per message (Flower's ids and timestamps): see WIRE_SLACK
DETERMINISTIC = ("fid", "train_loss", "eval_loss", "payload_up", "payload_down", "client_flops",
                 "server_flops", "messages", "model_sha256", "mia_auc")
WIRE_SLACK = 64  # bytes per message, as in the deployment parity test
SUITE = """format = 1
[suite]
name = "conformance"
version = "1"
[matrix]
datasets = [{dataset}]
seeds = [0]
clients = {clients}
rounds = {rounds}{participation}
samples = 64
sample_steps = 5
mia_samples = 32
[[protocols]]
name = {name}
config = {config}
"""
#: the failing run's round (the first that follows a round whose state a client may keep)
FAILING_ROUND = 2


def tiny_config(spec, config: dict | None = None) -> dict:
    if not dataclasses.is_dataclass(spec.config):
        raise ConfigError(f"protocol '{spec.name}': its config {spec.config!r} is not a dataclass")
    fields = {f.name for f in dataclasses.fields(spec.config) if f.init}
    return {**{k: v for k, v in TINY.items() if k in fields}, **(config or {})}


def toml_value(key: str, value) -> str:
    """A config value as TOML (JSON's spelling coincides for these types)."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(key, v) for v in value) + "]"
    if isinstance(value, float) and not math.isfinite(value) or not isinstance(value, (bool, int, float, str)):
        raise ConfigError(f"config {key} = {value!r}: give a number, a string, a boolean or a list of them")
    return json.dumps(value)


def inline_table(values: dict) -> str:
    return "{ " + ", ".join(f"{k} = {toml_value(k, v)}" for k, v in values.items()) + " }"


def suite_text(name: str, config: dict, dataset_args: dict | None, rounds: int, clients: int,
               participation: int | None) -> str:
    dataset = inline_table({"name": "digits", **(dataset_args or {})})
    return SUITE.format(name=json.dumps(name), config=inline_table(config), dataset=dataset, clients=clients,
                        rounds=rounds, participation=f"\nparticipation = {participation}" if participation else "")


class Runs:
    """The check's runs of one cell, each into its own output folder under ``folder``."""

    def __init__(self, suite_path: Path, registry, folder: Path):
        from fedfuse.bench.suites.expand import expand
        from fedfuse.bench.suites.parse import load_suite

        self.suite, self.registry, self.folder = load_suite(str(suite_path)), registry, folder
        self.cells = expand(self.suite, registry)
        self.records: dict[str, dict] = {}

    def run(self, name: str, mode=contextlib.nullcontext()) -> dict:
        """The cell's record, run under ``mode`` (a context manager) into ``folder/name``."""
        from fedfuse.bench.engine.runner import run_anew

        with mode:
            (self.records[name],) = run_anew(self.registry, self.folder / name, self.suite.digest, self.cells)
        return self.records[name]


def run_all(runs: Runs, rounds: int) -> dict[str, dict]:
    """fresh, warm, fresh-again (only where fresh and warm differ) and failing (2 rounds or more)."""
    from fedfuse.bench.engine.grid import inject_client_failure
    from fedfuse.bench.engine.simulation import fresh_processes, one_actor

    with one_actor():  # the warm run's messages all pass through one process
        fresh, warm = runs.run("fresh", fresh_processes()), runs.run("warm")
        if ok(fresh, warm) and differing(fresh, warm):
            runs.run("fresh-again", fresh_processes())
        if rounds >= FAILING_ROUND:
            runs.run("failing", inject_client_failure(FAILING_ROUND))
    return runs.records


def ok(*records: dict) -> bool:
    return all(r["status"] == "ok" for r in records)


def differing(a: dict, b: dict) -> list[str]:
    """The deterministic keys on which two ok records differ, each as 'key a vs b'."""
    m1, m2 = a["metrics"], b["metrics"]
    return [f"{k} {m1[k]} vs {m2.get(k)}" for k in DETERMINISTIC if k in m1 and not same(m1[k], m2.get(k))]


def rule(name: str, passed: bool, seen: str) -> dict:
    return {"rule": name, "ok": bool(passed), "seen": seen}


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def judge(records: dict[str, dict], spec) -> list[dict]:
    fresh, warm = records["fresh"], records["warm"]
    seen = ", ".join(f"{name} {r['status']}" + (f" ({r['error']})" if r.get("error") else "")
                     for name, r in (("fresh", fresh), ("warm", warm)))
    if ok(warm) and not ok(fresh):
        seen += " (only with a process per message: does a client keep state outside context.state?)"
    rules = [rule("finishes", ok(fresh, warm), seen)]
    if ok(fresh, warm):
        m = warm["metrics"]
        missing = [k for k in REQUIRED if not isinstance(m.get(k), (int, float))]
        hint = DEPLOY_HINT if "fid" in missing else ""
        rules += [rule("reports the harness's keys", not missing, f"missing: {missing}{hint}" if missing else "all present"),
                  *state_rules(records), wire_rule(fresh, warm), counted_rule(m)]
    if "failing" in records:
        rules.append(failure_rule(records["failing"]))
    return rules + [config_rule(spec)]


def state_rules(records: dict[str, dict]) -> list[dict]:
    """Determinism and state in the Context. Fresh and warm agree: both hold. Otherwise the
    fresh run is repeated: if it agrees with itself, the protocol is deterministic and only the
    process layout changed its results, so a client keeps state outside its Context."""
    fresh, warm, again = records["fresh"], records["warm"], records.get("fresh-again")
    if again is None:
        kept = ", ".join(k for k in DETERMINISTIC if k in warm["metrics"])
        return [rule("deterministic for a seed", True, f"same {kept}"),
                rule("client state lives in the Context", True, "a process per message gives the same results")]
    if not ok(again) or differing(fresh, again):
        seen = again.get("error") or "; ".join(differing(fresh, again))
        return [rule("deterministic for a seed", False, f"two runs of the same cell differ: {seen}"),
                rule("client state lives in the Context", False, "cannot tell: the protocol is not deterministic")]
    return [rule("deterministic for a seed", True, "two runs with a process per message agree"),
            rule("client state lives in the Context", False,
                 "the results change when each message runs in a process of its own: a client keeps state "
                 "outside context.state (a global, an attribute, the harness's cache) or shares it between "
                 "clients; fresh vs warm: " + "; ".join(differing(fresh, warm)))]


def failure_rule(failing: dict) -> dict:
    error = failing.get("error") or ""
    named = failing["status"] == "failed" and "client " in error and "injected failure" in error
    seen = (f"failed: {error[:200]}" if failing["status"] == "failed" else
            f"ended {failing['status']}: a client's error in round {FAILING_ROUND} went unnoticed (call "
            "run.begin_round(r) each round and pass replies through check_replies or a Flower strategy)")
    return rule("a failed client fails the cell by name", named, seen)


def wire_rule(first: dict, second: dict) -> dict:
    m1, m2 = first["metrics"], second["metrics"]
    slack = WIRE_SLACK * m1.get("messages", 0)
    wire = [k for k in ("bytes_up", "bytes_down") if abs(m1.get(k, 0) - m2.get(k, 0)) > slack]
    return rule("wire bytes reproducible", not wire,
                f"{', '.join(f'{k} {m1[k]:.0f} vs {m2[k]:.0f}' for k in wire)} (more than {slack:.0f} B apart)" if wire
                else f"within {WIRE_SLACK} B per message")


def counted_rule(m: dict) -> dict:
    counted = m.get("messages", 0) > 0 and m.get("bytes_up", 0) > 0 and m.get("bytes_down", 0) > 0
    within = m.get("payload_up", 0) <= m.get("bytes_up", 0)
    return rule("bytes counted at the grid", counted and within,
                f"{m.get('messages', 0):.0f} messages, {m.get('bytes_up', 0):.0f} B up "
                f"(payload {m.get('payload_up', 0):.0f} B), {m.get('bytes_down', 0):.0f} B down")


def config_rule(spec) -> dict:
    try:
        build_config(spec.config, {"no_such_key": 1}, "conformance check")
    except ConfigError as err:
        return rule("config rejects unknown keys", True, str(err).split(";")[0].removeprefix("conformance check: "))
    except Exception as err:  # noqa: BLE001 — a config that raises anything else is reported, not fatal
        return rule("config rejects unknown keys", False, f"{type(err).__name__}: {err}")
    return rule("config rejects unknown keys", False, "an unknown key 'no_such_key' was accepted")


def check(name: str, config: dict | None = None, registry=None, out: Path | None = None,
          dataset_args: dict | None = None, rounds: int = 2, clients: int = 3) -> dict:
    """The conformance report of protocol ``name``: ``{"protocol", "config", "rounds", "clients",
    "rules", "runs", "ok"}``. ``config`` overrides the tiny config (checked first: an unknown
    key is a ConfigError naming it); ``rounds`` and ``clients`` size the cell (a protocol that
    allows partial participation trains ``clients - 1`` of them a round); ``dataset_args`` are
    digits' arguments (e.g. the ``public_classes`` a fine-tuning protocol pre-trains on);
    ``out`` keeps the runs' folders (default: a temporary folder, removed afterwards)."""
    from fedfuse.plugins.manager import registry as default_registry

    registry = registry or default_registry()
    spec = registry.get("protocols", name)
    config = checked_config(spec, config, rounds, clients)
    participation = clients - 1 if spec.partial_participation and clients >= 3 else None
    with tempfile.TemporaryDirectory(prefix="fedfuse-check-") as tmp:
        folder = Path(out) if out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "suite.toml").write_text(suite_text(name, config, dataset_args, rounds, clients, participation))
        records = run_all(Runs(folder / "suite.toml", registry, folder), rounds)
        rules = judge(records, spec)
    runs = [{"run": run, "status": r["status"], **{k: r["metrics"].get(k) for k in ("wall_s", "engine_start_s", "engine_reused")}}
            for run, r in records.items()]
    return {"protocol": name, "config": config, "rounds": rounds, "clients": clients, "rules": rules, "runs": runs,
            "ok": all(r["ok"] for r in rules)}


def checked_config(spec, config: dict | None, rounds: int, clients: int) -> dict:
    """The tiny config with ``config`` over it, checked against the protocol's fields before any
    file is written (so an error names the user's keys, not a generated suite)."""
    if not (isinstance(rounds, int) and 1 <= rounds <= 100 and isinstance(clients, int) and 2 <= clients <= 100):
        raise ConfigError(f"check protocol {spec.name}: rounds must be 1-100 and clients 2-100 (got {rounds}, {clients})")
    config = tiny_config(spec, config)
    try:
        build_config(spec.config, config, f"check protocol {spec.name} config")
    except ConfigError as err:
        if any(k in (config or {}) for k in ("rounds", "clients")):
            raise ConfigError(f"{err} (rounds and clients size the check: --rounds, --clients)") from None
        raise
    return config
