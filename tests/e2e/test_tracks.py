"""Tracks: every protocol on one task, budget and evaluation (docs/tracks.md). The end-to-end
tests share one run of track-edge-quick (conftest's ``quick_track``)."""

import json
from pathlib import Path

import pytest
from helpers import BUILT_INS, expect_exit


def board(cli, out: Path) -> list[dict]:
    done = cli("leaderboard", "--out", str(out), "--format", "json")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


@pytest.mark.slow
def test_every_built_in_meets_the_same_task_budget_and_evaluation(quick_track, cli):
    records = cli.results(quick_track)
    assert {r["protocol"] for r in records} == BUILT_INS and {r["status"] for r in records} == {"ok"}
    budget = 1000 * 32
    for r in records:
        m = r["metrics"]
        assert 0.9 * budget <= m["train_examples"] <= budget and m["over_budget"] == 0.0, (r["label"], m["train_examples"])
        assert m["train_examples"] == m["client_train_examples"] + m["server_train_examples"] + m.get("pretrain_examples", 0)
        run_dir = Path(r["run_dir"])
        assert all((run_dir / f"samples_client{c}.png").is_file() for c in range(10)) and (run_dir / "samples.png").is_file()
        assert 0 < m["fid_vs_noise"] and 0 < m["pop_fid"] and 8 <= m["eval_real_n"] <= 64
    assert {r["metrics"]["pop_eval_distribution"] for r in records} == {"all held-out: digits(public_fraction=0.1), n=64, digits-featnet-v1"}
    by = {r["protocol"]: r["metrics"] for r in records}
    assert by["centralized"]["server_train_examples"] == budget - 32 and by["centralized"]["client_train_examples"] == 0
    assert by["fedavg-lora"]["pretrain_examples"] == 200 * 32
    assert by["centralized"]["raw_data_off_device"] == 1.0 and by["split-diffusion"]["raw_data_off_device"] == 0.0
    rows = board(cli, quick_track)
    assert len({r["section"] for r in rows}) == 1 and "closed" in rows[0]["section"]
    assert rows[0]["section"].endswith("10 clients, n=64, digits-featnet-v1")
    assert {r["label"] for r in rows if r["bound"]} == {"local-only", "centralized"}
    assert all(not r["pareto"] for r in rows if r["bound"] or r["raw_data"])
    learned = [r for r in rows if r["rank"]]
    assert learned and min(r["mean"]["fid_vs_noise"] for r in learned) <= 0.5  # the best rows learned


@pytest.mark.slow
def test_the_plugin_template_enters_the_track_and_is_ranked_beside_the_built_ins(quick_track, plugin_cli, plugin_site,
                                                                                shared_run):
    """The shared runs helpers.PLUGIN_RUNS["template-track"] (the template's track-entry.toml
    on a copy of the session's track run), then "template-track-again" (the track, resumed)."""
    from helpers import plugin_run

    out = plugin_run(shared_run, plugin_site, "template-track")
    expect_exit(out, "0")
    plugin_run(shared_run, plugin_site, "template-track-again")  # the built-ins: resumed, nothing rerun
    again = (out.parent / "template-track-again.log").read_text()
    expect_exit(out, "0", "template-track-again")
    assert again.count("already ok") == len(BUILT_INS)
    rows = board(plugin_cli, out)
    assert len({r["section"] for r in rows}) == 1 and len(rows) == len(BUILT_INS) + 1
    (mine,) = [r for r in rows if r["label"] == "fedavgm"]
    assert mine["mean"]["train_examples"] <= 1000 * 32 and mine["mean"]["over_budget"] == 0.0
    assert mine["rank"] or mine["not_learned"]
