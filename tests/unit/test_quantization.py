"""The codec (unbiased, bounded variance, exact packing) and the energy-efficiency solver."""

import dataclasses
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


# The codec's compiled kernels against a plain numpy statement of the format (bit planes through
# np.packbits, little-endian bit order; scales as numpy computes them) given the same draws.
def reference_encode(x: np.ndarray, bits: int, rng: np.random.Generator, block: int | None) -> q.Quantized:
    flat = np.ascontiguousarray(x, dtype=np.float32).ravel()
    block = min(block or flat.size, flat.size) or 1
    key = rng.integers(0, 2**64, dtype=np.uint64)  # what encode takes from rng: one 64-bit key
    padded = np.pad(flat, (0, -flat.size % block), mode="edge").reshape(-1, block)
    lo = padded.min(axis=1, keepdims=True)
    step = (padded.max(axis=1, keepdims=True) - lo) / (2**bits - 1)
    u = np.pad(q.uniforms(key, 0, flat.size), (0, -flat.size % block)).reshape(padded.shape)
    level = (padded - lo) / np.where(step > 0, step, 1).astype(np.float32) + u
    ints = np.minimum(np.floor(level), 2**bits - 1).astype(np.uint32).ravel()[: flat.size]
    planes = ((ints[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return q.Quantized(np.packbits(planes.ravel(), bitorder="little"), np.concatenate([lo, step], axis=1),
                       tuple(np.shape(x)), bits, block)


def reference_decode(z: q.Quantized) -> np.ndarray:
    n = int(np.prod(z.shape))
    planes = np.unpackbits(z.packed, count=n * z.bits, bitorder="little").reshape(n, z.bits).astype(np.uint32)
    ints = (planes @ (np.uint32(1) << np.arange(z.bits, dtype=np.uint32))).astype(np.float32)
    ints = np.pad(ints, (0, -n % z.block)).reshape(-1, z.block)
    return (z.scales[:, :1] + ints * z.scales[:, 1:]).ravel()[:n].reshape(z.shape)


@pytest.mark.parametrize("bits", range(1, q.MAX_BITS + 1))
def test_kernels_equal_the_numpy_statement_of_the_format_bit_for_bit(bits):
    # sizes and blocks that reach every path: ragged tails, blocks inside and across the kernels'
    # chunks (fused scales or not), per-tensor scales, a block of one, constant runs
    for n, block in [(1, None), (13, 4), (4097, 4096), (70_001, 4096), (70_001, 1000), (70_001, 1001),
                     (70_001, 40_000), (70_001, None), (300, 1)]:
        rng = np.random.default_rng(1000 * bits + n)
        x = (rng.standard_normal(n) * 3).astype(np.float32)
        x[: min(n, 50)] = 0.25
        z, ref = q.encode(x, bits, np.random.default_rng(bits), block), reference_encode(x, bits, np.random.default_rng(bits), block)
        assert z.block == ref.block and z.packed.dtype == np.uint8 and z.scales.dtype == np.float32
        assert np.array_equal(z.scales.view(np.int32), ref.scales.view(np.int32)), (n, block)
        assert np.array_equal(z.packed, ref.packed), (n, block)
        assert np.array_equal(q.decode(z).view(np.int32), reference_decode(z).view(np.int32)), (n, block)


def test_packing_by_hand_three_bits():
    # values 1, 7, 2 at 3 bits: bits 0-2 = 001, 3-5 = 111, 6-8 = 010 -> 0b10_111_001 = 185, then 0
    z = q.Quantized(np.array([185, 0], np.uint8), np.array([[0.0, 1.0]], np.float32), (3,), 3, 3)
    assert q.decode(z).tolist() == [1.0, 7.0, 2.0]
    z = q.encode(np.array([0.0, 7.0, 2.0], np.float32), 3, np.random.default_rng(0))  # on the grid: lo 0, step 1
    assert z.packed.tolist() == [184, 0] and z.scales.tolist() == [[0.0, 1.0]]  # 0b10_111_000
    assert q.decode(z).tolist() == [0.0, 7.0, 2.0]


def test_encode_is_a_pure_function_of_the_rng_and_not_of_the_thread_count():
    import numba

    x = np.random.default_rng(0).standard_normal(200_003).astype(np.float32)
    rng = np.random.default_rng(7)
    first = q.encode(x, 5, rng, 4096)
    assert not np.array_equal(q.encode(x, 5, rng, 4096).packed, first.packed)  # the next call draws anew
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        alone = q.encode(x, 5, np.random.default_rng(7), 4096)
    finally:
        numba.set_num_threads(threads)
    assert np.array_equal(alone.packed, first.packed) and np.array_equal(alone.scales, first.scales)
    rng, copy = np.random.default_rng(7), np.random.default_rng(7)
    q.encode(x, 5, rng, 4096)
    copy.integers(0, 2**64, dtype=np.uint64)
    assert rng.random() == copy.random()  # encode took exactly one 64-bit key from rng


def test_draws_are_uniform_on_a_24_bit_grid():
    u = q.uniforms(12345, 0, 1 << 20)
    assert u.dtype == np.float32 and u.min() >= 0 and u.max() < 1
    assert np.all(u * 2**24 == np.floor(u * 2**24))
    assert np.array_equal(q.uniforms(12345, 1000, 10), u[1000:1010])  # counter-based: draw i depends on i alone
    counts = np.histogram(u, bins=64, range=(0, 1))[0]
    expected = u.size / 64
    assert ((counts - expected) ** 2 / expected).sum() < 120  # chi-square, 63 degrees of freedom (p ~ 1e-5)
    pairs = np.histogram2d(u[:-1], u[1:], bins=16, range=[[0, 1], [0, 1]])[0]  # neighbours independent
    expected = (u.size - 1) / 256
    assert ((pairs - expected) ** 2 / expected).sum() < 340  # 255 degrees of freedom (p ~ 1e-5)


@pytest.mark.parametrize("bits", [1, 3, 8])
def test_rounding_up_happens_as_often_as_the_fraction_says(bits):
    # one value per fraction f of a step, a million times over: the share rounded up is f (unbiased)
    n, levels = 1 << 20, 2**bits - 1
    fractions = np.array([0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 0.999])
    x = np.empty(n * len(fractions) + 2, np.float32)
    x[0], x[1] = 0, levels  # range [0, L]: a step of 1
    x[2:] = np.repeat(np.float32(1) + fractions.astype(np.float32), n)
    y = q.decode(q.encode(x, bits, np.random.default_rng(bits), None))[2:].reshape(len(fractions), n)
    share = (y - 1).mean(axis=1)
    assert np.all(np.abs(share - fractions) < 5 * np.sqrt(0.25 / n) + 1e-6), share


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input_gives_non_finite_scales_as_before(bad):
    # as numpy's min/max did: the receiver's check of finite values then refuses the payload
    x = np.zeros(20_000, np.float32)
    x[5_000] = bad
    z = q.encode(x, 3, np.random.default_rng(0), 4096)
    assert not np.isfinite(z.scales[1]).all() and np.isfinite(z.scales[[0, 2, 3, 4]]).all()
    assert z.packed.size == math.ceil(20_000 * 3 / 8) and z.packed[: 4096 * 3 // 8].tolist() == [0] * 1536
    assert np.isfinite(q.decode(z)[8192:]).all()
    z = q.encode(np.array([-3e38, 3e38], np.float32), 4, np.random.default_rng(0))  # range beyond float32
    assert not np.isfinite(z.scales).all()


def test_empty_and_short_payloads():
    z = q.encode(np.zeros(0, np.float32), 4, np.random.default_rng(0))
    assert z.packed.size == 0 and q.decode(z).shape == (0,)
    z = q.encode(np.arange(100, dtype=np.float32), 7, np.random.default_rng(0), 10)
    with pytest.raises(ValueError, match="too few"):
        q.decode(dataclasses.replace(z, packed=z.packed[:-1]))


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
    devices = [PROFILES[r.choice(["raspberry-pi-4", "phone-midrange", "jetson-nano", "laptop-cpu"])] for _ in range(n)]
    return [solver.ClientProblem(
        flops=float(r.uniform(1e10, 1e11)), params=int(r.integers(100_000, 1_000_000)), weight=float(w[k]),
        device=devices[k], network=PROFILES[r.choice(["lte", "wifi", "5g-sub6"])], distance_m=float(r.uniform(20, 200)),
        min_bits=int(r.integers(1, 6)),  # a budget covers the static energy of a 5 s round, and 0.5-5 J more
        energy_budget_j=float(r.uniform(0.5, 5)) + devices[k].static_power_w * 5.0 if budgets else math.inf)
        for k in range(n)]


def satisfied(clients, plan, deadline, bound) -> bool:
    err = sum(c.weight**2 * solver.error(o.bits) for c, o in zip(clients, plan))
    ok = err <= bound * (1 + 1e-9)
    for c, o in zip(clients, plan):
        ok &= o.bits >= c.min_bits and o.energy_j + c.device.static_power_w * deadline <= c.energy_budget_j
        ok &= c.device.cpu_freq_min_hz * (1 - 1e-9) <= o.cpu_freq_hz <= c.device.cpu_freq_max_hz * (1 + 1e-9)
        ok &= 0 < o.tx_power_w <= c.network.tx_power_w * (1 + 1e-9) and o.t_cmp_s + o.t_up_s <= deadline * (1 + 1e-9)
    return bool(ok)


def test_solver_equals_brute_force_on_random_small_instances():
    """At a given round length (the dynamic problem), the exact solver is brute force."""
    matched = 0
    for seed in range(60):
        clients = instance(3, seed, budgets=seed % 3 == 0)
        bound = sum(c.weight**2 * solver.error(6) for c in clients)
        try:
            best = solver.brute_force(clients, 5.0, bound, range(1, 11))
        except solver.Infeasible:
            with pytest.raises(solver.Infeasible):
                solver.solve_at(clients, 5.0, bound, range(1, 11), exact=True)
            continue
        plan = solver.solve_at(clients, 5.0, bound, range(1, 11), exact=True)
        assert solver.total_energy(plan) == pytest.approx(solver.total_energy(best), rel=1e-9)
        assert satisfied(clients, plan, 5.0, bound)
        greedy = solver.solve_at(clients, 5.0, bound, range(1, 11), exact=False)
        assert satisfied(clients, greedy, 5.0, bound)
        matched += 1
    assert matched >= 50


def test_with_static_power_the_round_length_is_as_good_as_brute_force_over_lengths():
    """Static power makes the round length a decision: the solver's plan (compute, upload and
    static energy) is at least as good as brute force over every bit combination at each of 120
    round lengths, and not below what those lengths allow (it cannot beat the optimum)."""
    lengths, matched = 5.0 * np.geomspace(1 / 256, 1, 120), 0
    for seed in range(8):
        clients = instance(3, seed)
        assert solver.static_power(clients) > 0  # the shipped devices draw static power
        bound = sum(c.weight**2 * solver.error(5) for c in clients)
        brute = []
        for T in lengths:
            try:
                brute.append(solver.plan_energy(clients, solver.brute_force(clients, T, bound, range(1, 7))))
            except solver.Infeasible:
                continue
        if not brute:
            continue
        plan = solver.solve(clients, 5.0, bound, range(1, 7), exact=True)
        energy = solver.plan_energy(clients, plan)
        assert min(brute) * (1 - 0.03) <= energy <= min(brute) * (1 + 1e-6)
        assert satisfied(clients, plan, solver.round_length(plan), bound)
        assert len({round(o.t_cmp_s + o.t_up_s, 9) for o in plan}) == 1  # everyone ends with the round
        matched += 1
    assert matched >= 6


def test_static_power_shortens_the_round():
    """Without static power the plan spends the whole deadline; with much of it, a shorter round
    that runs the clocks faster spends less in all."""
    clients = instance(3, 1)
    bound = sum(c.weight**2 * solver.error(5) for c in clients)
    idle = [solver.ClientProblem(**{**c.__dict__, "device": dataclasses.replace(c.device, static_power_w=0.0)})
            for c in clients]
    assert solver.round_length(solver.solve(idle, 5.0, bound)) == pytest.approx(5.0)
    hungry = [solver.ClientProblem(**{**c.__dict__, "device": dataclasses.replace(c.device, static_power_w=50.0)})
              for c in clients]
    plan = solver.solve(hungry, 5.0, bound)
    assert solver.round_length(plan) < 4.0
    assert solver.plan_energy(hungry, plan) < solver.plan_energy(hungry, solver.solve_at(hungry, 5.0, bound))


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


def test_fixed_bits_per_client_are_planned_as_given_with_or_without_dvfs():
    """fixed-quant's per-client bits (a baseline at each client's demand): the DVFS plan keeps each
    client at its own bit-width (fewer bits never cost more), and a list of the wrong length or a
    bit-width outside 1..16 and 32 is refused."""
    from fedfuse.protocols.ondemand_quant.plugin import FixedConfig

    bits = (4, 6, 6, 32)
    clients = [solver.ClientProblem(**{**c.__dict__, "min_bits": b}) for c, b in zip(instance(4, 2), bits)]
    plan = solver.solve(clients, 60.0, math.inf, sorted(set(bits)))
    assert [o.bits for o in plan] == list(bits)
    cfg = FixedConfig(bits=bits)
    assert cfg.bit_list == bits and FixedConfig(bits=6).bit_list == (6,)
    cfg.check_clients(4)
    with pytest.raises(ValueError, match="one for each of the 3"):
        cfg.check_clients(3)
    with pytest.raises(ValueError, match="'bits' must be in 1..16 or 32"):
        FixedConfig(bits=(4, 17))
