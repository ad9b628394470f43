"""Split diffusion: the cut, the exact marginal, what crosses the network, who computes what."""

import pytest
from helpers import expect_exit, plain_run, split_sweep_run

from fedfuse.protocols.split_diffusion import task

@pytest.mark.slow
def test_what_crosses_and_who_computes(cli, shared_run):
    """The shared sweep (helpers.SPLIT_SWEEP): cuts 0, 0.2, 0.6 and 1 sharing a subset of 32,
    per-client cuts, and share = "batches"."""
    cells = {r["label"]: r for r in cli.results(split_sweep_run(shared_run))}
    assert all(r["status"] == "ok" for r in cells.values())
    # c = 0: nothing derived from data crosses; the samples never leave the client either.
    assert cells["c0.0"]["metrics"]["payload_up"] == 0 and cells["c0.0"]["metrics"]["payload_down"] == 0
    assert "nn_mse" not in cells["c0.0"]["metrics"]
    # c > 0: per client per round, exactly share_size x_cut images in float32 go up.
    for label in ("c0.2", "c0.6"):
        for rnd in cells[label]["rounds"]:
            for client in rnd["per_client"].values():
                assert client["payload_up"] == 32 * 1 * 8 * 8 * 4
                assert client["payload_up"] < client["bytes_up"] < client["payload_up"] + 4096
    # A training step costs a party the same at any cut (4 client and 4 server steps here);
    # generating costs a client less as the server's share grows. Disclosure rises.
    c2, c6 = cells["c0.2"]["metrics"], cells["c0.6"]["metrics"]
    assert c6["client_flops"] == c2["client_flops"] and c6["client_gen_flops"] < c2["client_gen_flops"]
    assert c6["server_flops"] == c2["server_flops"] > 0
    assert c6["nn_mse"] < c2["nn_mse"]
    assert cells["c1.0"]["metrics"]["nn_mse"] == pytest.approx(0.0, abs=1e-6)  # at c = 1 clients share x_0
    assert cells["c1.0"]["metrics"]["client_flops"] < c6["client_flops"]
    # Per-client cuts: both clients send share_size images and train as many steps (a step costs
    # the same at any t); generating, each runs its own part of the 6 steps (c = 0.6: fewer).
    mixed = cells["mixed"]
    assert mixed["metrics"]["cut_ratio"] == pytest.approx(0.4) and "t_c" not in mixed["metrics"]
    for rnd in mixed["rounds"]:
        low, high = rnd["per_client"]["0"], rnd["per_client"]["1"]  # cut ratios 0.2 and 0.6
        assert low["payload_up"] == high["payload_up"] == 32 * 64 * 4 and low["flops_train"] == high["flops_train"]
    per_step = cells["c0.0"]["metrics"]["client_gen_flops"] / 6  # c = 0: the client runs all 6 steps
    own = [task.split_steps(6, task.cut_index(c, 200), 200)[1] for c in (0.2, 0.6)]
    assert own[1] < own[0] and mixed["metrics"]["client_gen_flops"] == pytest.approx(per_step * sum(own) / 2)
    # At deployment the server sends each image's x_cut (float32 8x8: 256 B, one message a client
    # for its 32 images) and runs the steps above the cut; at c = 0 nothing but the request crosses.
    gen = {label: cells[label]["metrics"] for label in ("c0.0", "c0.2", "c0.6", "c1.0")}
    assert gen["c0.0"]["client_gen_bytes"] < 64 and gen["c0.0"]["server_gen_flops"] == 0
    for label in ("c0.2", "c0.6", "c1.0"):
        assert 256 < gen[label]["client_gen_bytes"] < 256 + 4096 / 32 and gen[label]["client_gen_net_s"] > 0
    assert 0 < gen["c0.2"]["server_gen_flops"] < gen["c0.6"]["server_gen_flops"] < gen["c1.0"]["server_gen_flops"]
    assert gen["c1.0"]["client_gen_flops"] == 0 and gen["c1.0"]["server_gen_s"] > 0
    batches = cells["batches"]["rounds"][0]["per_client"]  # 4 batches of 16 float32 8x8 x_cut
    assert all(client["payload_up"] == 4 * 16 * 64 * 4 for client in batches.values())
    for r in (cells[label] for label in ("c0.0", "c0.2", "c0.6", "c1.0", "mixed")):  # the harness's evaluation adds no round: generating for it is not counted
        assert len(r["rounds"]) == 1 and "phase" not in r["rounds"][0] and r["metrics"]["fid"] > 0
        for client in r["rounds"][0]["per_client"].values():  # the server is never sent a client model
            assert client["payload_up"] <= 32 * 64 * 4


@pytest.mark.slow
def test_batches_conditions_and_what_the_server_can_make_of_them(cli, shared_run):
    """share = "batches": each round a client sends the cut-noised copy of every batch it
    trained on, with each image's label; the server takes one step per batch received, keeps a
    bounded pool, and its own model's view of what it received is scored as disclosure. The
    quality target is checked the protocol's way after round 2, and costs the protocol nothing.
    The shared run helpers.CONDITIONED, beside local-only and centralized."""
    out = plain_run(shared_run, "conditioned")
    expect_exit(out, "0")
    cells = {r["label"]: r for r in cli.results(out)}
    split, alone, central = cells["split"], cells["local-only"], cells["centralized"]
    for rnd in split["rounds"]:  # 3 batches of 8: float32 8x8 images and one int64 label each
        assert rnd["server_steps"] == 2 * 3 * 8 / 8
        for client in rnd["per_client"].values():
            assert client["payload_up"] == 3 * 8 * (64 * 4 + 8)
    m = split["metrics"]
    assert m["disclosed_conditions"] == 24
    for what in ("cut", "rescaled", "approx", "fresh"):
        assert m[f"disclosure_fid_{what}"] > 0 and m[f"disclosure_fid_{what}_heldout"] > 0
    # Generating costs the split client its share of the 6 steps, the lone client all 6, the
    # centralized baseline's clients nothing; guidance runs two passes a step on both sides.
    assert central["metrics"]["client_gen_flops"] == 0
    # ... but each image is sent to it, with its label (8x8 float32 and an int64: 264 B, and a
    # share of the message's framing), as a split client is sent each image's x_cut and label;
    # the server runs all 6 steps where the split server runs its share of them
    for cell in (central, split):
        assert 264 < cell["metrics"]["client_gen_bytes"] < 264 + 4096 / 16
    assert central["metrics"]["server_gen_flops"] > m["server_gen_flops"] > 0
    per_step = alone["metrics"]["client_gen_flops"] / 6
    assert m["client_gen_flops"] == pytest.approx(per_step * task.split_steps(6, task.cut_index(0.6, 200), 200)[1])
    assert per_step > 0 and alone["metrics"]["client_gen_s"] > 0
    assert all(r["status"] == "ok" and r["metrics"]["fid"] > 0 for r in cells.values())
    for cell in cells.values():  # evaluation exchanges leave the rounds' traffic and client FLOPs as they were
        first, second = cell["rounds"][:2]
        assert "target_fid" not in first and second["target_fid"] > 0
        assert cell["metrics"]["target_reached"] == 1 and cell["metrics"]["rounds_to_target"] == 2
        assert all(c["flops_sample"] == 0 for c in second["per_client"].values())
    for cell in (split, alone):  # the same exchange in both rounds, the evaluation's on top uncounted
        first, second = cell["rounds"][:2]
        assert (first["bytes_down"], first["bytes_up"], first["messages"]) == \
            (second["bytes_down"], second["bytes_up"], second["messages"])
    assert central["rounds"][1]["bytes_up"] == central["rounds"][1]["messages"] == 0  # the upload was in round 1
    # membership inference on what the server holds: its denoiser, or nothing at c = 0
    for cell in (split, central):
        assert 0 <= cell["metrics"]["mia_auc"] <= 1 and cell["metrics"]["mia_members"] == cell["metrics"]["mia_nonmembers"] > 0
    assert "mia_auc" not in alone["metrics"]
