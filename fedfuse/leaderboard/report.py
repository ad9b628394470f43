"""A study's page from its results store (``fedfuse report NAME --out STORE``).

The page is the leaderboard's rows (as the study was recorded: its own protocol versions, each
row's newest set-up) with the study's own columns, a figure of its trade-offs, one sample grid
per configuration and its claims checked. It is written whole into a folder of its own
(``docs/studies/NAME/`` by default), or between two markers of a hand-written document, so
that nothing hand-written is ever overwritten silently.
"""

from __future__ import annotations

import re
import shutil
from datetime import datetime, timezone
from pathlib import Path

from fedfuse.leaderboard.html import grid_of
from fedfuse.leaderboard.ranking import Row
from fedfuse.leaderboard.render import LEGEND, legend_below, markdown, row_style, titles
from fedfuse.leaderboard.rows import ranked_rows
from fedfuse.plugins.config import ConfigError


def study_rows(records: list[dict], registry) -> list[Row]:
    """The study as it was measured, each row's newest set-up only."""
    return [r for r in ranked_rows(records, registry, as_recorded=True) if not r.outdated]


def measured_line(records: list[dict]) -> str:
    """How much was measured and when: seeds, cells ok, the cells' wall time, the last day."""
    ok = [r for r in records if r["status"] == "ok"]
    if not ok:
        return f"Measured: no cell ok yet ({len(records)} recorded)."
    wall = sum(r["ended"] - r["started"] for r in ok)
    day = datetime.fromtimestamp(max(r["ended"] for r in ok), timezone.utc).date()
    seeds = len({r["seed"] for r in records})
    return (f"Measured: {seeds} seed{'s' * (seeds > 1)}, {len(ok)} of {len(records)} cells ok, "
            f"{wall:,.0f} s of cell wall time ({wall / 3600:.2f} h), {day}.")


def figure(rows: list[Row], panels: tuple[tuple[str, str], ...], path: Path) -> None:
    """One panel per (x, y): every row's mean with its std as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3), squeeze=False)
    names, marks = titles(rows), {id(r): row_style(i) for i, r in enumerate(rows)}
    for ax, (x, y) in zip(axes[0], panels):
        at = x_positions(rows, x)
        for r in (r for r in rows if id(r) in at and r.of(y)):
            ax.errorbar(at[id(r)], r.mean(y), xerr=r.std(x), yerr=r.std(y), capsize=3, label=names[id(r)], **marks[id(r)])
        if x.startswith("bytes") or x == "dp_epsilon":  # quantities over orders of magnitude: a log axis
            ax.set_xscale("log")
        if x == "dp_epsilon" and any(r.mean(x) != at[id(r)] for r in rows if id(r) in at):
            right = max(at.values())  # where the rows without DP sit
            ticks = sorted({float(f"{v:.2g}") for v in at.values() if v != right})  # 0.497 and 0.499: one tick
            ax.set_xticks([*ticks, right], [*(f"{t:g}" for t in ticks), "∞ (no DP)"], fontsize=7)
            ax.minorticks_off()
        ax.set(xlabel=x, ylabel=y)
        ax.grid(alpha=0.3)
    legend_below(fig, axes[0])
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def x_positions(rows: list[Row], x: str) -> dict[int, float]:
    """{id(row): where it sits on the x axis}: its mean; for ε, a row without DP (no bound)
    at the far right, 4 x the largest ε measured."""
    at = {id(r): r.mean(x) for r in rows if r.of(x)}
    if x == "dp_epsilon":
        right = 4 * max(at.values(), default=1.0)
        at.update({id(r): right for r in rows if not r.of(x)})
    return at


def file_name(title: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "_" for c in title) + ".png"


def sample_grids(rows: list[Row], folder: Path) -> str:
    """One sample grid per configuration copied into ``folder``, as a Markdown table."""
    named = titles(rows)
    grids = {named[id(r)]: grid for r in rows if (grid := grid_of(r)) is not None}
    names = [file_name(t) for t in grids]
    if len(set(names)) < len(names):
        raise ConfigError(f"two configurations would share a sample grid file: {sorted(names)}")
    if not grids:
        return ""
    folder.mkdir(parents=True, exist_ok=True)
    for (title, grid), name in zip(grids.items(), names):
        shutil.copyfile(grid, folder / name)
    heads = " | ".join(grids)
    images = " | ".join(f'<img src="{folder.name}/{n}" width="128">' for n in names)
    return (f"Samples (lowest seed; client 0 where each client samples its own label mix):\n\n"
            f"| {heads} |\n|{'---|' * len(grids)}\n| {images} |")


def page(study, records: list[dict], rows: list[Row], command: str, folder: Path | None = None) -> str:
    """The study's page; its figure and grids are written into ``folder`` beside it (none
    without a folder: a section of a hand-written document holds the tables and claims)."""
    legend = f"<details><summary>How to read it</summary>\n\n{LEGEND}\n\n</details>"
    parts = [f"<!-- generated by `{command}`: edits here are overwritten -->",
             measured_line(records), markdown(rows, study.columns).replace(LEGEND, legend)]
    if folder is not None and study.panels:
        figure(rows, study.panels, folder / "tradeoff.png")
        parts.append("![trade-off](tradeoff.png)")
    if folder is not None and (grids := sample_grids(rows, folder / "samples")):
        parts.append(grids)
    if claims := study.load_claims():
        parts.append("Claims, within the seeds' spread:\n\n```text\n" + "\n".join(claims(rows)) + "\n```")
    return "\n\n".join(parts) + "\n"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- fedfuse report {name} -->", f"<!-- /fedfuse report {name} -->"


def write_between_markers(document: Path, name: str, text: str) -> None:
    """Replace what stands between the study's two markers in a hand-written document; a
    document without them is refused (nothing is written where the document did not say)."""
    begin, end = markers(name)
    old = document.read_text()
    pattern = re.compile(re.escape(begin) + ".*?" + re.escape(end), re.S)
    if not pattern.search(old):
        raise ConfigError(f"{document} has no section for this study: add the lines {begin} and {end} where it goes")
    document.write_text(pattern.sub(lambda _: f"{begin}\n{text}{end}", old, count=1))
