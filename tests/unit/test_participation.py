"""Partial participation: a suite's ``participation`` trains a seeded draw of the clients each round."""

import pytest


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
