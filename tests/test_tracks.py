"""Tracks: every protocol on one task, budget and evaluation (docs/tracks.md). The end-to-end
tests share one run of track-edge-quick (conftest's ``quick_track``)."""

import json
from pathlib import Path

import pytest
from helpers import ROOT, copy_store, write_suite

from fedfuse.bench.engine.runner import budget_figures
from fedfuse.bench.suites.parse import load_suite, study_digest
from fedfuse.plugins.config import ConfigError

BUILT_INS = {"fedavg", "fixed-quant", "ondemand-quant", "fedavg-lora", "fedavg-full-finetune", "split-diffusion",
             "local-only", "centralized"}


def test_the_shipped_tracks_bind_every_entry_to_one_budget():
    for name, budget in (("track-edge", 4000 * 32), ("track-edge-quick", 1000 * 32), ("track-edge-gpu", 20000 * 128)):
        suite = load_suite(name)
        assert suite.track.budget == budget and suite.track.conditional
        assert {p.name for p in suite.protocols} == BUILT_INS
        assert not set(suite.track.tuning_seeds) & set(suite.matrix.seeds)
    assert load_suite("track-edge").matrix.seeds == [0, 1, 2, 3, 4]


def test_a_tracks_digest_is_its_tasks_and_entries_do_not_open_it(tmp_path):
    text = load_suite("track-edge-quick").text
    other_entries = text.replace('local_steps = 33, warmup_steps = 20 }', 'local_steps = 30, warmup_steps = 20 }', 1)
    assert other_entries != text and study_digest(other_entries) == study_digest(text)
    assert study_digest(text.replace("clients = 10", "clients = 9")) != study_digest(text)
    entry = tmp_path / "entry.toml"
    entry.write_text('[[protocols]]\nname = "fedavg"\nlabel = "mine"\nconfig = { model = "tiny", local_steps = 2 }\n')
    entered = load_suite("track-edge-quick", entry=str(entry))
    assert [p.label for p in entered.protocols] == ["mine"] and entered.digest == load_suite("track-edge-quick").digest
    assert load_suite("track-edge-quick", tuning=True).matrix.seeds == [100, 101, 102]


@pytest.mark.parametrize("content, message", [
    ('[matrix]\nrounds = 2\n[[protocols]]\nname = "fedavg"\n', "holds [[protocols]] tables only"),
    ("", "no [[protocols]]"),
])
def test_an_entry_file_holds_protocols_only(tmp_path, content, message):
    entry = tmp_path / "entry.toml"
    entry.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_suite("track-edge-quick", entry=str(entry))


def test_track_errors_name_what_is_wrong(tmp_path):
    with pytest.raises(ConfigError, match="--tuning needs a \\[track\\]"):
        load_suite("smoke", tuning=True)
    with pytest.raises(ConfigError, match="--entry needs a track"):
        load_suite("smoke", entry=str(tmp_path / "x.toml"))
    overlap = tmp_path / "t.toml"
    overlap.write_text(load_suite("track-edge-quick").text.replace("tuning_seeds = [100, 101, 102]", "tuning_seeds = [0, 7]"))
    with pytest.raises(ConfigError, match=r"t.toml:\d+: tuning_seeds \[0, 7\] overlap the evaluation seeds \[0\]"):
        load_suite(str(overlap))


def test_the_budget_counts_every_party():
    used = {"client_train_examples": 20000.0, "server_train_examples": 10000.0, "pretrain_examples": 3200}
    assert budget_figures(used, 32000) == {"train_examples": 33200.0, "over_budget": 1.0}
    assert budget_figures(used, 40000)["over_budget"] == 0.0
    assert budget_figures({}, 0) == {"train_examples": 0.0}  # no budget: counted, never over


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
def test_the_plugin_template_enters_the_track_and_is_ranked_beside_the_built_ins(quick_track, plugin_cli, tmp_path):
    out = copy_store(quick_track, tmp_path / "track")
    entry = ROOT / "examples" / "plugin-template" / "track-entry.toml"
    done = plugin_cli("run", "track-edge-quick", "--entry", str(entry), "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    again = plugin_cli("run", "track-edge-quick", "--out", str(out))  # the built-ins: resumed, nothing rerun
    assert again.returncode == 0 and again.stderr.count("already ok") == len(BUILT_INS)
    rows = board(plugin_cli, out)
    assert len({r["section"] for r in rows}) == 1 and len(rows) == len(BUILT_INS) + 1
    (mine,) = [r for r in rows if r["label"] == "fedavgm"]
    assert mine["mean"]["train_examples"] <= 1000 * 32 and mine["mean"]["over_budget"] == 0.0
    assert mine["rank"] or mine["not_learned"]


@pytest.mark.slow
def test_an_unconditional_entry_fails_a_conditional_track_with_a_clear_error(cli, tmp_path):
    protocols = ('[track]\nconditional = true\nbudget_steps = 10\nbudget_batch = 8\n'
                 '[[protocols]]\nname = "fedavg"\nconfig = { model = "tiny", local_steps = 2, batch_size = 8 }\n')
    suite = write_suite(tmp_path / "t.toml", protocols, samples="16", sample_steps="2")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 1
    (record,) = cli.results(tmp_path / "out")
    assert record["status"] == "failed" and "asks for class-conditional generation" in record["error"]
