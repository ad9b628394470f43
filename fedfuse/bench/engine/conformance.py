"""What every protocol plugin must satisfy, checked by running it: ``fedfuse check protocol NAME``.

The protocol runs twice on one tiny cell (digits, 2 clients, 1 round, 64 samples scored, the
membership attack on 32 images) in the simulation engine, each time into a fresh output
folder. The report lists each rule with what was seen. The rules:

- it **finishes**: both runs end ``ok``;
- it **reports the harness's keys**: the quality and cost figures every leaderboard shows (quality:
  the harness's scores of what the server loop deployed, ``run.deploy_model``/``run.deploy``);
- it is **deterministic** for a seed: both runs give the same quality, losses, payload and FLOPs;
- its **wire bytes are reproducible** to within a few bytes per message (Flower's ids differ);
- its **bytes are counted at the grid**: messages went both ways, and the logical payload
  does not exceed what crossed the wire;
- its **config rejects unknown keys** (a typo in a suite is an error, not a default).
"""

from __future__ import annotations

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
clients = 2
rounds = 1
samples = 64
sample_steps = 5
mia_samples = 32
[[protocols]]
name = {name}
config = {config}
"""


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


def suite_text(name: str, config: dict, dataset_args: dict | None = None) -> str:
    dataset = inline_table({"name": "digits", **(dataset_args or {})})
    return SUITE.format(name=json.dumps(name), config=inline_table(config), dataset=dataset)


def run_twice(name: str, config: dict, registry, folder: Path, dataset_args: dict | None = None) -> list[dict]:
    """Both runs' records (one cell each), each in its own output folder."""
    from fedfuse.results.outlock import OutputLock
    from fedfuse.bench.engine.runner import SuiteRunner
    from fedfuse.bench.suites.expand import expand
    from fedfuse.bench.suites.parse import load_suite

    (folder / "suite.toml").write_text(suite_text(name, config, dataset_args))
    suite = load_suite(str(folder / "suite.toml"))
    cells = expand(suite, registry)
    records = []
    for attempt in (1, 2):
        out = folder / f"run-{attempt}"
        with OutputLock(out):
            runner = SuiteRunner(registry, out, suite.digest, rerun=True)  # never an old result (--keep)
            runner.run(cells)
            records += runner.store.records([c.cell_id for c in cells])
            runner.store.close()
    return records


def rule(name: str, passed: bool, seen: str) -> dict:
    return {"rule": name, "ok": bool(passed), "seen": seen}


def same(a, b) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    return a == b


def judge(records: list[dict], spec) -> list[dict]:
    first, second = records
    statuses = [r["status"] for r in records]
    rules = [rule("finishes", statuses == ["ok", "ok"],
                  ", ".join(f"{r['status']}" + (f" ({r['error']})" if r.get("error") else "") for r in records))]
    if statuses != ["ok", "ok"]:
        return rules + [config_rule(spec)]
    m1, m2 = first["metrics"], second["metrics"]
    missing = [k for k in REQUIRED if not isinstance(m1.get(k), (int, float))]
    hint = DEPLOY_HINT if "fid" in missing else ""
    rules.append(rule("reports the harness's keys", not missing, f"missing: {missing}{hint}" if missing else "all present"))
    differ = [k for k in DETERMINISTIC if k in m1 and not same(m1.get(k), m2.get(k))]
    rules.append(rule("deterministic for a seed", not differ,
                      f"differ between runs: {', '.join(f'{k} {m1[k]} vs {m2.get(k)}' for k in differ)}" if differ
                      else f"same {', '.join(k for k in DETERMINISTIC if k in m1)}"))
    slack = WIRE_SLACK * m1.get("messages", 0)
    wire = [k for k in ("bytes_up", "bytes_down") if abs(m1.get(k, 0) - m2.get(k, 0)) > slack]
    rules.append(rule("wire bytes reproducible", not wire,
                      f"{', '.join(f'{k} {m1[k]:.0f} vs {m2[k]:.0f}' for k in wire)} (more than {slack:.0f} B apart)" if wire
                      else f"within {WIRE_SLACK} B per message"))
    counted = m1.get("messages", 0) > 0 and m1.get("bytes_up", 0) > 0 and m1.get("bytes_down", 0) > 0
    within = m1.get("payload_up", 0) <= m1.get("bytes_up", 0)
    rules.append(rule("bytes counted at the grid", counted and within,
                      f"{m1.get('messages', 0):.0f} messages, {m1.get('bytes_up', 0):.0f} B up "
                      f"(payload {m1.get('payload_up', 0):.0f} B), {m1.get('bytes_down', 0):.0f} B down"))
    return rules + [config_rule(spec)]


def config_rule(spec) -> dict:
    try:
        build_config(spec.config, {"no_such_key": 1}, "conformance check")
    except ConfigError as err:
        return rule("config rejects unknown keys", True, str(err).split(";")[0].removeprefix("conformance check: "))
    except Exception as err:  # noqa: BLE001 — a config that raises anything else is reported, not fatal
        return rule("config rejects unknown keys", False, f"{type(err).__name__}: {err}")
    return rule("config rejects unknown keys", False, "an unknown key 'no_such_key' was accepted")


def check(name: str, config: dict | None = None, registry=None, out: Path | None = None,
          dataset_args: dict | None = None) -> dict:
    """The conformance report of protocol ``name``: ``{"protocol", "config", "rules", "runs", "ok"}``.
    ``config`` overrides the tiny config; ``dataset_args`` are digits' arguments (e.g. the
    ``public_classes`` a fine-tuning protocol pre-trains on); ``out`` keeps the two runs'
    folders (default: a temporary folder, removed afterwards)."""
    from fedfuse.plugins.manager import registry as default_registry

    registry = registry or default_registry()
    spec = registry.get("protocols", name)
    config = tiny_config(spec, config)
    with tempfile.TemporaryDirectory(prefix="fedfuse-check-") as tmp:
        folder = Path(out) if out else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        records = run_twice(name, config, registry, folder, dataset_args)
        rules = judge(records, spec)
    runs = [{"status": r["status"], **{k: r["metrics"].get(k) for k in ("wall_s", "engine_start_s", "engine_reused")}}
            for r in records]
    return {"protocol": name, "config": config, "rules": rules, "runs": runs, "ok": all(r["ok"] for r in rules)}
