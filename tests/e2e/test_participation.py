"""Partial participation: a suite's ``participation`` trains a seeded draw of the clients each round."""

import pytest
from helpers import write_suite

PROTOCOLS = ('[[protocols]]\nname = "fedavg"\nconfig = { model = "tiny", local_steps = 2, batch_size = 8 }\n'
             '[[protocols]]\nname = "fixed-quant"\nconfig = { model = "tiny", local_steps = 2, batch_size = 8, bits = 4 }\n')


@pytest.mark.slow
def test_each_round_trains_a_seeded_draw_of_the_clients(cli, tmp_path):
    """4 clients, participation 0.5: every round exactly 2 clients receive and send (the
    others cost nothing), the draw changes from round to round, and it is the same for
    both protocols of the cell's seed (the harness draws it, not the protocol)."""
    suite = write_suite(tmp_path / "s.toml", PROTOCOLS, clients="4", rounds="3", samples="16", sample_steps="2",
                        participation="0.5")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    draws = {}
    for record in cli.results(tmp_path / "out"):
        training = [r for r in record["rounds"] if "participants" in r]
        assert len(training) == 3 and all(r["participants"] == 2 for r in training)
        draws[record["protocol"]] = [sorted(k for k, c in r["per_client"].items() if c["bytes_up"] > 0) for r in training]
        assert all(len(d) == 2 for d in draws[record["protocol"]])
        for r in training:  # a client not drawn neither trains nor pays
            assert sum(1 for c in r["per_client"].values() if c["flops_train"] > 0) == 2
    assert draws["fedavg"] == draws["fixed-quant"] and len({tuple(d) for d in draws["fedavg"]}) > 1


@pytest.mark.slow
def test_only_online_clients_are_drawn(cli, tmp_path):
    """A trace: client 0 online in rounds 2-3 only, client 1 never (an interval past the run),
    clients 2-3 always (not listed). Each round trains exactly the online clients. The same
    cell again, in warm actors, trains the very same model: three clients' updates are summed in
    client order, whatever order their replies arrive in (float addition is not associative)."""
    (tmp_path / "online.csv").write_text("client,first_round,last_round\n0,2,3\n1,9,9\n")
    protocols = "".join(f'[[protocols]]\nname = "fedavg"\nlabel = "{label}"\n'
                        'config = { model = "tiny", local_steps = 2, batch_size = 8 }\n' for label in ("first", "again"))
    protocols += ('[[profiles]]\nname = "traced"\ndevice = "phone-midrange"\nnetwork = "lte"\n'
                  'availability = { trace = "online.csv" }\n')
    suite = write_suite(tmp_path / "s.toml", protocols, clients="4", rounds="3", samples="16", sample_steps="2")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    record, again = sorted(cli.results(tmp_path / "out"), key=lambda r: r["label"] != "first")
    trained = [sorted(k for k, c in r["per_client"].items() if c["flops_train"] > 0) for r in record["rounds"][:3]]
    assert trained == [["2", "3"], ["0", "2", "3"], ["0", "2", "3"]]
    assert [r["available"] for r in record["rounds"][:3]] == [2, 3, 3]
    assert again["metrics"]["engine_reused"] == 1.0  # warm actors: the same model as fresh ones
    assert again["metrics"]["model_sha256"] == record["metrics"]["model_sha256"]
