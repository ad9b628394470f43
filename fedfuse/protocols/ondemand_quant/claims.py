"""The on-demand quantization paper's claim, checked on the study's rows (``fedfuse report
seed-ondemand-quant``): choosing each device's bits, clock and power on demand spends less energy
than a fixed bit-width, at the same demands and without losing quality.

A fair baseline meets what on-demand must meet: every client's minimum bits, the aggregate error
bound and the deadline. In suite v4 those are "fixed-6" and "full-precision" (with and without
frequency scaling); "fixed at demands" meets each client's minimum but not the error bound, and
"fixed-4" neither (both shown for reference). On-demand is compared with the cheapest of the
fair ones. The moving-clients pair (distances drawn anew each round) is the case where on-demand's
bits can differ per client and per round.

"Less" and "worse" use the leaderboard's test (``overlaps``: means further apart than the two
standard deviations summed); within that, "not told apart".
"""

from fedfuse.api import mean_std, versus

ONDEMAND = "on-demand (error 6 bits)"
FAIR = ("fixed-6 + dvfs", "fixed-6", "full-precision + dvfs", "full-precision")
MOVING = ("on-demand (error 6 bits, any bits, moving clients)", "fixed-6 + dvfs (moving clients)")


def verdict(ondemand, baseline) -> tuple[str, list[str]]:
    energy, fid = versus(ondemand, baseline, "energy_j"), versus(ondemand, baseline, "fid")
    holds = energy == "below" and fid != "above"
    lines = [f"   energy {mean_std(ondemand, 'energy_j')} J, {energy} {baseline.label}'s {mean_std(baseline, 'energy_j')} J",
             f"   FID {mean_std(ondemand, 'fid')}, {fid} {baseline.label}'s {mean_std(baseline, 'fid')}",
             f"   mean bits {mean_std(ondemand, 'mean_bits')} against {mean_std(baseline, 'mean_bits')}"]
    return ("holds" if holds else "does not hold"), lines


def cheapest_fair(rows: dict) -> list[str]:
    fair = [rows[label] for label in FAIR if label in rows and rows[label].values.get("energy_j")]
    if ONDEMAND not in rows or not fair:
        return ["1. on-demand spends less energy than the cheapest fair fixed configuration: not measured"]
    cheapest = min(fair, key=lambda r: r.mean("energy_j"))
    held, lines = verdict(rows[ONDEMAND], cheapest)
    return [f"1. on-demand spends less energy than the cheapest fixed configuration meeting the same demands "
            f"({cheapest.label}), at no loss of quality: {held}", *lines]


def moving(rows: dict) -> list[str]:
    if not all(label in rows for label in MOVING):
        return ["2. with moving clients, on-demand beats fixed-6 + dvfs: not measured"]
    held, lines = verdict(rows[MOVING[0]], rows[MOVING[1]])
    return [f"2. with moving clients (distances drawn anew each round), on-demand beats fixed-6 + dvfs: {held}", *lines]


def check(rows: list) -> list[str]:
    by_label = {r.label: r for r in rows}
    return [*cheapest_fair(by_label), *moving(by_label)]
