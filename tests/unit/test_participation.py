"""Partial participation: a suite's ``participation`` trains a seeded draw of the clients each round."""

import pytest
from helpers import write_suite


def test_availability_models_say_who_is_online():
    import numpy as np

    from fedfuse.bench.costs import availability

    chain = availability.online({"p_off": 0.2, "p_on": 0.6}, 2000, 30, seed=1)
    assert chain.mean() == pytest.approx(0.6 / 0.8, abs=0.02)  # the stationary share, from round 1 on
    stay = (chain[1:] & chain[:-1]).sum() / chain[:-1].sum()
    assert stay == pytest.approx(0.8, abs=0.02)  # P(on -> on) = 1 - p_off
    assert np.array_equal(chain, availability.online({"p_off": 0.2, "p_on": 0.6}, 2000, 30, seed=1))
    trace = availability.traced([[0, 2, 3], [2, 1, 1], [2, 4, 9]], clients=3, rounds=4)
    assert trace.tolist() == [[False, True, True], [True, True, False], [True, True, False], [False, True, True]]
    with pytest.raises(ValueError, match="p_off must be in"):
        availability.checked({"p_off": 2, "p_on": 0.5}, None)


def test_a_protocol_that_trains_everyone_refuses_partial_participation(cli, tmp_path):
    suite = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "centralized"\n', clients="4", participation="2")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 2 and "does not support participation = 2" in done.stderr
    bad = write_suite(tmp_path / "t.toml", '[[protocols]]\nname = "fedavg"\n', clients="4", participation="1.5")
    done = cli("run", str(bad), "--out", str(tmp_path / "out2"))
    assert done.returncode == 2 and "participation must be a fraction in (0, 1] or a count" in done.stderr
