"""The FL-empowered AIGC paper's claims for federated LoRA, checked on the study's rows
(``fedfuse report seed-fedavg-lora``), on each data split in turn:

1. LoRA uploads a small fraction of full fine-tuning's bytes (well under 10 % at rank <= 8);
2. so its clients' simulated latency and energy are lower;
3. its quality is close to full fine-tuning's, and both improve on the pre-trained base (the
   base is scored by the harness exactly as each row is: ``base_fid`` beside ``fid``);
4. what the server holds leaks less membership (the attack's AUC) than a fully fine-tuned model.

Beside them, what the study adds: the exact aggregations (FFA-LoRA, SVD re-factoring) against
averaging A and B at the same rank, and personalised adapters against the global ones.
"Below", "above" and "not told apart" use the leaderboard's test (``versus``: means further
apart than the two standard deviations summed); beside a quality verdict, on how many of the
seeds both rows ran the one is below the other (``seeds_below``: the seeds share data and
evaluation images, so a paired count can show what the spread hides). A row without an ok cell
is left out; a row with fewer seeds than the suite asks for is named with its count.
"""

import dataclasses

from fedfuse.api import mean_std, paired_count, versus

FULL = "full-finetune"
AB, EXACT = "lora-r16 (attn)", ("lora-r16-ffa (attn)", "lora-r16-svd (attn)")
GLOBAL, PERSONAL = "lora-r4 (attn+conv)", "lora-r4 (attn+conv, personalised)"
SMALL_SHARE = 0.10  # "well under 10 %"


def lora_rows(rows: dict) -> list:
    return [r for label, r in rows.items() if label.startswith("lora-")]


def bytes_claim(rows: dict) -> list[str]:
    full = rows[FULL].mean("bytes_up")
    shares = {r.label: r.mean("bytes_up") / full for r in lora_rows(rows)}
    small = [label for label in shares if "-r4" in label]
    held = bool(small) and all(shares[label] < SMALL_SHARE for label in small)
    return [f"1. LoRA at rank 4 uploads under {SMALL_SHARE:.0%} of full fine-tuning's bytes: "
            f"{'holds' if held else 'does not hold'}",
            *(f"   {rows[label].named}: {share:.1%} ({mean_std(rows[label], 'bytes_up', 1e6)} MB)"
              for label, share in shares.items())]


def cost_claim(rows: dict) -> list[str]:
    lines, held = [], True
    for r in lora_rows(rows):
        energy, latency = versus(r, rows[FULL], "energy_j"), versus(r, rows[FULL], "latency_s")
        held = held and energy == latency == "below"
        lines.append(f"   {r.named}: energy {mean_std(r, 'energy_j')} J, {energy} full's; latency "
                     f"{mean_std(r, 'latency_s')} s, {latency} full's")
    return [f"2. LoRA's clients spend less time and energy than full fine-tuning's: "
            f"{'holds' if held else 'does not hold'}", f"   full fine-tuning: {mean_std(rows[FULL], 'energy_j')} J, "
            f"{mean_std(rows[FULL], 'latency_s')} s", *lines]


def base_of(row):
    """The row's base before any round, as a row of its own (its ``base_fid`` as ``fid``)."""
    return dataclasses.replace(row, label=f"{row.label}'s base", per_seed={"fid": row.per_seed.get("base_fid", {})})


def quality_claim(rows: dict) -> list[str]:
    """The best global LoRA row against full fine-tuning (the personalised row trains more
    steps and generates with each client's own adapters: it is set beside the global one)."""
    full = rows[FULL]
    best = min((r for r in lora_rows(rows) if r.label != PERSONAL), key=lambda r: r.mean("fid"), default=None)
    if best is None:
        return ["3. LoRA's quality is not told apart from full fine-tuning's: not measured (no global LoRA row)"]
    close = versus(best, full, "fid")
    if not full.values.get("base_fid"):
        return ["3. LoRA's quality is not told apart from full fine-tuning's, both better than the base: not measured "
                "(no base_fid)"]
    improved = {r.label: versus(r, base_of(r), "fid") == "below" for r in (*lora_rows(rows), full)}
    both = improved[best.label] and improved[FULL]  # the claim's two: LoRA's best row and full fine-tuning
    return [f"3. LoRA's quality is not told apart from full fine-tuning's, both better than the base: "
            f"{'holds' if close == 'not told apart from' and both else 'does not hold'}",
            f"   base FID {mean_std(base_of(full), 'fid')}; full fine-tuning ({full.named}) {mean_std(full, 'fid')}",
            f"   the best LoRA row, {best.named}: {mean_std(best, 'fid')}, {close} full fine-tuning "
            f"({best.mean('fid') / full.mean('fid'):.2f} x; {paired_count(best, full, 'fid')})",
            f"   better than the base: {sum(improved.values())} of {len(improved)} rows (the claim asks it of the best LoRA "
            f"row and full fine-tuning)"]


def privacy_claim(rows: dict) -> list[str]:
    verdicts = {r.label: versus(r, rows[FULL], "mia_auc") for r in lora_rows(rows)}
    held = all(v == "below" for v in verdicts.values())
    return [f"4. the server's LoRA model leaks less membership than the fully fine-tuned one: "
            f"{'holds' if held else 'does not hold'}", f"   full fine-tuning: AUC {mean_std(rows[FULL], 'mia_auc')}",
            *(f"   {rows[label].named}: AUC {mean_std(rows[label], 'mia_auc')}, {v} full's" for label, v in verdicts.items())]


def additions(rows: dict) -> list[str]:
    lines = []
    for label in (e for e in EXACT if e in rows and AB in rows):
        lines.append(f"   {rows[label].named}: FID {mean_std(rows[label], 'fid')}, {versus(rows[label], rows[AB], 'fid')} "
                     f"averaging A and B ({mean_std(rows[AB], 'fid')}; {paired_count(rows[label], rows[AB], 'fid')}); aggregation error "
                     f"{mean_std(rows[label], 'aggregation_error')} against {mean_std(rows[AB], 'aggregation_error')}")
    if PERSONAL in rows and GLOBAL in rows:
        lines.append(f"   personalised adapters: FID {mean_std(rows[PERSONAL], 'fid')}, "
                     f"{versus(rows[PERSONAL], rows[GLOBAL], 'fid')} the global ones' ({mean_std(rows[GLOBAL], 'fid')}; "
                     f"{paired_count(rows[PERSONAL], rows[GLOBAL], 'fid')})")
    return ["Beside the claims:", *lines] if lines else []


def check(rows: list) -> list[str]:
    out = []
    for data in dict.fromkeys(r.data for r in rows):
        split = {r.label: r for r in rows if r.data == data and r.seeds}  # a row with no ok cell has no figure
        if FULL not in split or not lora_rows(split):
            out.append(f"[{data}] not measured: a full fine-tuning row and a LoRA row needed")
            continue
        out += [f"[{data}]", *bytes_claim(split), *cost_claim(split), *quality_claim(split), *privacy_claim(split),
                *additions(split)]
    return out
