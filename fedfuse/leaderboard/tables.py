"""Render result records (the store's dicts) as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
import math

from rich.table import Table

COLUMNS = [  # (header, how to get it from a record)
    ("cell", lambda r: r["name"]),
    ("status", lambda r: r["status"]),
    ("FID", lambda r: r["metrics"].get("fid")),
    ("fid/noise", lambda r: r["metrics"].get("fid_vs_noise")),
    ("recall", lambda r: r["metrics"].get("recall")),
    ("DP ε", lambda r: epsilon_of(r)),
    ("MIA AUC", lambda r: r["metrics"].get("mia_auc")),
    ("MB up", lambda r: _scaled(r["metrics"].get("bytes_up"), 1e6)),
    ("client GFLOP", lambda r: _scaled(r["metrics"].get("client_flops"), 1e9)),
    ("sim s", lambda r: r["metrics"].get("latency_s")),
    ("energy J", lambda r: r["metrics"].get("energy_j")),
    ("wall s", lambda r: r["metrics"].get("wall_s")),
]


def epsilon_of(record: dict) -> float | None:
    """A finished cell's DP ε: ∞ where it claims none (stored as null), unknown otherwise."""
    value = record["metrics"].get("dp_epsilon")
    return math.inf if value is None and record["status"] == "ok" else value


def _scaled(value, unit: float):
    return None if value is None else value / unit


def _fmt(value) -> str:
    if value is None:
        return "-"
    if value == math.inf:
        return "∞"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def rich_table(records: list[dict]) -> Table:
    table = Table(title="fedfuse results")
    for header, _ in COLUMNS:
        if header == "cell":
            table.add_column(header, overflow="fold", min_width=14)
        else:
            table.add_column(header, justify="left" if header == "status" else "right", no_wrap=True)
    for record in records:
        table.add_row(*(_fmt(get(record)) for _, get in COLUMNS))
    return table


def strict(value):
    """JSON has no NaN or infinity: a non-finite number is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    return value


def to_json(records: list[dict]) -> str:
    return json.dumps(strict(records), indent=2, allow_nan=False)


def to_csv(records: list[dict]) -> str:
    """Flat rows: the cell's keys, then one column per metric (``metrics.<name>``)."""
    metric_names = sorted({k for r in records for k in r["metrics"]})
    base = ["suite", "cell", "name", "protocol", "dataset", "partitioner", "profile", "seed", "status", "error"]
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(base + [f"metrics.{m}" for m in metric_names])
    for r in records:
        writer.writerow([r[k] for k in base] + [r["metrics"].get(m) for m in metric_names])
    return buf.getvalue()
