"""Leaderboard tables as Markdown or JSON, and trade-off plots (matplotlib, PNG)."""

from __future__ import annotations

import json
import math

from fedfuse.leaderboard.ranking import COSTS, PRIMARY, Row

UNITS = {"bytes_up": ("MB up", 1e6), "bytes_down": ("MB down", 1e6), "client_flops": ("client GFLOP", 1e9),
         "latency_s": ("latency s", 1), "energy_j": ("energy J", 1)}


def cell(row: Row, metric: str, scale: float = 1.0) -> str:
    m = row.mean(metric)
    if math.isnan(m):
        return "–"
    s = row.std(metric)
    return f"{m / scale:.4g} ± {s / scale:.2g}" if s else f"{m / scale:.4g}"


def markdown(rows: list[Row], extra: tuple[str, ...] = ()) -> str:
    out = []
    for track in dict.fromkeys(r.track for r in rows):
        out += [f"### {track}", "", "| # | configuration | data | profile | n | "
                + " | ".join([f"{PRIMARY} ↓", "kid", "recall ↑", "coverage ↑", *(UNITS[c][0] for c in COSTS), *extra])
                + " | Pareto |", "|" + "---|" * (10 + len(COSTS) + len(extra))]
        for i, r in enumerate([r for r in rows if r.track == track], 1):
            n = f"{len(r.seeds)}{'*' if r.incomplete else ''}"
            values = [cell(r, PRIMARY), cell(r, "kid"), cell(r, "recall"), cell(r, "coverage"),
                      *(cell(r, c, UNITS[c][1]) for c in COSTS), *(cell(r, e) for e in extra)]
            out.append(f"| {i} | {r.label} | {r.data} | {r.profile} | {n} | " + " | ".join(values)
                       + f" | {', '.join(r.pareto) or ''} |")
        out.append("")
    out.append("n = seeds pooled (mean ± std); * = fewer seeds than the suite asks for, or a failed cell. "
               "Pareto: on the front of FID vs that cost.")
    return "\n".join(out)


def to_json(rows: list[Row]) -> str:
    return json.dumps([{"track": r.track, "label": r.label, "data": r.data, "profile": r.profile,
                        "seeds": r.seeds, "failed": r.failed, "incomplete": r.incomplete, "pareto": r.pareto,
                        "mean": {k: r.mean(k) for k in r.values}, "std": {k: r.std(k) for k in r.values}}
                       for r in rows], indent=1)


def tradeoff_plot(rows: list[Row], x: str, y: str, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in rows:
        if math.isnan(r.mean(x)) or math.isnan(r.mean(y)):
            continue
        ax.errorbar(r.mean(x), r.mean(y), xerr=r.std(x), yerr=r.std(y), fmt="o", capsize=3, label=r.label)
        ax.annotate(r.label, (r.mean(x), r.mean(y)), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
