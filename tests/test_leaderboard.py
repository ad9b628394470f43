"""Ranking follows each metric's declared direction; statistics and Pareto fronts are exact."""

import math

import pytest

from fedfuse.leaderboard.ranking import group, mark_fronts, pareto_front, rank
from fedfuse.plugins import MetricSpec


def record(label, seed, fid, bytes_up, status="ok", suite="s", digest="d"):
    return {"suite": suite, "suite_version": "1", "suite_digest": digest, "label": label, "dataset": "digits",
            "partitioner": "iid", "profile": "p", "seed": seed, "status": status, "evaluation": {},
            "metrics": {"fid": fid, "bytes_up": bytes_up, "energy_j": 1.0, "client_flops": 1.0}}


SPECS = {"fid": MetricSpec("fid", "", False), "bytes_up": MetricSpec("bytes_up", "B", False),
         "energy_j": MetricSpec("energy_j", "J", False), "client_flops": MetricSpec("client_flops", "FLOP", False)}


def test_mean_std_and_direction():
    records = [record("a", 0, 10.0, 5), record("a", 1, 14.0, 5), record("b", 0, 8.0, 9), record("b", 1, 8.0, 9),
               record("c", 0, 30.0, 1, status="failed")]
    rows = rank(group(records, {"s": "d"}, {"s": 2}), SPECS)
    assert [r.label for r in rows] == ["b", "a", "c"]
    a = rows[1]
    assert a.mean("fid") == 12.0 and a.std("fid") == pytest.approx(math.sqrt(8)) and a.seeds == [0, 1]
    assert rows[2].incomplete and not rows[0].incomplete and "closed" in rows[0].track
    higher = {**SPECS, "fid": MetricSpec("fid", "", True)}  # were higher better, the order flips
    assert [r.label for r in rank(group(records, {}, {}), higher)][:2] == ["a", "b"]
    assert "open" in rank(group(records, {}, {}), higher)[0].track


def test_pareto_front_is_exactly_the_non_dominated_set():
    points = [(1.0, 10.0), (2.0, 5.0), (3.0, 1.0), (2.5, 6.0), (1.0, 11.0), (4.0, 1.0)]
    # lower is better in both: (2.5,6) is dominated by (2,5); (1,11) by (1,10); (4,1) by (3,1)
    assert pareto_front(points, False, False) == [0, 1, 2]
    assert sorted(pareto_front(points, True, True)) == [3, 4, 5]  # (2, 5) < (2.5, 6); (1, 10) < (1, 11)


def test_fronts_are_marked_per_cost():
    rows = group([record("a", 0, 10.0, 5), record("b", 0, 8.0, 9), record("c", 0, 12.0, 7)], {}, {})
    mark_fronts(rows, SPECS)
    marks = {r.label: r.pareto for r in rows}
    assert "bytes" in marks["a"] and "bytes" in marks["b"] and "bytes" not in marks["c"]
