"""What a round costs, end to end: bytes, FLOPs, simulated latency and energy, a quality target,
a deadline. The tests read one shared run of a small fedavg cell (helpers.fedavg_run)."""

import pytest
from helpers import FEDAVG_MATRIX, fedavg_labelled, fedavg_run


@pytest.fixture
def free(shared_run, cli) -> dict:
    """The fedavg cell without a deadline, on a Raspberry Pi and a laptop."""
    (record,) = cli.results(fedavg_run(shared_run))
    return record


@pytest.mark.slow
def test_accounting_of_a_fedavg_round(free):
    """P float32 parameters: 4P bytes of payload each way per client per round; the wire adds
    Flower's framing (~330 B per tensor), a few percent for this model; FLOPs > 0 for every
    client; time and energy from each device's profile."""
    params, m = free["metrics"]["model_params"], free["metrics"]
    assert free["profile"] == "mixed" and [h["device"] for h in free["hardware"]] == ["raspberry-pi-4", "laptop-cpu"]
    for rnd in free["rounds"]:
        for client in rnd["per_client"].values():
            assert client["payload_up"] == client["payload_down"] == 4 * params
            assert 4 * params < client["bytes_up"] < 1.05 * 4 * params
            assert client["flops_train"] > 0
        pi, laptop = rnd["per_client"]["0"], rnd["per_client"]["1"]
        assert pi["flops_train"] == laptop["flops_train"] and pi["t_cmp_s"] > 5 * laptop["t_cmp_s"]
        assert rnd["latency_s"] == pytest.approx(max(pi["latency_s"], laptop["latency_s"]) + rnd["server_time_s"])
        assert rnd["energy_j"] == pytest.approx(pi["energy_j"] + laptop["energy_j"])
    for key in ("bytes_up", "bytes_down", "client_flops", "server_flops", "latency_s", "energy_j", "wall_s",
                "peak_rss_mb"):
        assert key in m
    assert m["energy_j"] == pytest.approx(sum(r["energy_j"] for r in free["rounds"]))


@pytest.mark.slow
def test_a_suite_target_records_energy_to_quality(free):
    """target = { fid = ... } with eval_every = 2: FID is scored in rounds 2 and 3 (the last);
    a target every model meets is met in round 2, and what it cost is the sum of rounds 1-2."""
    rounds, m = free["rounds"], free["metrics"]
    assert [("target_fid" in r) for r in rounds[:3]] == [False, True, True]
    assert m["target_reached"] == 1 and m["rounds_to_target"] == 2
    assert m["energy_to_target_j"] == pytest.approx(rounds[0]["energy_j"] + rounds[1]["energy_j"])
    assert m["bytes_to_target"] == sum(r["bytes_up"] + r["bytes_down"] for r in rounds[:2])


@pytest.mark.slow
def test_a_client_past_the_deadline_is_left_out_of_the_round_and_costed_until_it(free, cli, tmp_path):
    """deadline_s between the two clients' simulated latencies: the slower one misses every
    round (its update is not averaged: another model), it is costed up to the deadline, the
    round lasts the deadline (the same seed dropping the same client with the same model in a
    warm actor and across processes: the participation and deployment parity tests)."""
    from helpers import write_suite

    latency = {k: c["latency_s"] for k, c in free["rounds"][0]["per_client"].items()}
    slow, fast = sorted(latency, key=latency.get, reverse=True)  # devices and (seeded) distances decide
    deadline = (latency[slow] + latency[fast]) / 2
    suite = write_suite(tmp_path / "late.toml", fedavg_labelled("late"), deadline_s=str(deadline), **FEDAVG_MATRIX)
    done = cli("run", str(suite), "--out", str(tmp_path / "late"))
    assert done.returncode == 0, done.stderr[-2000:]
    (late,) = cli.results(tmp_path / "late")
    for rnd, before in zip(late["rounds"], free["rounds"]):
        straggler, other, was = rnd["per_client"][slow], rnd["per_client"][fast], before["per_client"][slow]
        assert straggler.get("late") == 1 and "late" not in other and rnd["clients_late"] == 1
        assert straggler["latency_s"] == deadline
        assert rnd["latency_s"] == pytest.approx(deadline + rnd["server_time_s"])
        assert straggler["e_cmp_j"] + straggler["e_up_j"] < was["e_cmp_j"] + was["e_up_j"]
        assert other["energy_j"] > 0 and straggler["bytes_up"] > 0  # it did send: the server did not wait
    assert late["metrics"]["model_sha256"] != free["metrics"]["model_sha256"]
    assert late["cell"] != free["cell"]  # a deadline is part of the cell's identity
