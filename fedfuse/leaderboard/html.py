"""The leaderboard as one self-contained HTML page: sortable tables (a few lines of inline JS),
plots embedded as PNG (matplotlib), links to each configuration's sample grid. No server, no
CDN, nothing fetched at view time. ``page.html#selftest`` sorts a column and checks the plots
in a real browser (the test suite opens it with headless Chromium)."""

from __future__ import annotations

import base64
import html
import io
import math
import os
from pathlib import Path

from fedfuse.leaderboard.ranking import COSTS, FRONTS, PRIMARY, Row
from fedfuse.leaderboard.render import UNITS

STYLE = """body{font:14px system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right}
th{cursor:pointer;background:#f4f4f4;position:sticky;top:0}th:hover{background:#e4e4ff}td.l,th.l{text-align:left}
tr.front td{background:#f3fff3}.plots img{max-width:380px;margin:4px;border:1px solid #eee}.note{color:#666;font-size:12px}"""

SCRIPT = """function sortBy(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),
b=t.tBodies[0],rows=[...b.rows],asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
const key=r=>{const v=r.cells[i].dataset.v;return v===undefined||v===''?NaN:parseFloat(v)};
rows.sort((x,y)=>{const a=key(x),c=key(y);if(isNaN(a)&&isNaN(c))return x.cells[i].textContent.localeCompare(y.cells[i].textContent);
if(isNaN(a))return 1;if(isNaN(c))return -1;return asc?a-c:c-a});rows.forEach(r=>b.appendChild(r))}
document.querySelectorAll('th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
window.addEventListener('load',()=>{if(location.hash!=='#selftest')return;const t=document.querySelector('table.board');
const th=[...t.tHead.rows[0].cells].find(c=>c.dataset.metric==='bytes_up');th.click();
const col=[...t.tHead.rows[0].cells].indexOf(th);const vals=[...t.tBodies[0].rows].map(r=>parseFloat(r.cells[col].dataset.v)).filter(v=>!isNaN(v));
const sorted=vals.every((v,k)=>k===0||vals[k-1]<=v);const imgs=[...document.images].filter(i=>i.closest('.plots'));
const shown=imgs.length>0&&imgs.every(i=>i.complete&&i.naturalWidth>0);const d=document.createElement('div');d.id='selftest';
d.textContent='selftest '+(sorted&&vals.length>1?'sorted':'unsorted')+' '+(shown?'plots-visible':'plots-missing')+' rows='+vals.length;
document.body.appendChild(d)});"""


def png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def front_plot(rows: list[Row], cost: str, title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    pts = [r for r in rows if not math.isnan(r.mean(cost)) and not math.isnan(r.mean(PRIMARY))]
    for r in pts:
        on = title in r.pareto
        ax.errorbar(r.mean(cost) / UNITS[cost][1], r.mean(PRIMARY), yerr=r.std(PRIMARY), fmt="o" if on else "x",
                    color="tab:green" if on else "tab:gray", capsize=2)
        ax.annotate(r.label, (r.mean(cost) / UNITS[cost][1], r.mean(PRIMARY)), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    front = sorted((r for r in pts if title in r.pareto), key=lambda r: r.mean(cost))
    ax.plot([r.mean(cost) / UNITS[cost][1] for r in front], [r.mean(PRIMARY) for r in front], "g--", lw=1)
    ax.set_xlabel(UNITS[cost][0])
    ax.set_ylabel(f"{PRIMARY} (lower is better)")
    ax.set_title(f"Pareto front: {PRIMARY} vs {title}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def rounds_plot(records: list[dict], metric: str = "eval_loss") -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for r in records:
        points = [(x["round"], x[metric]) for x in r["rounds"] if isinstance(x.get(metric), float)]
        if points and r["status"] == "ok":
            series.setdefault(r["label"], []).append(points)
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(4.6, 3.2))
    for label, runs in series.items():
        for i, pts in enumerate(runs):
            ax.plot(*zip(*pts), marker=".", color=f"C{list(series).index(label) % 10}", alpha=0.7,
                    label=label if i == 0 else None)
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} over rounds (each seed)", fontsize=9)
    ax.legend(fontsize=6)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def td(row: Row, metric: str, scale: float = 1.0) -> str:
    m = row.mean(metric)
    if math.isnan(m):
        return '<td data-v="">–</td>'
    s = row.std(metric)
    text = f"{m / scale:.4g}" + (f" ± {s / scale:.2g}" if s else "")
    return f'<td data-v="{m}">{html.escape(text)}</td>'


def sample_link(row: Row, records: list[dict], dest: Path) -> str:
    for r in records:
        if r["label"] == row.label and r["status"] == "ok":
            grid = Path(r["run_dir"]) / "samples.png"
            if grid.is_file():
                return f'<a href="{html.escape(os.path.relpath(grid, dest.parent))}">samples</a>'
    return ""


def table(rows: list[Row], records: list[dict], dest: Path) -> str:
    heads = ["#", "configuration", "data", "profile", "n", f"{PRIMARY} ↓", "kid", "recall ↑", "coverage ↑",
             *(UNITS[c][0] for c in COSTS), "Pareto", "samples"]
    metrics = [None, None, None, None, None, PRIMARY, "kid", "recall", "coverage", *COSTS, None, None]
    th = "".join(f'<th class="{"l" if m is None and i in (1, 2, 3, 15, 16) else ""}"'
                 f'{f" data-metric={chr(34)}{m}{chr(34)}" if m else ""}>{html.escape(h)}</th>'
                 for i, (h, m) in enumerate(zip(heads, metrics)))
    body = []
    for i, r in enumerate(rows, 1):
        n = f"{len(r.seeds)}{'*' if r.incomplete else ''}"
        cells = [f'<td data-v="{i}">{i}</td>', f'<td class="l">{html.escape(r.label)}</td>',
                 f'<td class="l">{html.escape(r.data)}</td>', f'<td class="l">{html.escape(r.profile)}</td>',
                 f'<td data-v="{len(r.seeds)}">{n}</td>', td(r, PRIMARY), td(r, "kid"), td(r, "recall"), td(r, "coverage"),
                 *(td(r, c, UNITS[c][1]) for c in COSTS), f'<td class="l">{html.escape(", ".join(r.pareto))}</td>',
                 f'<td class="l">{sample_link(r, records, dest)}</td>']
        body.append(f'<tr class="{"front" if r.pareto else ""}">{"".join(cells)}</tr>')
    return f'<table class="board"><thead><tr>{th}</tr></thead><tbody>{"".join(body)}</tbody></table>'


def page(rows: list[Row], records: list[dict], dest: Path) -> str:
    sections = []
    for track in dict.fromkeys(r.track for r in rows):
        members = [r for r in rows if r.track == track]
        recs = [x for x in records if any(x["label"] == r.label for r in members)]
        plots = [front_plot(members, cost, name) for cost, name in FRONTS]
        plots.append(rounds_plot(recs))
        imgs = "".join(f'<img alt="plot" src="{p}">' for p in plots if p)
        sections.append(f"<h2>{html.escape(track)}</h2>{table(members, recs, dest)}<div class='plots'>{imgs}</div>")
    note = ("n = seeds pooled (mean ± std); * = fewer seeds than the suite asks for, or a failed cell. Green rows are on "
            "a Pareto front of FID vs a cost. Click a column to sort.")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fedfuse leaderboard</title><style>{STYLE}</style>"
            f"</head><body><h1>fedfuse leaderboard</h1><p class='note'>{note}</p>{''.join(sections)}"
            f"<script>{SCRIPT}</script></body></html>")
