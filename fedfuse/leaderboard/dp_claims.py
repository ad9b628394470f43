"""The privacy–utility study's questions, checked on its rows (``fedfuse report privacy-utility``):
for each protocol, as ε falls (∞, then smaller budgets),

1. does the membership attack's AUC fall toward 0.5 (is the last row's AUC within its spread
   of 0.5, and below the row without DP)?
2. what does quality cost (FID at the smallest ε against the row without DP)?

"Below" and "worse" use the leaderboard's test for telling rows apart (``overlaps``).
"""

from __future__ import annotations

import math

from fedfuse.leaderboard.ranking import mean_or_unbounded, overlaps
from fedfuse.leaderboard.render import mean_std


def budget(row) -> float:
    """A row's ε (∞ without DP)."""
    return mean_or_unbounded(row, "dp_epsilon")


def by_protocol(rows: list) -> dict[str, list]:
    """Each protocol's rows, from the largest ε (∞) to the smallest."""
    out: dict[str, list] = {}
    for row in sorted(rows, key=budget, reverse=True):
        out.setdefault(row.protocol, []).append(row)
    return out


def near_half(row) -> bool:
    """The attack tells members apart no better than chance, within the seeds' spread."""
    return abs(row.mean("mia_auc") - 0.5) <= max(row.std("mia_auc"), 0.01)


def protocol_lines(name: str, rows: list) -> list[str]:
    plain, last = rows[0], rows[-1]
    if budget(plain) != math.inf or len(rows) < 2:
        return [f"{name}: not measured (a row without DP and one with it needed)"]
    lines = [f"   ε {budget(r):.3g}: MIA AUC {mean_std(r, 'mia_auc')}, FID {mean_std(r, 'fid')}" for r in rows]
    lower = not overlaps(plain, last, "mia_auc") and last.mean("mia_auc") < plain.mean("mia_auc")
    if near_half(last):
        auc = "falls to chance" if lower else "is at chance, but not told apart from no DP's"
    else:
        auc = "falls, not to chance" if lower else "is not told apart from no DP's"
    moved = "worse" if last.mean("fid") > plain.mean("fid") else "better"
    quality = ("not told apart" if overlaps(plain, last, "fid")
               else f"FID {mean_std(plain, 'fid')} without DP, {mean_std(last, 'fid')} ({moved})")
    return [f"{name}: at ε {budget(last):.3g} the attack's AUC {auc}; quality: {quality}", *lines]


def privacy_utility(rows: list) -> list[str]:
    """The verdicts, a protocol at a time."""
    return [line for name, group in by_protocol(rows).items() for line in protocol_lines(name, group)]
