"""Cost model, FLOP counting and profiles: closed forms, scaling, sources."""

import pytest
from helpers import write_suite


@pytest.mark.slow
def test_a_suite_target_records_energy_to_quality(cli, tmp_path):
    """target = { fid = ... } with eval_every = 2: FID is scored in rounds 2 and 3 (the last);
    a target every model meets is met in round 2, and what it cost is the sum of rounds 1-2."""
    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\nconfig = { model = "tiny", local_steps = 2 }\n',
                        rounds="3", samples="16", sample_steps="2", target="{ fid = 1e9 }", eval_every="2",
                        target_samples="16")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = cli.results(tmp_path / "out")
    rounds, m = record["rounds"], record["metrics"]
    assert [("target_fid" in r) for r in rounds[:3]] == [False, True, True]
    assert m["target_reached"] == 1 and m["rounds_to_target"] == 2
    assert m["energy_to_target_j"] == pytest.approx(rounds[0]["energy_j"] + rounds[1]["energy_j"])
    assert m["bytes_to_target"] == sum(r["bytes_up"] + r["bytes_down"] for r in rounds[:2])


MIXED = '[[profiles]]\nname = "mixed"\ndevice = ["raspberry-pi-4", "laptop-cpu"]\nnetwork = "lte"\n'


def fedavg_labelled(*labels: str) -> str:
    return "".join(f'[[protocols]]\nname = "fedavg"\nlabel = "{label}"\n'
                   'config = { model = "tiny", local_steps = 2, batch_size = 8 }\n' for label in labels)


@pytest.mark.slow
def test_a_client_past_the_deadline_is_left_out_of_the_round_and_costed_until_it(cli, tmp_path):
    """deadline_s between the two clients' simulated latencies: the slower one misses every
    round (its update is not averaged: another model), it is costed up to the deadline, the
    round lasts the deadline, and the same seed drops the same client with the same model (a
    second, warm run; across processes: the deployment parity test)."""
    def run(name, *labels, **matrix) -> dict:
        suite = write_suite(tmp_path / f"{name}.toml", fedavg_labelled(*labels) + MIXED, rounds="2", samples="16",
                            sample_steps="2", **matrix)
        done = cli("run", str(suite), "--out", str(tmp_path / name))
        assert done.returncode == 0, done.stderr[-2000:]
        return {r["label"]: r for r in cli.results(tmp_path / name)}

    free = run("free", "free")["free"]
    latency = {k: c["latency_s"] for k, c in free["rounds"][0]["per_client"].items()}
    slow, fast = sorted(latency, key=latency.get, reverse=True)  # devices and (seeded) distances decide
    deadline = (latency[slow] + latency[fast]) / 2
    late, again = run("late", "late", "again", deadline_s=str(deadline)).values()  # the same cell, labelled apart
    for record in (late, again):
        for rnd, before in zip(record["rounds"][:2], free["rounds"][:2]):
            straggler, other, was = rnd["per_client"][slow], rnd["per_client"][fast], before["per_client"][slow]
            assert straggler.get("late") == 1 and "late" not in other and rnd["clients_late"] == 1
            assert straggler["latency_s"] == deadline
            assert rnd["latency_s"] == pytest.approx(deadline + rnd["server_time_s"])
            assert straggler["e_cmp_j"] + straggler["e_up_j"] < was["e_cmp_j"] + was["e_up_j"]
            assert other["energy_j"] > 0 and straggler["bytes_up"] > 0  # it did send: the server did not wait
    assert late["metrics"]["model_sha256"] == again["metrics"]["model_sha256"] != free["metrics"]["model_sha256"]
    assert late["cell"] != free["cell"]  # a deadline is part of the cell's identity
