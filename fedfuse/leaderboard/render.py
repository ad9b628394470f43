"""Leaderboard tables as Markdown or JSON, and trade-off plots (matplotlib, PNG)."""

from __future__ import annotations

import json
import math

from fedfuse.leaderboard.ranking import (
    COSTS,
    NOT_LEARNED,
    PRIMARY,
    REFERENCES,
    UNBOUNDED,
    Row,
    reference_rows,
    space_usable,
)

UNITS = {"bytes_up": ("MB up", 1e6), "bytes_down": ("MB down", 1e6), "client_flops": ("client GFLOP", 1e9),
         "latency_s": ("latency s", 1), "energy_j": ("energy J", 1), "mia_auc": ("MIA AUC (0.5 = nothing leaked)", 1),
         "dp_epsilon": ("DP ε (rows without DP not drawn)", 1)}


def mean_std(row: Row, metric: str, scale: float = 1.0) -> str:
    """``62.0 ± 2.8`` over the row's seeds: the mean to 3 significant digits, the spread to the
    same decimal place (just the mean where they agree); ``–`` where unmeasured."""
    m = row.mean(metric)
    if math.isnan(m):
        return "∞" if metric in UNBOUNDED else "–"
    mean, decimals = three_figures(m / scale)
    s = row.std(metric) / scale
    return f"{mean} ± {s:.{decimals}f}" if s and decimals is not None else (f"{mean} ± {s:.2g}" if s else mean)


def three_figures(x: float) -> tuple[str, int | None]:
    """``x`` to 3 significant digits in plain notation (up to a million: whole numbers whole),
    and its decimal places; in scientific notation (and None) where plain would be unreadable."""
    if x == 0 or not math.isfinite(x):
        return f"{x:g}", 0
    decimals = max(0, 2 - math.floor(math.log10(abs(x))))
    if decimals > 6 or abs(x) >= 1e6:
        return f"{x:.3g}", None
    return f"{x:.{decimals}f}", decimals


QUALITY = {PRIMARY: f"{PRIMARY} ↓", "fid_vs_noise": "fid/noise ↓", "kid": "kid", "recall": "recall ↑",
           "coverage": "coverage ↑", "pop_fid": "pop fid ↓"}


def quality_columns(primary: str) -> dict[str, str]:
    """{metric: heading} of a section's quality columns: its ranking metric first where the
    usual ones lack it (a track's ``primary``)."""
    return QUALITY if primary in QUALITY else {primary: f"{primary} (ranked)", **QUALITY}

#: DP's budget (docs/privacy.md) and the membership attack on the model the server holds
#: (docs/metrics.md): lower = less leaked
PRIVACY = {"dp_epsilon": "DP ε ↓", "mia_auc": "MIA AUC ↓", "mia_tpr_at_1fpr": "MIA TPR@1%FPR ↓"}
REFERENCE_NAMES = {"real": "real held-out (floor)", "blur": "real, blurred σ=1", "noise": "pure noise"}
LEGEND = (f"n = seeds pooled (mean ± std); * = fewer seeds than the suite asks for, or a failed cell. A row "
          "with a failed cell, or fewer seeds than its section's others, is *incomplete*: shown, not ranked (its "
          "mean is over the seeds that survived). "
          "fid, kid, recall, coverage: client quality, each client's samples against held-out images in its own "
          "label mix, the mean over clients; pop fid: all clients' samples pooled against the whole held-out set. "
          f"fid/noise = FID as a fraction of the pure-noise reference's; above {NOT_LEARNED} a configuration is "
          "*not learned*: listed after the ranked ones, on no Pareto front. `2=`: a shared rank (mean ± std "
          "overlaps that of the group's first configuration). Pareto: on the front of FID vs that cost. "
          "DP ε: the differential-privacy budget at δ = 1e-5 of the least protected image (DP-SGD; ∞: no DP; "
          "docs/privacy.md). MIA: the loss-threshold membership attack on the model the server holds, clients' private vs held-out "
          "images (AUC 0.5 and TPR@1%FPR ~0.01 = nothing told apart; docs/metrics.md). "
          "Pareto fronts are of FID against bytes up, client energy, client FLOPs, privacy (MIA AUC) and, where "
          "some row is DP, DP ε (a row without DP at ∞); a row without a membership attack has no privacy point. Bound rows (local-only, centralized) and rows whose "
          "protocol moves raw images off the device are ranked and marked, never on a front. "
          "Each section ranks only rows scored on one distribution (its heading), with its own references. "
          "system: the device and precision its cells trained on. ✓ after a configuration: `fedfuse verify` ran "
          "some of its cells again from the submitted bundle and found them the same.")


def markdown(rows: list[Row], extra: tuple[str, ...] = ()) -> str:
    out = []
    for track in dict.fromkeys(r.section for r in rows):
        members = [r for r in rows if r.section == track]
        quality = quality_columns(members[0].primary)
        heads = ["#", "configuration", "data", "profile", "n", *quality.values(), *PRIVACY.values(),
                 *(UNITS[c][0] for c in COSTS), *extra, "Pareto", "system"]
        out += [f"### {track}", "", *space_notes(members), "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
        out += [markdown_row(r, (*quality, *PRIVACY), extra) for r in members]
        out += ["", *reference_table(members), ""]
    out.append(LEGEND)
    return "\n".join(out)


def markdown_row(r: Row, figures: tuple[str, ...], extra: tuple[str, ...]) -> str:
    n = r.n_shown
    values = ([mean_std(r, m) for m in figures] + [mean_std(r, c, UNITS[c][1]) for c in COSTS]
              + [mean_std(r, e) for e in extra])
    return (f"| {r.place} | {r.shown_label} | {r.data} | {r.profile} | {n} | " + " | ".join(values)
            + f" | {pareto_cell(r)} | {'; '.join(r.systems)} |")


def pareto_cell(r: Row) -> str:
    """The fronts a row is on, or why it cannot be on any."""
    why = [w for w, yes in (("bound", r.bound), ("raw data off device", r.raw_data)) if yes]
    return ", ".join(r.pareto) or (f"– ({', '.join(why)})" if why else "")


def reference_table(members: list[Row]) -> list[str]:
    """The three reference rows per dataset: what the FID column is worth at this n."""
    lines = []
    for data, refs in reference_rows(members).items():
        lines += [f"References ({data}, same feature space and sample count):", "",
                  "| reference | FID | recall |", "|---|---|---|"]
        lines += [f"| {REFERENCE_NAMES[k]} | {refs[k][0]:.4g} | {refs[k][1]:.3g} |" for k in REFERENCES]
        lines.append("")
    return lines


FEW_REAL = 100  # held-out images per client below which FID is read beside KID


def space_notes(members: list[Row]) -> list[str]:
    few = [r.mean("eval_real_n") for r in members if not math.isnan(r.mean("eval_real_n"))]
    notes = ([f"Client quality is scored on as few as {min(few):.0f} held-out images for a client (its label mix "
              "of a small held-out split): read KID beside FID."] if few and min(few) < FEW_REAL else [])
    notes += [f"**The feature space cannot rank models on {data}**: pure noise scores {refs['noise'][0]:.3g}, "
             f"less than 20 x the real floor {refs['real'][0]:.3g}. Raise `samples` (the floor falls as n grows) "
             "or use `feature_space = \"inception\"`."
             for data, refs in reference_rows(members).items() if not space_usable(refs)]
    return [*notes, ""] if notes else []


def to_json(rows: list[Row]) -> str:
    from fedfuse.leaderboard.tables import strict

    return json.dumps(strict([{"track": r.track, "section": r.section, "distribution": r.distribution,
                        "bound": r.bound, "raw_data": r.raw_data, "rank": r.rank, "not_learned": r.not_learned,
                        "superseded": r.superseded, "older_version": r.old_version, "verified": r.verified, "label": r.label,
                        "data": r.data, "profile": r.profile,
                        "seeds": r.seeds, "failed": r.failed, "incomplete": r.incomplete, "place": r.place,
                        "pareto": r.pareto,
                        "mean": {k: r.mean(k) for k in r.values}, "std": {k: r.std(k) for k in r.values}}
                       for r in rows]), indent=1, allow_nan=False)


def tradeoff_plot(rows: list[Row], x: str, y: str, path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    names = titles(rows)
    for i, r in enumerate(rows):
        if math.isnan(r.mean(x)) or math.isnan(r.mean(y)):
            continue
        ax.errorbar(r.mean(x), r.mean(y), xerr=r.std(x), yerr=r.std(y), capsize=3, label=names[id(r)], **row_style(i))
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    legend_below(fig, [ax])
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def row_style(i: int) -> dict:
    """The i-th row's colour and marker: ten colours, then the next marker shape."""
    return {"color": f"C{i % 10}", "marker": "osD^v"[i // 10 % 5], "linestyle": "none"}


def legend_below(fig, axes) -> None:
    """One legend for all panels, under them: rows that measured alike sit on one another in a
    panel, and labels written beside the points would print over each other."""
    handles = {label: handle for ax in axes for handle, label in zip(*ax.get_legend_handles_labels())}
    fig.tight_layout()
    fig.legend(list(handles.values()), list(handles), loc="upper center", bbox_to_anchor=(0.5, 0.0),
               ncol=max(1, min(4, 2 * len(axes), len(handles))), fontsize=7, frameon=False)


def split_names(rows: list[Row]) -> dict[int, str]:
    """{id(row): how its data split is named beside its label}: the partitioner without its
    arguments where that tells a configuration's rows apart, else all of its data."""
    def short(r):
        return r.partition.split("(")[0]

    clash = {(r.label, short(r)) for r in rows for o in rows
             if o is not r and (o.label, short(o)) == (r.label, short(r)) and o.data != r.data}
    return {id(r): r.data if (r.label, short(r)) in clash else short(r) for r in rows}


def titles(rows: list[Row]) -> dict[int, str]:
    """{id(row): its name in figures and grids}: the label, with its data split where a study has several."""
    several, splits = len({r.data for r in rows}) > 1, split_names(rows)
    return {id(r): f"{r.label}, {splits[id(r)]}" if several else r.label for r in rows}
