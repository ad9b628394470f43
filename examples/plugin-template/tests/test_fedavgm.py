"""The template's own tests: `pip install -e .` in fedfuse's venv, then `pytest tests`.

``fedfuse.api``'s testing names run a tiny cell in this process (no Ray): a client driven message by
message with its Flower Context kept, or the whole cell with the harness's scoring."""

import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from fedfuse.api import ClientDriver, build_unet, check_protocol, run_in_process, tiny_cell
from fedfuse_fedavgm import task

TINY = {"model": "tiny", "local_steps": 2, "batch_size": 8}


def test_proximal_term_is_zero_at_the_anchor_and_grows_away_from_it():
    model = build_unet((1, 8, 8), "tiny", seed=0)
    anchor = {k: p.detach().clone() for k, p in model.named_parameters()}
    term = task.proximal_term(anchor, mu=0.1)
    assert term(model).item() == 0.0
    with torch.no_grad():
        next(model.parameters()).add_(1.0)
    assert term(model).item() > 0


def test_a_client_trains_the_model_it_is_sent_and_keeps_its_count():
    """One client over two rounds, as Flower calls it: it returns the model it was sent,
    trained on its own images; its Context keeps how many rounds it trained, which the custom
    message "query.client_stats" reports with its last update's norms."""
    cell = tiny_cell("fedavgm", TINY, clients=2)
    client = ClientDriver(cell, partition=0)
    model = build_unet((1, 8, 8), "tiny", seed=0)
    sent = ArrayRecord(model.state_dict())
    for rnd in (1, 2):
        reply = client.send(RecordDict({"arrays": sent, "config": ConfigRecord({"server-round": rnd})}), "train", rnd)
        assert not reply.has_error(), reply.error
        back = reply.content["arrays"].to_torch_state_dict()
        assert back.keys() == model.state_dict().keys()
        assert any(not torch.equal(back[k], v) for k, v in model.state_dict().items())
        assert reply.content["metrics"]["rounds-trained"] == rnd and reply.content["metrics"]["train_loss"] > 0
    assert client.state["fedavgm"]["rounds_trained"] == 2
    stats = client.send(RecordDict(), "query.client_stats")
    assert stats.content["stats"]["rounds-trained"] == 2
    assert stats.content["update_norms"]["norms"].numpy().shape == (len(model.state_dict()),)


def test_the_reply_check_refuses_an_impossible_count():
    from fedfuse_fedavgm.plugin import check_reply

    check_reply(RecordDict(), RecordDict({"metrics": MetricRecord({"rounds-trained": 1})}), None)
    with pytest.raises(ValueError, match="rounds-trained"):
        check_reply(RecordDict(), RecordDict({"metrics": MetricRecord({"rounds-trained": 0})}), None)


def test_a_whole_cell_in_process_is_scored_by_the_harness(tmp_path):
    """Three clients, two of them a round, two rounds of the server loop, its custom message and
    the harness's scoring, in seconds: 4 trainings over 3 clients."""
    cell = tiny_cell("fedavgm", TINY, clients=3, rounds=2, participation=2)
    metrics = run_in_process(cell, tmp_path)
    assert metrics["fid"] > 0 and 0 < metrics["fid_vs_noise"] and metrics["bytes_up"] > metrics["payload_up"] > 0
    assert metrics["rounds_trained"] == pytest.approx(4 / 3) and metrics["update_norm"] > 0


def test_a_dp_entry_trains_through_the_harness_dp_service(tmp_path):
    """A suite entry's dp table: DP-SGD on every client step, ε accounted by the harness."""
    cell = tiny_cell("fedavgm", {**TINY, "dp": {"clip": 1.0, "noise_multiplier": 1.0}}, clients=2, rounds=1)
    metrics = run_in_process(cell, tmp_path)
    assert 0 < metrics["dp_epsilon"] < 10 and metrics["dp_delta"] == 1e-5


def test_fedavgm_keeps_the_plugin_contract():
    """3 clients, 2 rounds: fresh processes, a warm one, a client failing in round 2 (about a
    minute on 2 CPU cores)."""
    report = check_protocol("fedavgm", {"proximal_mu": 0.01})
    assert report["ok"], [r for r in report["rules"] if not r["ok"]]


def test_fedavgm_enters_track_edge_quick(tmp_path):
    """This plugin's entry on the benchmark's quick track (track-entry.toml): within the budget,
    scored by the harness and ranked in the track's closed section (about a minute on 2 CPU cores)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    entry = Path(__file__).resolve().parents[1] / "track-entry.toml"
    fedfuse = [sys.executable, "-m", "fedfuse.bench.cli"]
    done = subprocess.run([*fedfuse, "run", "track-edge-quick", "--entry", str(entry), "--out", str(tmp_path)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    board = subprocess.run([*fedfuse, "leaderboard", "--out", str(tmp_path), "--format", "json"],
                           capture_output=True, text=True, check=True)
    (row,) = json.loads(board.stdout)
    assert row["label"] == "fedavgm" and "closed" in row["section"]
    assert row["mean"]["train_examples"] <= 1000 * 32 and row["mean"]["over_budget"] == 0
    assert row["mean"]["pop_fid"] > 0 and (row["rank"] or row["not_learned"])
