"""CollaFuse's three claims, checked on the rows of a cut-ratio sweep (``fedfuse report
seed-split-diffusion``):

1. collaboration beats local-only at some cut ratio c (FID); also at equal compute, against a
   local-only row whose clients train as many steps as a split cell's client and server together
   (labelled "compute-matched");
2. client compute falls as c grows (training FLOPs, and FLOPs to generate one image);
3. disclosure rises as c grows (what the server can make of what it receives).
A row labelled "re-noising" (the paper's own marginal) is set beside the sweep's row at its cut.

"Beats" and "rises" use the leaderboard's own test for telling configurations apart
(``overlaps``: the means differ by more than the two standard deviations summed); a step
within that is "flat".
"""

from fedfuse.api import mean_std, overlaps

#: (metric, True where a larger value means more is disclosed)
DISCLOSURE = (("disclosure_fid_cut", False), ("disclosure_fid_approx", False), ("nn_mse", False),
              ("nn_ssim", True), ("mia_auc", True))
COMPUTE = ("client_flops", "client_gen_flops")
SWEEP = ("local-only", "split-diffusion")  # centralized and FedAvg are reference rows, not points of c
VARIANTS = ("compute-matched", "re-noising")  # rows set beside the sweep, not points of it
FID_MOVES = {"falls": "better than", "rises": "worse than", "flat": "not told apart from"}  # FID: lower is better


def variant(row, name: str) -> bool:
    return row.protocol in SWEEP and name in row.label


def sweep(rows: list) -> list:
    """The cut-ratio rows (local-only is c = 0), in order of c."""
    points = (r for r in rows if r.protocol in SWEEP and not any(variant(r, v) for v in VARIANTS))
    return sorted(points, key=lambda r: r.mean("cut_ratio"))


def step(a, b, metric: str, larger_is_more: bool = True) -> str:
    """How ``metric`` moves from row a to row b: 'rises', 'falls' or 'flat' (within the spread)."""
    if overlaps(a, b, metric):
        return "flat"
    return "rises" if (b.mean(metric) > a.mean(metric)) == larger_is_more else "falls"


def collaboration(rows: list) -> list[str]:
    if len(rows) < 2 or rows[0].mean("cut_ratio") != 0:
        return ["1. collaboration beats local-only at some c: not measured (local-only and a c > 0 needed)"]
    local = rows[0]
    verdicts = [FID_MOVES[step(local, r, "fid")] for r in rows[1:]]
    lines = [f"local-only FID {mean_std(local, 'fid')}"]
    lines += [f"c = {r.mean('cut_ratio'):g}: FID {mean_std(r, 'fid')}, {v} local-only" for r, v in zip(rows[1:], verdicts)]
    return [f"1. collaboration beats local-only at some c: {'holds' if 'better than' in verdicts else 'does not hold'}", *lines]


def trend(rows: list, metric: str, larger_is_more: bool) -> tuple[str, list[str]]:
    steps = [step(a, b, metric, larger_is_more) for a, b in zip(rows, rows[1:]) if metric in a.values and metric in b.values]
    values = ", ".join(mean_std(r, metric) for r in rows if metric in r.values)
    if not steps:
        return "not measured", []
    verdict = next((v for v in ("rises", "falls") if all(s == v for s in steps)), "mixed: " + " ".join(steps))
    return verdict, [f"   {metric} (in order of c): {values}"]


def claims(rows: list) -> list[str]:
    """Verdict lines, one data split at a time (a claim compares points of one sweep)."""
    lines = []
    for data in dict.fromkeys(r.data for r in rows):
        here = [r for r in rows if r.data == data]
        lines += [f"On {data}:" if len({r.data for r in rows}) > 1 else "", *claims_of_one_sweep(sweep(here), here)]
    return [line for line in lines if line]


def at_equal_compute(points: list, rows: list) -> list[str]:
    """Claim 1 against local-only clients that train as much as a split cell's client and server."""
    matched = next((r for r in rows if variant(r, "compute-matched")), None)
    if matched is None or len(points) < 2:
        return []
    verdicts = [FID_MOVES[step(matched, r, "fid")] for r in points[1:]]
    lines = [f"   at equal compute: {'holds' if 'better than' in verdicts else 'does not hold'} "
             f"(local-only, compute-matched: FID {mean_std(matched, 'fid')})"]
    return lines + [f"   c = {r.mean('cut_ratio'):g}: {v} it" for r, v in zip(points[1:], verdicts)]


def renoising(points: list, rows: list) -> list[str]:
    """The paper's re-noising beside the exact marginal at the same cut."""
    ref = next((r for r in rows if variant(r, "re-noising")), None)
    same = next((p for p in points if ref is not None and p.mean("cut_ratio") == ref.mean("cut_ratio")), None)
    if ref is None or same is None:
        return []
    told = FID_MOVES[step(same, ref, "fid")]
    return [f"re-noising (the paper's marginal) at c = {ref.mean('cut_ratio'):g}: FID {mean_std(ref, 'fid')}, "
            f"{told} the exact marginal's {mean_std(same, 'fid')}"]


def claims_of_one_sweep(rows: list, everything: list = ()) -> list[str]:
    lines = collaboration(rows) + at_equal_compute(rows, list(everything))
    for title, metrics, want in (("2. client compute falls with c", [(m, True) for m in COMPUTE], "falls"),
                                 ("3. disclosure rises with c", DISCLOSURE, "rises")):
        verdicts = [trend(rows, m, more) for m, more in metrics]
        lines.append(f"{title}: " + "; ".join(f"{m} {v}" for (m, _), (v, _) in zip(metrics, verdicts)))
        lines += [line for _, shown in verdicts for line in shown]
        held = sum(v == want for v, _ in verdicts)
        lines.append(f"   the claim holds on {held} of {len(verdicts)} measures")
    return lines + renoising(rows, list(everything))
