"""The leaderboard as one self-contained HTML page: sortable tables (a few lines of inline JS),
plots embedded as PNG (matplotlib), links to each configuration's sample grid. No server, no
CDN, nothing fetched at view time. ``page.html#selftest`` sorts a column and checks the plots
in a real browser (the test suite opens it with headless Chromium)."""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

from fedfuse.leaderboard.ranking import (
    COSTS,
    FRONTS,
    REFERENCES,
    Row,
    reference_rows,
)
from fedfuse.leaderboard.render import (
    LEGEND,
    PRIVACY,
    REFERENCE_NAMES,
    UNITS,
    mean_std,
    pareto_cell,
    quality_columns,
    space_notes,
)

STYLE = """body{font:14px system-ui,sans-serif;margin:1.5em auto;max-width:1700px;padding:0 1em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}th,td{padding:3px 6px;border-bottom:1px solid #ddd;text-align:right}
thead{position:sticky;top:0;z-index:1}th{background:#f4f4f4}thead tr:last-child th{cursor:pointer}
thead tr:last-child th:hover{background:#e4e4ff}th.group{text-align:center;border-bottom:2px solid #bbb}
td.l,th.l{text-align:left}td small{color:#777;display:block;font-size:11px}
tr.front td{background:#f3fff3}tr.unlearned td{color:#999;background:#fafafa}.plots img{width:460px;margin:4px;border:1px solid #eee}
.note{color:#666;font-size:12px}.shared{color:#444;font-size:13px}td img.grid{width:56px;image-rendering:pixelated;display:block}
.warn{color:#a00}"""

SCRIPT = """function sortBy(th){const t=th.closest('table'),i=[...th.parentNode.children].indexOf(th),
b=t.tBodies[0],rows=[...b.rows],asc=th.dataset.dir!=='asc';th.dataset.dir=asc?'asc':'desc';
const key=r=>{const v=r.cells[i].dataset.v;return v===undefined||v===''?NaN:parseFloat(v)};
rows.sort((x,y)=>{const a=key(x),c=key(y);if(isNaN(a)&&isNaN(c))return x.cells[i].textContent.localeCompare(y.cells[i].textContent);
if(isNaN(a))return 1;if(isNaN(c))return -1;return asc?a-c:c-a});rows.forEach(r=>b.appendChild(r))}
document.querySelectorAll('thead tr:last-child th').forEach(th=>th.addEventListener('click',()=>sortBy(th)));
window.addEventListener('load',()=>{if(location.hash!=='#selftest')return;const t=document.querySelector('table.board');
const head=t.tHead.rows[t.tHead.rows.length-1];const th=[...head.cells].find(c=>c.dataset.metric==='bytes_up');th.click();
const col=[...head.cells].indexOf(th);const vals=[...t.tBodies[0].rows].map(r=>parseFloat(r.cells[col].dataset.v)).filter(v=>!isNaN(v));
const sorted=vals.every((v,k)=>k===0||vals[k-1]<=v);const imgs=[...document.images].filter(i=>i.closest('.plots'));
const shown=imgs.length>0&&imgs.every(i=>i.complete&&i.naturalWidth>0);const d=document.createElement('div');d.id='selftest';
const fits=[...document.querySelectorAll('table.board')].every(b=>b.scrollWidth<=document.documentElement.clientWidth);
d.textContent='selftest '+(sorted&&vals.length>1?'sorted':'unsorted')+' '+(shown?'plots-visible':'plots-missing')+' rows='+vals.length+' '+(fits?'fits':'overflows');
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
    q = rows[0].primary  # the section's ranking metric
    pts = [r for r in rows if not math.isnan(r.mean(cost)) and not math.isnan(r.mean(q))]
    for r in pts:
        on = title in r.pareto
        ax.errorbar(r.mean(cost) / UNITS[cost][1], r.mean(q), yerr=r.std(q), fmt="o" if on else "x",
                    color="tab:green" if on else "tab:gray", capsize=2)
        ax.annotate(r.label, (r.mean(cost) / UNITS[cost][1], r.mean(q)), fontsize=6, xytext=(3, 3),
                    textcoords="offset points")
    front = sorted((r for r in pts if title in r.pareto), key=lambda r: r.mean(cost))
    ax.plot([r.mean(cost) / UNITS[cost][1] for r in front], [r.mean(q) for r in front], "g--", lw=1)
    ax.set_xlabel(UNITS[cost][0])
    ax.set_ylabel(q)
    ax.set_title(f"Pareto front: {q} vs {title}", fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return png(fig)


def rounds_plot(records: list[dict], labels: dict[str, str], metric: str = "eval_loss") -> str | None:
    """``metric`` per round, a colour per configuration (``labels``: run directory -> its row's label)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {}
    for r in records:
        points = [(x["round"], x[metric]) for x in r["rounds"] if isinstance(x.get(metric), float)]
        if points and r["status"] == "ok":
            series.setdefault(labels.get(r["run_dir"], r["label"]), []).append(points)
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
    """A figure's cell: the mean, its spread over seeds on a line of its own (narrow columns)."""
    m = row.mean(metric)
    mean, _, spread = mean_std(row, metric, scale).partition(" ± ")
    below = f"<small>± {html.escape(spread)}</small>" if spread else ""
    return f'<td data-v="{"" if math.isnan(m) else m}">{html.escape(mean)}{below}</td>'


# the harness's population grid; older records: fine-tuning's own grid, a split client's
GRIDS = ("samples.png", "final_samples.png", "samples_client0.png")


def grid_of(row: Row) -> Path | None:
    """The sample grid of the configuration's lowest-seed ok cell (client 0's where clients sample apart)."""
    dirs = [Path(row.run_dirs[seed]) for seed in sorted(row.run_dirs)]
    return next((d / g for d in dirs for g in GRIDS if (d / g).is_file()), None)


def sample_grid(row: Row) -> str:
    """That grid embedded (the page travels alone)."""
    grid = grid_of(row)
    if grid is None:
        return ""
    data = base64.b64encode(grid.read_bytes()).decode()
    return f'<img class="grid" alt="samples of {html.escape(row.label)}" src="data:image/png;base64,{data}">'


def groups(primary: str) -> tuple:
    """The table's column groups: (title, headers, metrics), the figures' columns in order."""
    quality = quality_columns(primary)
    return (("quality", tuple(quality.values()), tuple(quality)),
            ("privacy", tuple(PRIVACY.values()), tuple(PRIVACY)),
            ("cost", tuple(UNITS[c][0] for c in COSTS), COSTS))


SHARED = (("data", lambda r: r.data), ("profile", lambda r: r.profile), ("system", lambda r: "; ".join(r.systems)))


def shared_columns(rows: list[Row]) -> dict[str, str]:
    """The descriptive columns every row of a section shares: said once above its table."""
    return {name: get(rows[0]) for name, get in SHARED if len({get(r) for r in rows}) == 1}


def table(rows: list[Row], records: list[dict]) -> str:
    shared = shared_columns(rows)
    own = [name for name, _ in SHARED if name not in shared]
    lead = ["#", "configuration", *(n for n in own if n != "system"), "n"]
    tail = ["Pareto", *(["system"] if "system" in own else []), "samples"]
    columns = groups(rows[0].primary)
    titles = "".join(f'<th class="group" colspan="{len(heads)}">{title}</th>' for title, heads, _ in columns)
    top = f'<tr><th colspan="{len(lead)}"></th>{titles}<th colspan="{len(tail)}"></th></tr>'
    figures = [(h, m) for _, heads, metrics in columns for h, m in zip(heads, metrics)]
    cells = [("#", None, False), *((h, None, True) for h in lead[1:-1]), ("n", None, False),
             *((h, m, False) for h, m in figures), *((h, None, True) for h in tail)]
    th = "".join(f'<th class="{"l" if left else ""}"{f" data-metric={chr(34)}{m}{chr(34)}" if m else ""}>'
                 f'{html.escape(h)}</th>' for h, m, left in cells)
    body = "".join(table_row(i, r, own, [m for _, m in figures]) for i, r in enumerate(rows, 1))
    said = "; ".join(f"{k}: {html.escape(v)}" for k, v in shared.items())
    return (f'{f"<p class=shared>{said}</p>" if said else ""}<table class="board"><thead>{top}<tr>{th}</tr></thead>'
            f'<tbody>{body}</tbody></table>')


def table_row(i: int, r: Row, own: list[str], figures: list[str]) -> str:
    n = r.n_shown
    described = dict((name, get(r)) for name, get in SHARED)
    cells = [f'<td data-v="{i}">{html.escape(r.place)}</td>', f'<td class="l">{html.escape(r.shown_label)}</td>',
             *(f'<td class="l">{html.escape(described[k])}</td>' for k in own if k != "system"),
             f'<td data-v="{len(r.seeds)}">{n}</td>',
             *(td(r, m, UNITS[m][1] if m in UNITS else 1.0) for m in figures),
             f'<td class="l">{html.escape(pareto_cell(r))}</td>',
             *([f'<td class="l">{html.escape(described["system"])}</td>'] if "system" in own else []),
             f'<td class="l">{sample_grid(r)}</td>']
    css = "unlearned" if r.not_learned else ("front" if r.pareto else "")
    return f'<tr class="{css}">{"".join(cells)}</tr>'


def references_html(members: list[Row]) -> str:
    out = []
    for data, refs in reference_rows(members).items():
        rows = "".join(f'<tr><td class="l">{REFERENCE_NAMES[k]}</td><td>{refs[k][0]:.4g}</td><td>{refs[k][1]:.3g}</td></tr>'
                       for k in REFERENCES)
        out.append(f'<p class="note">References ({html.escape(data)}, same feature space and sample count):</p>'
                   f'<table class="refs"><thead><tr><th class="l">reference</th><th>FID</th><th>recall</th></tr></thead>'
                   f'<tbody>{rows}</tbody></table>')
    return "".join(out)


def page(rows: list[Row], records: list[dict], dest: Path) -> str:
    sections = []
    for track in dict.fromkeys(r.section for r in rows):
        members = [r for r in rows if r.section == track]
        labels = {d: r.label for r in members for d in r.run_dirs.values()}
        recs = [x for x in records if x.get("run_dir") in labels]
        plots = [front_plot(members, cost, name) for cost, name in FRONTS
                 if any(not math.isnan(r.mean(cost)) for r in members)]  # no DP row: no ε plot
        plots.append(rounds_plot(recs, labels))
        imgs = "".join(f'<img alt="plot" src="{p}">' for p in plots if p)
        warn = "".join(f"<p class='warn'>{html.escape(n.replace('**', '').replace('`', ''))}</p>"
                       for n in space_notes(members) if n)
        sections.append(f"<h2>{html.escape(track)}</h2>{warn}{table(members, recs)}{references_html(members)}"
                        f"<div class='plots'>{imgs}</div>")
    note = html.escape(LEGEND.replace("*not learned*", "not learned").replace("`", "")) + " Green rows are on a Pareto front, grey rows are not learned. Click a column to sort."
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fedfuse leaderboard</title><style>{STYLE}</style>"
            f"</head><body><h1>fedfuse leaderboard</h1><p class='note'>{note}</p>{''.join(sections)}"
            f"<script>{SCRIPT}</script></body></html>")


def index_page(stores: list[tuple[str, str, list[Row]]]) -> str:
    """A site's index: per store (its page's file name, its folder, its ranked rows), each
    section's best ranked configuration and how many rows it has, linked to the store's page."""
    rows = []
    for page_name, folder, members in stores:
        for section in dict.fromkeys(r.section for r in members):
            ranked = [r for r in members if r.section == section and r.rank]
            best = f"{html.escape(ranked[0].shown_label)} ({html.escape(mean_std(ranked[0], ranked[0].primary))})" if ranked else "–"
            count = sum(r.section == section for r in members)
            rows.append(f'<tr><td class="l"><a href="{html.escape(page_name)}">{html.escape(section)}</a></td>'
                        f'<td class="l">{html.escape(folder)}</td><td>{count}</td><td class="l">{best}</td></tr>')
    head = "<tr><th class='l'>track or study</th><th class='l'>results store</th><th>rows</th><th class='l'>best</th></tr>"
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>fedfuse results</title><style>{STYLE}</style>"
            f"</head><body><h1>fedfuse results</h1><p class='note'>One page per results store: ranked configurations, "
            f"their references, Pareto fronts and sample grids.</p><table><thead>{head}</thead><tbody>{''.join(rows)}"
            f"</tbody></table></body></html>")
