"""Tracks: every protocol on one task, budget and evaluation (docs/tracks.md). The end-to-end
tests share one run of track-edge-quick (conftest's ``quick_track``)."""

import pytest
from helpers import BUILT_INS

from fedfuse.bench.engine.runner import budget_figures
from fedfuse.bench.suites.parse import load_suite, study_digest
from fedfuse.plugins.config import ConfigError


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


def test_an_unconditional_entry_is_refused_by_a_conditional_track_before_anything_runs(cli, tmp_path):
    """Its config says it generates unconditionally: one line, exit 2, nothing written (an entry
    whose config says nothing is refused when it deploys, naming the same cause)."""
    from helpers import write_suite

    for entry in ('name = "fedavg"\nconfig = { model = "tiny", local_steps = 2, batch_size = 8 }',
                  'name = "split-diffusion"\nconfig = { model = "tiny", client_model = "tiny" }'):
        protocols = f'[track]\nconditional = true\nbudget_steps = 10\nbudget_batch = 8\n[[protocols]]\n{entry}\n'
        suite = write_suite(tmp_path / "t.toml", protocols, samples="16", sample_steps="2")
        done = cli("run", str(suite), "--out", str(tmp_path / "out"))
        assert done.returncode == 2 and "asks for class-conditional generation" in done.stderr, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_a_track_may_rank_by_another_quality_figure_and_a_fid_track_keeps_its_cell_ids(tmp_path):
    """``primary`` is one of the harness's ranking figures; it travels in the cells' evaluation
    (where the leaderboard reads it) only when it is not fid, so fid tracks keep their ids."""
    from fedfuse.bench.suites.expand import expand
    from fedfuse.plugins.manager import registry

    text = load_suite("track-edge-quick").text
    assert 'primary = "fid"' in text
    fid_cells = expand(load_suite("track-edge-quick"), registry())
    assert all("primary" not in c.evaluation for c in fid_cells)
    by_kid = tmp_path / "kid.toml"
    by_kid.write_text(text.replace('primary = "fid"', 'primary = "pop_kid"'))
    cells = expand(load_suite(str(by_kid)), registry())
    assert {c.evaluation["primary"] for c in cells} == {"pop_kid"}
    assert {c.cell_id for c in cells}.isdisjoint(c.cell_id for c in fid_cells)
    wrong = tmp_path / "wrong.toml"
    wrong.write_text(text.replace('primary = "fid"', 'primary = "precision"'))
    with pytest.raises(ConfigError, match="primary must be one of fid, kid, recall, coverage, pop_fid, .*'precision'"):
        load_suite(str(wrong))
