"""Partial participation: a suite's ``participation`` trains a seeded draw of the clients each round."""

import pytest
from helpers import expect_exit, plain_run


@pytest.mark.slow
def test_each_round_trains_a_seeded_draw_of_the_clients(cli, shared_run):
    """4 clients, participation 0.5 (the shared run helpers.DRAWN): every round exactly 2
    clients receive and send (the others cost nothing), the draw changes from round to round,
    and it is the same for both protocols of the cell's seed (the harness draws it, not the
    protocol)."""
    out = plain_run(shared_run, "participation")
    expect_exit(out, "0")
    draws = {}
    for record in cli.results(out):
        training = [r for r in record["rounds"] if "participants" in r]
        assert len(training) == 3 and all(r["participants"] == 2 for r in training)
        draws[record["protocol"]] = [sorted(k for k, c in r["per_client"].items() if c["bytes_up"] > 0) for r in training]
        assert all(len(d) == 2 for d in draws[record["protocol"]])
        for r in training:  # a client not drawn neither trains nor pays
            assert sum(1 for c in r["per_client"].values() if c["flops_train"] > 0) == 2
    assert draws["fedavg"] == draws["fixed-quant"] and len({tuple(d) for d in draws["fedavg"]}) > 1


@pytest.mark.slow
def test_only_online_clients_are_drawn(cli, shared_run):
    """A trace (helpers.ONLINE): client 0 online in rounds 2-3 only, client 1 never (an interval
    past the run), clients 2-3 always (not listed). Each round trains exactly the online clients.
    The same cell again, in warm actors, trains the very same model: three clients' updates are
    summed in client order, whatever order their replies arrive in (float addition is not
    associative)."""
    out = plain_run(shared_run, "trace")
    expect_exit(out, "0")
    record, again = sorted(cli.results(out), key=lambda r: r["label"] != "first")
    trained = [sorted(k for k, c in r["per_client"].items() if c["flops_train"] > 0) for r in record["rounds"][:3]]
    assert trained == [["2", "3"], ["0", "2", "3"], ["0", "2", "3"]]
    assert [r["available"] for r in record["rounds"][:3]] == [2, 3, 3]
    assert record["metrics"]["engine_reused"] == 0.0  # fresh actors: the session's shared runs start with it
    assert again["metrics"]["engine_reused"] == 1.0  # warm actors: the same model as fresh ones
    assert again["metrics"]["model_sha256"] == record["metrics"]["model_sha256"]
