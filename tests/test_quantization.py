"""The codec (unbiased, bounded variance, exact packing) and the energy-efficiency solver."""

import math

import numpy as np
import pytest

from fedfuse.bench.costs.hardware import shipped_profiles
from fedfuse.protocols.ondemand_quant import solver
from fedfuse.protocols.ondemand_quant.task import decode_update, encode_update
from fedfuse.toolkit import quantization as q

PROFILES = {p.name: p for p in shipped_profiles()}


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 7, 8, 11, 13, 16])
def test_packed_size_and_round_trip_bound(bits):
    rng = np.random.default_rng(bits)
    x = rng.standard_normal(10_001).astype(np.float32)
    z = q.encode(x, bits, rng, block=1000)
    assert z.packed.nbytes == math.ceil(10_001 * bits / 8) and z.scales.shape == (11, 2)
    assert z.nbytes == q.packed_size(10_001, bits, 11)
    y = q.decode(z)
    assert y.shape == x.shape and np.all(np.abs(y - x) <= np.repeat(z.scales[:, 1], 1000)[:10_001] + 1e-6)


def test_sixteen_bits_is_exact_within_float_tolerance():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 33)).astype(np.float32)
    assert np.allclose(q.decode(q.encode(x, 16, rng)), x, atol=(x.max() - x.min()) / 65535)


def test_two_bit_rounding_is_unbiased_with_bounded_variance():
    rng = np.random.default_rng(1)
    x = rng.uniform(-1, 1, 64).astype(np.float32)
    draws = np.stack([q.decode(q.encode(x, 2, rng)) for _ in range(4000)])
    bound = q.variance_bound(float(x.max() - x.min()), 2)
    assert np.abs(draws.mean(0) - x).max() < 4 * math.sqrt(bound / 4000)  # mean error -> 0
    assert np.all(draws.var(0) <= bound * 1.1)


def test_update_codec_round_trip_per_tensor_shapes():
    import torch

    before = {"a": torch.zeros(3, 4), "b": torch.ones(5)}
    after = {"a": torch.randn(3, 4), "b": torch.ones(5) * 1.5}
    shapes = {k: tuple(v.shape) for k, v in before.items()}
    for bits in (32, 16):
        out = decode_update(encode_update(before, after, bits, 4096, np.random.default_rng(0)), shapes, bits, 4096)
        assert all(torch.allclose(out[k], after[k] - before[k], atol=1e-3) for k in shapes)


def instance(n: int, seed: int, budgets: bool = False) -> list[solver.ClientProblem]:
    r = np.random.default_rng(seed)
    w = r.random(n)
    w /= w.sum()
    return [solver.ClientProblem(
        flops=float(r.uniform(1e10, 1e11)), params=int(r.integers(100_000, 1_000_000)), weight=float(w[k]),
        device=PROFILES[r.choice(["raspberry-pi-4", "phone-midrange", "jetson-nano", "laptop-cpu"])],
        network=PROFILES[r.choice(["lte", "wifi", "5g-sub6"])], distance_m=float(r.uniform(20, 200)),
        min_bits=int(r.integers(1, 6)), energy_budget_j=float(r.uniform(0.5, 5)) if budgets else math.inf)
        for k in range(n)]


def satisfied(clients, plan, deadline, bound) -> bool:
    err = sum(c.weight**2 * solver.error(o.bits) for c, o in zip(clients, plan))
    ok = err <= bound * (1 + 1e-9)
    for c, o in zip(clients, plan):
        ok &= o.bits >= c.min_bits and o.energy_j <= c.energy_budget_j
        ok &= c.device.cpu_freq_min_hz * (1 - 1e-9) <= o.cpu_freq_hz <= c.device.cpu_freq_max_hz * (1 + 1e-9)
        ok &= 0 < o.tx_power_w <= c.network.tx_power_w * (1 + 1e-9) and o.t_cmp_s + o.t_up_s <= deadline * (1 + 1e-9)
    return bool(ok)


def test_solver_equals_brute_force_on_random_small_instances():
    matched = 0
    for seed in range(60):
        clients = instance(3, seed, budgets=seed % 3 == 0)
        bound = sum(c.weight**2 * solver.error(6) for c in clients)
        try:
            best = solver.brute_force(clients, 5.0, bound, range(1, 11))
        except solver.Infeasible:
            with pytest.raises(solver.Infeasible):
                solver.solve(clients, 5.0, bound, range(1, 11), exact=True)
            continue
        plan = solver.solve(clients, 5.0, bound, range(1, 11), exact=True)
        assert solver.total_energy(plan) == pytest.approx(solver.total_energy(best), rel=1e-9)
        assert satisfied(clients, plan, 5.0, bound)
        greedy = solver.solve(clients, 5.0, bound, range(1, 11), exact=False)
        assert satisfied(clients, greedy, 5.0, bound)
        matched += 1
    assert matched >= 50


def test_operating_point_spends_the_deadline_and_beats_maximum_speed():
    (c,) = instance(1, 7)
    o = solver.operating_points([c], [8], 5.0)[0, 0]
    assert o.t_cmp_s + o.t_up_s == pytest.approx(5.0)
    from fedfuse.bench.costs import costmodel

    flat_out = costmodel.client_cost(c.flops, solver.upload_bits(c, 8) / 8, 0, c.device, c.network, c.distance_m)
    assert o.energy_j < flat_out["energy_j"]


def test_infeasible_instances_name_the_client_and_the_constraint():
    clients = instance(3, 3)
    with pytest.raises(solver.Infeasible, match="client 0: cannot meet the 0.001 s deadline"):
        solver.solve(clients, 0.001, 1.0)
    clients[1] = solver.ClientProblem(**{**clients[1].__dict__, "energy_budget_j": 1e-9})
    with pytest.raises(solver.Infeasible, match="client 1: its energy budget 1e-09 J"):
        solver.solve(clients, 5.0, 1.0)
    clients = instance(3, 3)
    with pytest.raises(solver.Infeasible, match="aggregate quantization error bound"):
        solver.solve(clients, 5.0, 1e-30)
    clients[2] = solver.ClientProblem(**{**clients[2].__dict__, "min_bits": 17})
    with pytest.raises(solver.Infeasible, match="client 2: its demand of 17 bits"):
        solver.solve(clients, 5.0, 1.0)


@pytest.mark.slow
def test_recorded_upload_matches_the_codec_size_for_the_chosen_bits(cli, tmp_path):
    from helpers import write_suite

    protocols = ('[[protocols]]\nname = "ondemand-quant"\nconfig = { model = "tiny", local_steps = 2, deadline_s = 2.0, '
                 'min_bits = [3, 7] }\n[[protocols]]\nname = "fixed-quant"\nconfig = { model = "tiny", local_steps = 2, bits = 4 }\n')
    profiles = '[[profiles]]\nname = "two"\ndevice = ["raspberry-pi-4", "laptop-cpu"]\nnetwork = "wifi"\n'
    suite = write_suite(tmp_path / "s.toml", protocols + profiles, samples="16", sample_steps="2")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    params = sum(v.numel() for v in __import__("fedfuse.toolkit.models", fromlist=["x"]).build_unet(
        (1, 8, 8), "tiny", 0).state_dict().values())
    for record in cli.results(tmp_path / "out"):
        assert record["status"] == "ok", record["error"]
        (rnd,) = record["rounds"]
        for client, plan in rnd["plan"].items():
            expected = q.packed_size(params, plan["bits"], math.ceil(params / 4096))
            assert rnd["per_client"][client]["payload_up"] == expected
            assert rnd["per_client"][client]["bytes_up"] < expected + 4096
        if record["protocol"] == "ondemand-quant":
            assert rnd["plan"]["0"]["bits"] >= 3 and rnd["plan"]["1"]["bits"] >= 7  # the demands hold
            assert rnd["per_client"]["0"]["cpu_freq_hz"] == rnd["plan"]["0"]["cpu_freq_hz"]  # costed as planned
