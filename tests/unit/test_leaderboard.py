"""Ranking follows each metric's declared direction; statistics and Pareto fronts are exact."""

import math

import pytest

from fedfuse.leaderboard.ranking import group, mark_fronts, pareto_front, rank
from fedfuse.plugins import MetricSpec
from fedfuse.results.record import setup_of


def record(label, seed, fid, bytes_up, status="ok", suite="s", digest="d"):
    return {"suite": suite, "suite_version": "1", "suite_digest": digest, "label": label, "dataset": "digits",
            "partitioner": "iid", "profile": "p", "seed": seed, "status": status, "evaluation": {},
            "metrics": {"fid": fid, "bytes_up": bytes_up, "energy_j": 1.0, "client_flops": 1.0}}


SPECS = {"fid": MetricSpec("fid", "", False), "bytes_up": MetricSpec("bytes_up", "B", False),
         "energy_j": MetricSpec("energy_j", "J", False), "client_flops": MetricSpec("client_flops", "FLOP", False)}


def test_a_seed_run_twice_in_one_row_counts_once_by_its_newest_cell():
    """Records come oldest first (the store orders them by start): a row edited without a new
    suite version and resumed into the same store holds the seed twice; n stays the seeds'."""
    first, again = record("a", 0, 10.0, 5), record("a", 0, 20.0, 5)
    first["metrics"]["kid"] = 0.1  # a figure only the older cell has is not mixed in
    (row,) = group([first, record("a", 1, 14.0, 5), again], {"s": "d"}, {"s": 2})
    assert row.seeds == [1, 0] and row.values["fid"] == [14.0, 20.0] and row.mean("fid") == 17.0
    assert "kid" not in row.values


def test_mean_std_and_direction():
    records = [record("a", 0, 10.0, 5), record("a", 1, 14.0, 5), record("b", 0, 8.0, 9), record("b", 1, 8.0, 9),
               record("c", 0, 30.0, 1, status="failed")]
    rows = rank(group(records, {"s": "d"}, {"s": 2}), SPECS)
    assert [r.label for r in rows] == ["b", "a", "c"]
    a = rows[1]
    assert a.mean("fid") == 12.0 and a.std("fid") == pytest.approx(math.sqrt(8)) and a.seeds == [0, 1]
    assert rows[2].incomplete and not rows[0].incomplete and "closed" in rows[0].track
    higher = {**SPECS, "fid": MetricSpec("fid", "", True)}  # were higher better, the order flips
    assert [r.label for r in rank(group(records, {}, {}), higher)][:2] == ["a", "b"]
    assert "open" in rank(group(records, {}, {}), higher)[0].track


def test_a_row_short_of_its_seeds_is_shown_but_not_ranked():
    """A failed cell (an infeasible seed, a crash) leaves a mean over the seeds that survived:
    shown with its count, never ranked beside complete rows; ``versus`` says so where a row has
    no figure, and ``seeds_below`` pairs the seeds both rows ran. A run cut short, every row on
    the same fewer seeds, still ranks them all."""
    from fedfuse.leaderboard.ranking import paired_count, seeds_below, versus

    records = [record("a", 0, 10.0, 5), record("a", 1, 14.0, 5), record("a", 2, 11.0, 5),
               record("b", 0, 8.0, 9), record("b", 1, 9.0, 9), record("b", 2, 30.0, 9, status="failed"),
               record("c", 0, 30.0, 1, status="failed")]
    a, b, c = rank(group(records, {"s": "d"}, {"s": 3}), SPECS)
    assert [(r.label, r.place, r.n_shown, r.named) for r in (a, b)] == [
        ("a", "1", "3", "a"), ("b", "incomplete", "2*", "b [2 of 3 seeds]")]
    assert c.place == "incomplete" and not c.seeds and versus(c, a, "fid") == "not measured against"
    assert versus(b, a, "fid") == "below" and seeds_below(b, a, "fid") == (2, 2)
    assert seeds_below(a, b, "fid") == (0, 2) and seeds_below(c, a, "fid") == (0, 0)
    assert paired_count(b, a, "fid") == "below on 2 of 2 seeds"
    cut_short = [r for r in records if r["seed"] < 2 and r["status"] == "ok"]
    assert [(r.label, r.place, r.n_shown) for r in rank(group(cut_short, {"s": "d"}, {"s": 3}), SPECS)] == [
        ("b", "1=", "2*"), ("a", "1=", "2*")]


def test_paired_seeds_within_a_tenth_of_a_percent_are_level_not_below():
    """Two rows that chose the same plan differ by rounding: level on that seed, counted apart
    from "below"; just over 0.1 % is below."""
    from fedfuse.leaderboard.ranking import paired_count, seeds_below

    def row(label, fids):
        return rank(group([record(label, s, f, 5) for s, f in enumerate(fids)], {"s": "d"}, {"s": 3}), SPECS)[0]

    a, twin, close = row("a", (10.0, 14.0, 11.0)), row("t", (10.005, 13.0, 11.0)), row("c", (9.989, 14.0, 11.0))
    assert seeds_below(a, twin, "fid") == (0, 3) and seeds_below(twin, a, "fid") == (1, 3)
    assert paired_count(twin, a, "fid", "less") == "less on 1 of 3 seeds, level on 2"
    assert seeds_below(close, a, "fid") == (1, 3) and paired_count(close, a, "fid") == "below on 1 of 3 seeds, level on 2"


def test_results_of_an_older_protocol_version_get_a_row_of_their_own():
    records = [{**record("c0.2", 0, 10.0, 5), "protocol": "split", "protocol_version": "3"},
               {**record("c0.2", 0, 30.0, 5), "protocol": "split", "protocol_version": "4"}]
    rows = rank(group(records, {}, {}, versions={"split": "4"}), SPECS)
    assert [(r.label, r.mean("fid"), r.place) for r in rows] == [("c0.2", 30.0, "1"), ("c0.2 [split v3]", 10.0, "older version")]
    assert len(group(records, {}, {})) == 1  # (without the installed versions, and these records carrying no config hash: one row)


def test_a_store_resumed_after_its_set_up_changed_does_not_pool_the_two():
    """Same label, data and protocol version, but another resolved config (a default moved from
    guidance 2 to 1 and the store was resumed) or another matrix (rounds): the last-ended ok
    set-up is the row, the earlier one a row of its own, unranked."""
    old = [{**record("c0.2", s, 70.0, 5), "config_hash": "aaa", "ended": 100.0 + s} for s in (0, 1)]
    new = [{**record("c0.2", s, 20.0, 5), "config_hash": "bbb", "ended": 200.0 + s} for s in (0, 1)]
    rows = rank(group(old + new, {}, {}), SPECS)
    assert [(r.label, r.mean("fid"), r.place) for r in rows] == [
        ("c0.2", 20.0, "1"), (f"c0.2 [earlier set-up {setup_of(old[0])}]", 70.0, "superseded")]
    longer = [{**r, "config_hash": "bbb", "rounds_planned": 20, "ended": 300.0 + r["seed"]} for r in old]
    assert [(r.label, r.mean("fid")) for r in rank(group(new + longer, {}, {}), SPECS)] == [
        ("c0.2", 70.0), (f"c0.2 [earlier set-up {setup_of(new[0])}]", 20.0)]
    failed = {**record("c0.2", 0, math.nan, 5, status="failed"), "config_hash": "ccc", "ended": 300.0}
    assert rank(group(old + new + [failed], {}, {}), SPECS)[0].mean("fid") == 20.0  # ok cells decide
    other_data = [{**r, "dataset": "fashion-mnist", "evaluation": {"samples": 64}} for r in old]
    assert not any(r.outdated for r in group(new + other_data, {}, {}))  # each data split is its own row
    alone = group(old, {}, {})  # one set-up in the store: a plain row, as before
    assert [(r.label, r.outdated) for r in alone] == [("c0.2", False)]


def test_two_sizes_of_one_dataset_are_two_rows():
    small, large = record("a", 0, 10.0, 5), record("a", 0, 30.0, 5)
    small["dataset_args"], large["dataset_args"] = {"size": 14}, {"size": 28}
    rows = group([small, large, record("a", 1, 20.0, 5)], {}, {})
    assert sorted((r.data, r.mean("fid")) for r in rows) == [
        ("digits(size=14)/iid", 10.0), ("digits(size=28)/iid", 30.0), ("digits/iid", 20.0)]


def test_pareto_front_is_exactly_the_non_dominated_set():
    points = [(1.0, 10.0), (2.0, 5.0), (3.0, 1.0), (2.5, 6.0), (1.0, 11.0), (4.0, 1.0)]
    # lower is better in both: (2.5,6) is dominated by (2,5); (1,11) by (1,10); (4,1) by (3,1)
    assert pareto_front(points, False, False) == [0, 1, 2]
    assert sorted(pareto_front(points, True, True)) == [3, 4, 5]  # (2, 5) < (2.5, 6); (1, 10) < (1, 11)


def test_fronts_are_marked_per_cost():
    rows = group([record("a", 0, 10.0, 5), record("b", 0, 8.0, 9), record("c", 0, 12.0, 7)], {}, {})
    mark_fronts(rows, SPECS)
    marks = {r.label: r.pareto for r in rows}
    # equal energy and FLOPs: b (the lowest FID) alone is on those fronts; on bytes, a (10, 5)
    # dominates c (12, 7); the privacy and DP fronts have no points
    assert marks == {"a": ["bytes"], "b": ["bytes", "energy", "client FLOPs"], "c": []}


def scored(label, seed, fid, noise=200.0):
    r = record(label, seed, fid, 5)
    r["metrics"].update(fid_vs_noise=fid / noise, ref_fid_real=2.0, ref_fid_blur=80.0, ref_fid_noise=noise,
                        ref_recall_real=0.9, ref_recall_blur=0.2, ref_recall_noise=0.0)
    return r


def test_configurations_within_each_others_spread_share_a_rank():
    # a: 10 ± 1.4, b: 11 ± 1.4 (overlap a), c: 20 ± 1.4 (apart), d: 21 (overlaps c), e: 150 = 0.75 x noise
    records = [scored(lbl, s, fid + s * 2) for lbl, fid in (("a", 9.0), ("b", 10.0), ("c", 19.0), ("d", 20.0),
                                                             ("e", 149.0)) for s in (0, 1)]
    rows = rank(group(records, {}, {}), SPECS)
    assert [(r.label, r.rank) for r in rows] == [("a", "1="), ("b", "1="), ("c", "3="), ("d", "3="), ("e", "")]
    assert rows[-1].not_learned and not rows[0].not_learned
    mark_fronts(rows, SPECS)
    assert rows[-1].pareto == []  # a not-learned configuration is on no front, however cheap


def test_distinct_means_outside_the_spread_get_distinct_ranks():
    records = [scored(lbl, s, fid + s * 0.2) for lbl, fid in (("a", 10.0), ("b", 12.0), ("c", 14.0)) for s in (0, 1)]
    assert [r.rank for r in rank(group(records, {}, {}), SPECS)] == ["1", "2", "3"]


def test_markdown_shows_references_and_not_learned_rows():
    from fedfuse.leaderboard.render import markdown

    records = [scored("good", s, 20.0 + s) for s in (0, 1)] + [scored("noisy", s, 180.0 + s) for s in (0, 1)]
    text = markdown(rank(group(records, {}, {}), SPECS))
    assert "| 1 | good |" in text and "| not learned | noisy |" in text
    assert text.index("| 1 | good |") < text.index("| not learned | noisy |")
    assert "| pure noise | 200 | 0 |" in text and "| real held-out (floor) | 2 | 0.9 |" in text
    assert "cannot rank models" not in text  # 200 >= 20 x 2
    weak = [scored("x", 0, 5.0, noise=30.0)]
    assert "cannot rank models on digits/iid" in markdown(rank(group(weak, {}, {}), SPECS))


def test_each_data_split_of_a_configuration_shows_its_own_sample_grid(tmp_path):
    from fedfuse.leaderboard.html import grid_of

    records = []
    for split in ("iid", "dirichlet"):
        run_dir = tmp_path / split
        run_dir.mkdir()
        (run_dir / "samples.png").write_bytes(split.encode())
        records.append({**record("lora", 0, 1.0, 1.0), "partitioner": split, "run_dir": str(run_dir)})
    rows = group(records, {})
    assert len(rows) == 2
    assert {grid_of(r).read_bytes().decode() for r in rows} == {"iid", "dirichlet"}


def stored(tmp_path, cells) -> list[dict]:
    """A real results store holding ``cells`` [(label, protocol, seed, metrics)], read back."""
    from fedfuse.bench.suites.cells import CellSpec
    from fedfuse.results.store import ResultStore

    store = ResultStore(tmp_path / "results.sqlite")
    for label, protocol, seed, metrics in cells:
        cell = CellSpec("s", "1", label, protocol, "1", {}, "digits", {}, "iid", seed=seed)
        store.start(cell, "d", tmp_path / cell.cell_id)
        store.finish(cell.cell_id, "ok", metrics)
    return ResultStore(tmp_path / "results.sqlite", readonly=True).records()


def refs(noise: float) -> dict:
    return {"ref_fid_real": noise / 100, "ref_recall_real": 0.9, "ref_fid_blur": noise / 2, "ref_recall_blur": 0.1,
            "ref_fid_noise": noise, "ref_recall_noise": 0.0}


def test_rows_scored_on_different_distributions_are_ranked_in_separate_sections(tmp_path):
    """A store mixing two scored distributions shows two sections, each with its own references;
    so does an older store without distribution keys whose rows' references differ."""
    from fedfuse.leaderboard.render import markdown

    mine = {"eval_distribution": "each client's label mix", **refs(260.0)}
    whole = {"eval_distribution": "all held-out", **refs(210.0)}
    records = stored(tmp_path, [("split", "split-diffusion", s, {"fid": 20.0 + s, **mine}) for s in (0, 1)]
                     + [("fedavg", "fedavg", s, {"fid": 70.0 + s, **whole}) for s in (0, 1)])
    rows = rank(group(records, {}, {}), SPECS)
    assert {(r.label, r.rank, r.distribution) for r in rows} == {
        ("split", "1", "each client's label mix"), ("fedavg", "1", "all held-out")}  # never ranked together
    text = markdown(rows)
    sections = text.split("### ")[1:]
    assert len(sections) == 2
    for section, label, noise in (("all held-out", "fedavg", "210"), ("each client's label mix", "split", "260")):
        body = next(s for s in sections if s.startswith(f"s v1 (open, featnet) — scored on {section}"))
        assert f"| {label} |" in body and f"| pure noise | {noise} | 0 |" in body and body.count("| pure noise |") == 1
    legacy = [{**r, "metrics": {k: v for k, v in r["metrics"].items() if k != "eval_distribution"}} for r in records]
    assert len({r.section for r in rank(group(legacy, {}, {}), SPECS)}) == 2  # told apart by their references
    same = [r for r in legacy if r["label"] == "split"]
    assert [r.section for r in group(same, {}, {})] == ["s v1 (open, featnet)"]  # one distribution: no split


def test_privacy_is_a_front_and_bounds_or_raw_data_are_never_on_one():
    """FID vs membership AUC is a front; a bound row (centralized) and a row that moves raw
    images (split at c = 1) are ranked and marked but on no front, however good."""
    from fedfuse.leaderboard.render import markdown

    specs = {**SPECS, "mia_auc": MetricSpec("mia_auc", "", False)}
    cells = [("central", 5.0, 0.9, 0.0), ("c1.0", 6.0, 0.8, 1.0), ("c0.6", 20.0, 0.55, 0.0),
             ("inverted", 25.0, 0.3, 0.0), ("lora", 30.0, 0.52, 0.0), ("worse", 40.0, 0.6, 0.0)]
    records = [{**record(label, 0, fid, 5), "protocol": label, "metrics": {
        **record(label, 0, fid, 5)["metrics"], "mia_auc": mia, "raw_data_off_device": raw}}
        for label, fid, mia, raw in cells]
    rows = rank(group(records, {}, {}, bounds={"central"}), specs)
    mark_fronts(rows, specs)
    by = {r.label: r for r in rows}
    assert [r.label for r in rows] == ["central", "c1.0", "c0.6", "inverted", "lora", "worse"]  # all ranked
    assert by["central"].pareto == [] and by["c1.0"].pareto == []
    assert "privacy" in by["c0.6"].pareto and "privacy" in by["lora"].pareto and "privacy" not in by["worse"].pareto
    assert "privacy" not in by["inverted"].pareto  # AUC 0.3 tells members apart as well as 0.7 would
    text = markdown(rows)
    assert "| – (bound) |" in text and "| – (raw data off device) |" in text


def test_dest_picks_the_format_from_its_extension_and_numbers_read_at_a_glance(tmp_path, cli):
    """--dest x.html writes the page, x.json JSON, anything else Markdown; a mean shows 3
    significant digits and its spread the same decimal place, never 1e-05 notation."""
    stored(tmp_path, [("a", "fedavg", s, {"fid": 84.56 + s * 1e-5, "mia_auc": 0.00078 + s * 3e-6, **refs(200.0)})
                      for s in (0, 1)])
    for name, start in (("board.html", "<!doctype html>"), ("board.json", "["), ("board.md", "### ")):
        done = cli("leaderboard", "--out", str(tmp_path), "--dest", str(tmp_path / name))
        assert done.returncode == 0 and (tmp_path / name).read_text().startswith(start), (name, done.stderr)
    text = (tmp_path / "board.md").read_text()
    assert "| 84.6 ± 0.0 |" in text and "| 0.000781 ± 0.000002 |" in text and "e-0" not in text.split("References")[0]


def test_a_site_over_several_stores_has_an_index_and_a_page_each(tmp_path, cli):
    for name, fid in (("one", 20.0), ("two", 30.0)):
        (tmp_path / name).mkdir()
        stored(tmp_path / name, [("a", "fedavg", s, {"fid": fid + s, **refs(200.0)}) for s in (0, 1)])
    done = cli("site", str(tmp_path / "one"), str(tmp_path / "two"), "--dest", str(tmp_path / "site"))
    assert done.returncode == 0, done.stderr
    index = (tmp_path / "site" / "index.html").read_text()
    assert index.count('<a href="one.html">') == 1 and index.count('<a href="two.html">') == 1
    assert (tmp_path / "site" / "two.html").read_text().startswith("<!doctype html>")


def test_a_track_ranked_by_kid_ranks_and_draws_its_fronts_by_kid():
    """A track's ``primary`` (in its cells' evaluation) decides the order, the shared ranks and
    the quality axis of the fronts; its heading says so, and the column shows it."""
    from fedfuse.leaderboard.render import markdown

    specs = {**SPECS, "kid": MetricSpec("kid", "", False), "pop_kid": MetricSpec("pop_kid", "", False)}
    # by fid: a < b < c; by pop_kid: c < b < a. c is the cheapest too: alone on the bytes front by pop_kid.
    cells = [("a", 10.0, 0.30, 9), ("b", 20.0, 0.20, 9), ("c", 30.0, 0.10, 1)]
    records = [{**scored(label, 0, fid), "evaluation": {"primary": "pop_kid"}} for label, fid, _, _ in cells]
    for r, (_, _, kid, sent) in zip(records, cells):
        r["metrics"].update(pop_kid=kid, bytes_up=sent, pop_eval_distribution="all held-out: digits, n=64")
    rows = rank(group(records, {}, {}), specs)
    mark_fronts(rows, specs)
    assert [(r.label, r.rank) for r in rows] == [("c", "1"), ("b", "2"), ("a", "3")]
    assert [r.pareto for r in rows] == [["bytes", "energy", "client FLOPs"], [], []]
    text = markdown(rows)
    assert "ranked by pop_kid — scored on all held-out: digits, n=64" in text and "| pop_kid (ranked) |" in text
    assert [(r.label, r.rank) for r in rank(group([scored(x, 0, f) for x, f, _, _ in cells], {}, {}), specs)] == [
        ("a", "1"), ("b", "2"), ("c", "3")]  # the same rows in a fid track
