"""`fedfuse report`: a study's page from its results store, and the claims a study declares
(CollaFuse's three, read off leaderboard rows, on values). In-process: no subprocess."""

from pathlib import Path

from fedfuse.bench.cli.main import main
from fedfuse.leaderboard.ranking import group
from fedfuse.protocols.split_diffusion import claims as claims_module

ROOT = Path(__file__).resolve().parents[2]
SPLIT_V5 = ROOT / "runs" / "seed-split-diffusion-v5"  # committed: 24 cells, 3 seeds
SPLIT_V6 = ROOT / "runs" / "seed-split-diffusion-v6"  # committed: 30 cells, 3 seeds, scored by the harness


def record(c: float, seed: int, fid: float, **metrics) -> dict:
    return {"suite": "s", "suite_version": "1", "suite_digest": "d", "label": f"c{c}", "dataset": "digits",
            "partitioner": "groups", "profile": "p", "seed": seed, "status": "ok", "evaluation": {},
            "protocol": "split-diffusion", "metrics": {"cut_ratio": c, "fid": fid, **metrics}}


def sweep(points: dict[float, tuple]) -> list:
    """{c: ((fid of seed 0, of seed 1), client FLOPs, nn_ssim)} as the script's sorted rows."""
    records = [record(c, seed, fid, client_flops=flops, client_gen_flops=flops, nn_ssim=ssim)
               for c, (fids, flops, ssim) in points.items() for seed, fid in enumerate(fids)]
    return sorted(group(records, {}), key=lambda r: r.mean("cut_ratio"))


def test_a_cut_ratio_beats_local_only_only_beyond_the_spread():
    rows = sweep({0.0: ((70, 74), 9, 0.0), 0.4: ((60, 64), 6, 0.5), 0.8: ((71, 75), 3, 0.9)})
    lines = claims_module.claims(rows)
    assert lines[0].endswith("holds") and "c = 0.4: FID 62.0 ± 2.8, better" in lines[2]
    assert lines[3].endswith("not told apart from local-only")  # 73 vs 72, spreads 2.8 each
    text = "\n".join(lines)
    assert "client_flops falls" in lines[4] and "the claim holds on 2 of 2 measures" in text
    assert "nn_ssim rises" in text


def test_a_step_within_the_spread_is_flat_and_the_claim_is_not_held():
    rows = sweep({0.0: ((70, 74), 9, 0.0), 0.4: ((80, 84), 9, 0.5), 0.8: ((90, 94), 3, 0.5)})
    lines = claims_module.claims(rows)
    assert lines[0].endswith("does not hold")
    assert "client_flops mixed: flat falls" in lines[4] and "the claim holds on 0 of 2 measures" in "\n".join(lines)


def test_the_split_study_page_is_rebuilt_from_its_committed_store(tmp_path, capsys):
    dest = tmp_path / "page"
    assert main(["report", "seed-split-diffusion", "--out", str(SPLIT_V5), "--dest", str(dest)]) == 0
    text = (dest / "README.md").read_text()
    assert "Measured: 3 seeds, 24 of 24 cells ok" in text
    assert f"`fedfuse report seed-split-diffusion --out {SPLIT_V5} --dest {dest}`" in text  # its own command
    assert "1. collaboration beats local-only at some c: holds" in text  # the v5 verdicts the README states
    assert "c = 0.6: FID 21.3 ± 0.5, better than local-only" in text
    assert "the claim holds on 4 of 5 measures" in text and "disclosure_fid_approx" in text  # a study column
    assert (dest / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert len(list((dest / "samples").glob("*.png"))) == 8  # one grid per configuration
    assert not list(SPLIT_V5.glob("results.sqlite-*"))  # a reader leaves the store as it was


def test_the_v6_split_study_states_the_verdicts_its_readme_states(tmp_path, capsys):
    """Claim 1 at equal compute, the re-noising row and the conditional FedAvg, from
    runs/seed-split-diffusion-v6 (fedfuse/protocols/split_diffusion/README.md, *Measured*)."""
    dest = tmp_path / "page"
    assert main(["report", "seed-split-diffusion", "--out", str(SPLIT_V6), "--dest", str(dest)]) == 0
    text = (dest / "README.md").read_text()
    assert "Measured: 3 seeds, 30 of 30 cells ok" in text and "local-only FID 30.0 ± 1.0" in text
    assert "at equal compute: does not hold (local-only, compute-matched: FID 18.2 ± 0.1)" in text
    assert "c = 1: not told apart from it" in text and "c = 0.6: worse than it" in text
    assert "client_flops mixed: flat flat flat flat falls; client_gen_flops falls" in text
    assert "re-noising (the paper's marginal) at c = 0.6: FID 49.6 ± 0.6, worse than the exact marginal's 21.1 ± 0.4" in text
    assert "| not learned | fedavg (reference) |" in text and "| 153 ± 1 |" in text


def test_a_section_is_written_only_between_its_markers(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("# hand-written\n\nno markers here\n")
    assert main(["report", "seed-split-diffusion", "--out", str(SPLIT_V5), "--into", str(doc)]) == 2
    assert "<!-- fedfuse report seed-split-diffusion -->" in capsys.readouterr().err
    assert doc.read_text() == "# hand-written\n\nno markers here\n"
    doc.write_text("before\n<!-- fedfuse report seed-split-diffusion -->\nSTALE\n"
                   "<!-- /fedfuse report seed-split-diffusion -->\nafter\n")
    assert main(["report", "seed-split-diffusion", "--out", str(SPLIT_V5), "--into", str(doc)]) == 0
    text = doc.read_text()
    assert text.startswith("before\n") and text.endswith("after\n") and "STALE" not in text
    assert "3. disclosure rises with c" in text and "tradeoff.png" not in text  # tables and claims only
    # the command it names rewrites this section, not a page of its own
    assert f"generated by `fedfuse report seed-split-diffusion --out {SPLIT_V5} --into {doc}`" in text


def test_an_unknown_study_or_a_store_without_it_is_refused(tmp_path, capsys):
    assert main(["report", "seed-split-difusion", "--out", str(SPLIT_V5)]) == 2
    assert "unknown study 'seed-split-difusion'; available:" in capsys.readouterr().err
    assert main(["report", "track-edge", "--out", str(SPLIT_V5), "--dest", str(tmp_path / "x")]) == 2
    assert "holds no cell of suite 'track-edge'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_equal_compute_and_re_noising_rows_are_set_beside_the_sweep():
    records = [record(c, seed, fid, client_flops=9, client_gen_flops=9, nn_ssim=0.1 * c)
               for c, fids in {0.0: (70, 74), 0.6: (60, 62)}.items() for seed, fid in enumerate(fids)]
    records += [{**record(0.0, seed, fid), "label": "c0.0 (local-only, compute-matched)", "protocol": "local-only"}
                for seed, fid in enumerate((58, 62))]
    records += [{**record(0.6, seed, fid), "label": "c0.6 (re-noising)"} for seed, fid in enumerate((80, 82))]
    records[0]["protocol"] = records[1]["protocol"] = "local-only"
    text = "\n".join(claims_module.claims(group(records, {})))
    assert "1. collaboration beats local-only at some c: holds" in text  # 61 vs 72
    assert "at equal compute: does not hold (local-only, compute-matched: FID 60.0 ± 2.8)" in text
    assert "c = 0.6: not told apart from it" in text
    assert "re-noising (the paper's marginal) at c = 0.6: FID 81.0 ± 1.4, worse than the exact marginal's 61.0 ± 1.4" in text


def test_the_privacy_utility_page_is_rebuilt_from_its_committed_store(tmp_path, capsys):
    """The verdicts the README states, from runs/privacy-utility (36 cells, 3 seeds): ε beside
    the attack, ∞ for the rows without DP, the figure with ε on its axis."""
    dest = tmp_path / "page"
    assert main(["report", "privacy-utility", "--out", str(ROOT / "runs" / "privacy-utility"), "--dest", str(dest)]) == 0
    text = (dest / "README.md").read_text()
    assert "Measured: 3 seeds, 36 of 36 cells ok" in text
    assert "fedavg: at ε 0.497 the attack's AUC falls to chance; quality: FID 96.7 ± 7.8 without DP, 213 ± 14 (worse)" in text
    assert "split-diffusion: at ε 0.499 the attack's AUC is at chance, but not told apart from no DP's" in text
    assert "| 2 | fedavg eps=inf |" in text and "| ∞ | 0.520 ± 0.003 |" in text  # rank, and ε beside the AUC
    assert (dest / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"


def test_privacy_claims_tell_a_fall_to_chance_from_a_spread():
    from fedfuse.leaderboard.dp_claims import privacy_utility

    def rec(label, seed, eps, auc, fid):
        return {"suite": "s", "suite_version": "1", "suite_digest": "d", "label": label, "dataset": "digits",
                "partitioner": "iid", "profile": "p", "seed": seed, "status": "ok", "evaluation": {}, "protocol": "p",
                "metrics": {"fid": fid, "mia_auc": auc, **({"dp_epsilon": eps} if eps else {})}}

    rows = group([rec("plain", 0, None, 0.60, 50), rec("plain", 1, None, 0.62, 52),
                  rec("dp", 0, 1.0, 0.55, 51), rec("dp", 1, 1.0, 0.57, 53)], {})
    (line, *_) = privacy_utility(rows)
    assert line == "p: at ε 1 the attack's AUC falls, not to chance; quality: not told apart"


def lora_records(partitioner: str, rows: dict) -> list[dict]:
    """{label: (fid per seed, base_fid, bytes_up, energy_j, mia_auc)} as two seeds' records."""
    return [{"suite": "s", "suite_version": "1", "suite_digest": "d", "label": label, "dataset": "digits",
             "partitioner": partitioner, "profile": "p", "seed": seed, "status": "ok", "evaluation": {},
             "protocol": "fedavg-full-finetune" if label == "full-finetune" else "fedavg-lora",
             "metrics": {"fid": fid, "base_fid": base + seed, "bytes_up": sent, "energy_j": joules + seed,
                         "latency_s": joules / 10 + seed, "mia_auc": auc + 0.01 * seed}}
            for label, (fids, base, sent, joules, auc) in rows.items() for seed, fid in enumerate(fids)]


def test_the_lora_claims_are_read_per_data_split_beside_the_base_scored_like_each_row():
    from fedfuse.protocols.fedavg_lora.claims import check

    iid = lora_records("iid", {"full-finetune": ((20, 22), 150, 80e6, 400, 0.60),
                               "lora-r4 (attn)": ((21, 23), 150, 1.5e6, 250, 0.52),
                               "lora-r16 (attn)": ((40, 42), 150, 5e6, 260, 0.53),
                               "lora-r16-ffa (attn)": ((60, 62), 150, 3e6, 255, 0.53),
                               "lora-r4 (attn+conv, personalised)": ((10, 12), 150, 2e6, 270, 0.52)})
    iid.append({**iid[-1], "label": "lora-r16-svd (attn)", "status": "failed", "metrics": {}})  # no ok cell: no row
    skewed = lora_records("dirichlet", {"full-finetune": ((20, 22), 150, 80e6, 400, 0.60),
                                        "lora-r4 (attn)": ((149, 151), 150, 9e6, 399, 0.60)})
    lines = check(group(iid + skewed, {}))
    text = "\n".join(lines)
    first, second = lines.index("[digits/iid]"), lines.index("[digits/dirichlet]")
    iid_text, skewed_text = "\n".join(lines[first:second]), "\n".join(lines[second:])
    assert "1. LoRA at rank 4 uploads under 10% of full fine-tuning's bytes: holds" in iid_text
    assert "lora-r4 (attn): 1.9%" in iid_text and "2. LoRA's clients spend less time and energy" in iid_text
    assert "3. LoRA's quality is not told apart from full fine-tuning's, both better than the base: holds" in iid_text
    # the personalised row is better still, but it is set beside the global adapters, not full fine-tuning
    assert "the best LoRA row, lora-r4 (attn): 22.0 ± 1.4, not told apart from full fine-tuning (1.05 x; below on 0 of 2 seeds)" in iid_text
    assert "lora-r16-ffa (attn): FID 61.0 ± 1.4, above averaging A and B (41.0 ± 1.4; below on 0 of 2 seeds)" in iid_text
    assert "lora-r16-svd" not in text
    assert "4. the server's LoRA model leaks less membership than the fully fine-tuned one: holds" in iid_text
    # on the skewed split LoRA (r = 4) sends 11 %, costs the same, and is no better than its base
    for claim in ("1. ", "2. ", "3. ", "4. "):
        assert next(line for line in skewed_text.splitlines() if line.startswith(claim)).endswith("does not hold")
    assert "better than the base: 1 of 2 rows" in skewed_text and text.count("[digits/") == 2
    for r in iid:
        r["metrics"].pop("base_fid", None)
    assert any(line.endswith("not measured (no base_fid)") for line in check(group(iid, {})))


def quant_records(rows: dict) -> list[dict]:
    """{label: (energy per seed, fid, slowest client s per seed)}; a None energy is a failed cell."""
    return [{"suite": "s", "suite_version": "1", "suite_digest": "d", "label": label, "dataset": "digits",
             "partitioner": "dirichlet", "profile": "p", "seed": seed, "status": "ok" if joules else "failed",
             "evaluation": {}, "protocol": "ondemand-quant",
             "metrics": {"energy_j": joules, "fid": fid, "mean_bits": 6.0, "slowest_client_s": slowest[seed]}
             if joules else {}}
            for label, (energies, fid, slowest) in rows.items() for seed, joules in enumerate(energies)]


def test_the_quantization_claim_is_against_the_cheapest_row_that_met_the_demands_on_every_seed():
    """Full precision without frequency scaling missed the deadline on seed 1: left out, though
    cheapest. On-demand spends less than fixed-6 + dvfs on every seed, within a spread the
    seeds' distances set: "not shown", with the paired count beside it. The infeasible seed's
    failed cell leaves full-precision + dvfs named with its count, and a row with no ok cell
    is no comparison at all."""
    from fedfuse.protocols.ondemand_quant.claims import check

    ok = (19.0, 19.5, 18.0)
    records = quant_records({"on-demand (error 6 bits)": ((1000, 1500, 2000), 30, ok),
                             "fixed-6 + dvfs": ((1050, 1560, 2080), 30, ok),
                             "full-precision": ((900, 1200, 1400), 29, (12.0, 31.0, 12.0)),
                             "full-precision + dvfs": ((1300, None, 2300), 29, ok),
                             "on-demand (error 6 bits, any bits, moving clients)": ((None, None, None), 0, ok),
                             "fixed-6 + dvfs (moving clients)": ((1000, 1000, 1000), 30, ok)})
    lines = check(group(records, {}, {"s": 3}))
    assert lines[0] == ("1. on-demand (error 6 bits) spends less energy than the cheapest fixed configuration "
                        "meeting the same demands (fixed-6 + dvfs), at no loss of quality: not shown (within the seeds' spread)")
    assert "not told apart from fixed-6 + dvfs's 1563 ± 515 J; less on 3 of 3 seeds" in lines[1]
    assert any("left out: full-precision missed the 20 s deadline on seed(s) 1" in line for line in lines)
    assert lines[-1] == "2. with moving clients, on-demand beats fixed-6 + dvfs: not measured"
    cheaper = [{**r, "metrics": {**r["metrics"], "energy_j": r["metrics"]["energy_j"] / 3}}
               if r["label"] == "on-demand (error 6 bits)" else r for r in records]
    assert check(group(cheaper, {}, {"s": 3}))[0].endswith("at no loss of quality: holds")
    worse = [{**r, "metrics": {**r["metrics"], "energy_j": r["metrics"]["energy_j"] * 3}}
             if r["label"] == "on-demand (error 6 bits)" else r for r in records]
    assert check(group(worse, {}, {"s": 3}))[0].endswith("at no loss of quality: does not hold")
    no_fid = [{**r, "metrics": {k: v for k, v in r["metrics"].items() if k != "fid"}}
              if r["label"] == "on-demand (error 6 bits)" else r for r in cheaper]
    assert check(group(no_fid, {}, {"s": 3}))[0].endswith("at no loss of quality: not measured")
    cut_short = check(group([r for r in records if r["seed"] < 2 and r["label"] != "full-precision + dvfs"], {}, {"s": 3}))
    assert "(fixed-6 + dvfs [2 of 3 seeds])" in cut_short[0]  # every row on the same two seeds: still compared
    only_incomplete = check(group([r for r in records if r["label"] in ("on-demand (error 6 bits)", "full-precision + dvfs")],
                                  {}, {"s": 3}))
    assert only_incomplete[:2] == ["1. on-demand spends less energy than the cheapest fair fixed configuration: not measured",
                                   "   left out: full-precision + dvfs [2 of 3 seeds], a failed cell (infeasible within "
                                   "the deadline, as a rule)"]


LORA_V5 = ROOT / "runs" / "seed-fedavg-lora-v5"  # committed: all 42 cells
QUANT_V4 = ROOT / "runs" / "seed-ondemand-quant-v4"  # committed: 32 of 33 cells (one seed infeasible)


def test_the_v5_lora_study_states_the_verdicts_its_readme_states(tmp_path, capsys):
    """fedfuse/protocols/fedavg_lora/README.md, *Measured*, from runs/seed-fedavg-lora-v5."""
    dest = tmp_path / "page"
    assert main(["report", "seed-fedavg-lora", "--out", str(LORA_V5), "--dest", str(dest)]) == 0
    text = (dest / "README.md").read_text()
    claims = text[text.index("Claims, within"):]
    marks = sorted((claims.index(f"[digits(public_classes=[0, 1, 2, 3, 4])/{split}"), split) for split in ("iid", "dirichlet"))
    ends = dict(zip((split for _, split in marks), [marks[1][0], len(claims)]))
    iid = claims[dict((v, k) for k, v in marks)["iid"]:ends["iid"]]
    skewed_text = claims[dict((v, k) for k, v in marks)["dirichlet"]:ends["dirichlet"]]
    assert "3. LoRA's quality is not told apart from full fine-tuning's, both better than the base: does not hold" in iid
    assert "full fine-tuning (full-finetune) 11.7 ± 0.1" in iid and "lora-r4 (attn+conv): 14.3 ± 0.5, above" in iid
    assert "lora-r16-ffa (attn): FID 25.8 ± 2.2, below averaging A and B (109 ± 11; below on 3 of 3 seeds)" in iid
    assert "lora-r16-svd (attn): FID 167 ± 24, above averaging A and B" in iid
    for claim in ("1. LoRA at rank 4 uploads under 10% of full fine-tuning's bytes: holds",
                  "2. LoRA's clients spend less time and energy than full fine-tuning's: holds",
                  "4. the server's LoRA model leaks less membership than the fully fine-tuned one: holds"):
        assert text.count(claim) == 2  # on both splits
    assert ("the best LoRA row, lora-r4 (attn+conv): 30.7 ± 12.9, not told apart from full fine-tuning "
            "(1.62 x; below on 0 of 3 seeds)") in skewed_text  # Dirichlet: within a wide spread, worse on every seed
    assert "both better than the base: holds" in skewed_text
    assert "| 76544 | 0.0747 |" in text and "| 18688 | 0.0182 |" in text  # trained values, share of the model
    assert "personalised adapters: FID 26.4 ± 3.0, above the global ones' (14.3 ± 0.5; below on 0 of 3 seeds)" in iid
    assert ("personalised adapters: FID 29.7 ± 4.5, not told apart from the global ones' (30.7 ± 12.9; below on 1 of 3 "
            "seeds)") in skewed_text
    assert "| 3 | 29.7 ± 4.5 |" in text and "[2 of" not in text  # every row has its 3 seeds


def test_the_v4_quantization_study_states_the_verdicts_its_readme_states(tmp_path, capsys):
    """fedfuse/protocols/ondemand_quant/README.md, *Measured*, from runs/seed-ondemand-quant-v4."""
    dest = tmp_path / "page"
    assert main(["report", "seed-ondemand-quant", "--out", str(QUANT_V4), "--dest", str(dest)]) == 0
    text = (dest / "README.md").read_text()
    claims = text[text.index("Claims, within"):]
    assert ("1. on-demand (error 6 bits) spends less energy than the cheapest fixed configuration meeting the "
            "same demands (fixed-6 + dvfs), at no loss of quality: not shown (within the seeds' spread)") in claims
    assert "energy 2121 ± 393 J, not told apart from fixed-6 + dvfs's 2121 ± 393 J; less on 0 of 3 seeds, level on 3" in claims
    assert "left out: full-precision + dvfs [2 of 3 seeds], a failed cell" in claims  # seed 1 infeasible
    assert "left out: full-precision missed the 20 s deadline on seed(s) 1" in claims
    assert "2. with moving clients (distances drawn anew each round), on-demand beats fixed-6 + dvfs: not shown" in claims
    assert "energy 2147 ± 70 J, not told apart from fixed-6 + dvfs (moving clients)'s 2147 ± 70 J; less on 0 of 3 seeds, level on 3" in claims
    assert "32 of 33 cells ok" in text and "| incomplete | full-precision + dvfs |" in text
    assert text.count("| 1= |") == 10 and "| – | – |" not in text  # every complete row ranked, MIA filled
    readme = " ".join((ROOT / "fedfuse" / "protocols" / "ondemand_quant" / "README.md").read_text().split())
    for stated in ("The claim against fixed bits is not shown", "level with fixed-6 + dvfs on all 3 seeds",
                   "2,121 ± 393 J each", "(63.4 ± 24.5)", "again level on all 3 seeds (2,147 ± 70 J)", "32 of 33 cells ok"):
        assert stated in readme, stated
