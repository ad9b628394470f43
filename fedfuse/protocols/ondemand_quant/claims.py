"""The on-demand quantization paper's claim, checked on the study's rows (``fedfuse report
seed-ondemand-quant``): choosing each device's bits, clock and power on demand spends less energy
than a fixed bit-width, at the same demands and without losing quality.

A fair baseline meets what on-demand must meet: every client's minimum bits, the aggregate error
bound and the deadline. In suite v4 those are "fixed-6" and "full-precision" (with and without
frequency scaling), on every seed where the slowest client's compute and upload
(``slowest_client_s``, measured by the harness) stays within the 20 s deadline: a row without
frequency scaling runs at full clock and power, and a seed that puts a client too far for that
leaves it late. "Fixed at demands" meets each client's minimum but not the error bound, and
"fixed-4" neither (both shown for reference). On-demand is compared with the cheapest fair one.
The moving-clients pair (distances drawn anew each round) is the case where on-demand's bits can
differ per client and per round.

"Less" and "worse" use the leaderboard's test (``versus``: means further apart than the two
standard deviations summed); within that, "not told apart", and the claim is then *not shown*
rather than refuted. Beside it, on how many of their shared seeds on-demand spent less
(``seeds_below``): the seeds set the devices' distances, which move both rows' energy alike.
A row without an ok cell is left out; one with fewer seeds than the suite asks for is named
with its count (an infeasible seed fails its cell), and a fair baseline with a failed cell, or
without one of on-demand's seeds, is no fair baseline (its mean would be over the seeds it
could meet, or others).
"""

from fedfuse.api import mean_std, paired_count, versus

ONDEMAND = "on-demand (error 6 bits)"
FAIR = ("fixed-6 + dvfs", "fixed-6", "full-precision + dvfs", "full-precision")
MOVING = ("on-demand (error 6 bits, any bits, moving clients)", "fixed-6 + dvfs (moving clients)")
DEADLINE_S = 20.0  # the suite's deadline_s
SLACK = 1.01  # the planner's FLOP estimate against the harness's measured FLOPs


def late_seeds(row) -> list[int]:
    """The seeds on which some client's compute and upload took longer than the deadline."""
    return sorted(s for s, t in row.per_seed.get("slowest_client_s", {}).items() if t > DEADLINE_S * SLACK)


def verdict(ondemand, baseline) -> tuple[str, list[str]]:
    energy, fid = versus(ondemand, baseline, "energy_j"), versus(ondemand, baseline, "fid")
    held = ("not measured" if "not measured against" in (energy, fid) else
            "holds" if energy == "below" and fid != "above" else
            "not shown (within the seeds' spread)" if energy == "not told apart from" and fid != "above" else
            "does not hold")
    lines = [f"   energy {mean_std(ondemand, 'energy_j')} J, {energy} {baseline.named}'s "
             f"{mean_std(baseline, 'energy_j')} J; {paired_count(ondemand, baseline, 'energy_j', 'less')}",
             f"   FID {mean_std(ondemand, 'fid')}, {fid} {baseline.named}'s {mean_std(baseline, 'fid')}",
             f"   mean bits {mean_std(ondemand, 'mean_bits')} against {mean_std(baseline, 'mean_bits')}"]
    return held, lines


def fair_rows(rows: dict, seeds: set) -> tuple[list, list[str]]:
    """The fair baselines that ran every one of on-demand's ``seeds`` and met the deadline on
    each, and a line for each that did not (a failed cell is a seed it could not run:
    infeasible within the deadline, as a rule)."""
    fair, notes = [], []
    for row in (rows[label] for label in FAIR if label in rows):
        late = late_seeds(row)
        if row.failed:
            notes.append(f"   left out: {row.named}, a failed cell (infeasible within the deadline, as a rule)")
        elif not seeds <= set(row.seeds):
            notes.append(f"   left out: {row.named}, not run on every seed on-demand ran")
        elif late:
            notes.append(f"   left out: {row.named} missed the {DEADLINE_S:g} s deadline on seed(s) "
                         f"{', '.join(map(str, late))} (slowest client {mean_std(row, 'slowest_client_s')} s)")
        else:
            fair.append(row)
    return fair, notes


def cheapest_fair(rows: dict) -> list[str]:
    if ONDEMAND not in rows:
        return ["1. on-demand spends less energy than the cheapest fair fixed configuration: not measured"]
    ondemand = rows[ONDEMAND]
    fair, notes = fair_rows(rows, set(ondemand.seeds))
    if not fair:
        return ["1. on-demand spends less energy than the cheapest fair fixed configuration: not measured", *notes]
    cheapest = min(fair, key=lambda r: r.mean("energy_j"))
    held, lines = verdict(ondemand, cheapest)
    return [f"1. {ondemand.named} spends less energy than the cheapest fixed configuration meeting the same "
            f"demands ({cheapest.named}), at no loss of quality: {held}", *lines, *notes]


def moving(rows: dict) -> list[str]:
    if not all(label in rows for label in MOVING):
        return ["2. with moving clients, on-demand beats fixed-6 + dvfs: not measured"]
    held, lines = verdict(rows[MOVING[0]], rows[MOVING[1]])
    return [f"2. with moving clients (distances drawn anew each round), on-demand beats fixed-6 + dvfs: {held}", *lines]


def check(rows: list) -> list[str]:
    by_label = {r.label: r for r in rows if r.seeds}  # a row with no ok cell has no figure
    return [*cheapest_fair(by_label), *moving(by_label)]
