"""Cost model, FLOP counting and profiles: closed forms, scaling, sources."""

import math
import re
from importlib import resources

import pytest
import torch

from fedfuse.bench.costs import costmodel
from fedfuse.bench.costs.costing import CellHardware
from fedfuse.bench.costs.flops import FlopMeter
from fedfuse.bench.costs.hardware import DeviceProfile, NetworkProfile, pick
from fedfuse.bench.suites.cells import CellSpec
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import registry
from fedfuse.protocols.fedavg import task

DEVICE = DeviceProfile("dev", "test", flops_per_cycle=8, cpu_freq_min_hz=1e8, cpu_freq_max_hz=1e9, kappa=1e-27,
                       memory_bytes=1e9)


LINK = NetworkProfile("net", "test", bandwidth_hz=1e6, tx_power_w=0.1, server_tx_power_w=1.0,
                      noise_psd_w_per_hz=1e-20, path_loss="log-distance", pl_ref_db=100.0, pl_exponent=3.0,
                      distance_min_m=100.0, distance_max_m=100.0)


def test_hand_computed_case():
    # 8e9 FLOPs at 8 FLOP/cycle and 1 GHz: 1e9 cycles = 1 s; E = 1e-27 * 1e9 * (1e9)^2 = 1 J.
    assert costmodel.compute_time(8e9, DEVICE) == pytest.approx(1.0)
    assert costmodel.compute_energy(8e9, DEVICE) == pytest.approx(1.0)
    # d = 100 m: PL = 100 + 30 * log10(0.1) = 70 dB, g = 1e-7; SNR = 0.1 * 1e-7 / (1e-20 * 1e6) = 1e6.
    assert costmodel.path_gain(LINK, 100.0) == pytest.approx(1e-7)
    rate = 1e6 * math.log2(1 + 1e6)
    assert costmodel.uplink_rate(LINK, 100.0) == pytest.approx(rate)
    cost = costmodel.client_cost(8e9, bytes_up=1e6, bytes_down=0, device=DEVICE, network=LINK, distance_m=100.0)
    assert cost["t_up_s"] == pytest.approx(8e6 / rate) and cost["e_up_j"] == pytest.approx(0.1 * 8e6 / rate)
    assert cost["latency_s"] == pytest.approx(1.0 + 8e6 / rate) and cost["energy_j"] == pytest.approx(1 + 0.1 * 8e6 / rate)


def test_scaling_laws():
    base = costmodel.client_cost(1e9, 1e6, 1e6, DEVICE, LINK, 150.0, f=5e8)
    faster = costmodel.client_cost(1e9, 1e6, 1e6, DEVICE, LINK, 150.0, f=1e9)
    assert faster["t_cmp_s"] == pytest.approx(base["t_cmp_s"] / 2)
    assert faster["e_cmp_j"] == pytest.approx(base["e_cmp_j"] * 4)
    snr = 2 ** (8e6 / (LINK.bandwidth_hz * base["t_up_s"])) - 1  # read back from the base's upload time
    assert snr == pytest.approx(0.1 * costmodel.path_gain(LINK, 150.0) / (LINK.noise_psd_w_per_hz * 1e6))
    wide = NetworkProfile(**{**LINK.__dict__, "bandwidth_hz": 2e6})  # twice the band: half the SNR
    assert costmodel.client_cost(1e9, 1e6, 1e6, DEVICE, wide, 150.0)["t_up_s"] == pytest.approx(8e6 / (2e6 * math.log2(1 + snr / 2)))
    far = costmodel.client_cost(1e9, 1e6, 1e6, DEVICE, LINK, 300.0, f=5e8)  # twice as far: 2^exponent less gain
    assert far["t_up_s"] == pytest.approx(8e6 / (1e6 * math.log2(1 + snr / 2 ** LINK.pl_exponent)))
    assert far["t_cmp_s"] == base["t_cmp_s"]
    louder = costmodel.client_cost(1e9, 1e6, 1e6, DEVICE, LINK, 150.0, f=5e8, power_w=0.2)
    assert louder["t_up_s"] == pytest.approx(8e6 / (1e6 * math.log2(1 + 2 * snr)))
    assert louder["e_up_j"] == pytest.approx(0.2 * louder["t_up_s"])  # the power it sent at, not the profile's


def test_round_latency_is_the_slow_clients_time():
    profile = {"name": "mix", "device": ["raspberry-pi-4", "edge-gpu-t4"], "network": "wifi", "server": "edge-gpu-t4"}
    cell = CellSpec("s", "1", "x", "x", "1", {}, "digits", {}, "iid", {}, profile, clients=2, rounds=1, seed=0)
    hw = CellHardware.for_cell(cell, registry())
    traffic = {i: {"bytes_down": 1e6, "bytes_up": 1e6, "payload_down": 0, "payload_up": 0,
                   "flops_train": 1e12, "flops_sample": 0.0} for i in (0, 1)}
    record = hw.round_figures(traffic, server_flops=0.0, points={})
    slow, fast = record["per_client"]["0"], record["per_client"]["1"]
    assert slow["t_cmp_s"] > 50 * fast["t_cmp_s"]
    assert record["latency_s"] == pytest.approx(slow["latency_s"])
    assert record["slowest_client_s"] == pytest.approx(slow["t_cmp_s"] + slow["t_up_s"])
    assert record["slowest_client_s"] < record["latency_s"]  # the download and the server's time are not in it
    assert record["energy_j"] == pytest.approx(slow["energy_j"] + fast["energy_j"])
    assert record["client_flops"] == 2e12


def test_mixes_follow_their_shares_and_are_seeded():
    import numpy as np

    mix = {"raspberry-pi-4": 0.25, "laptop-cpu": 0.75}
    drawn = pick(mix, 8, np.random.default_rng(1), "device")
    assert sorted(drawn).count("raspberry-pi-4") == 2 and len(drawn) == 8
    assert drawn == pick(mix, 8, np.random.default_rng(1), "device")
    with pytest.raises(ConfigError, match="sum to 1"):
        pick({"a": 0.5, "b": 0.6}, 4, np.random.default_rng(0), "device")
    with pytest.raises(ConfigError, match="2 entries for 3 clients"):
        pick(["a", "b"], 3, np.random.default_rng(0), "device")


def test_training_flops_scale_with_batch_size():
    from fedfuse.toolkit.ddpm import diffusion_loss

    model, scheduler = task.build_model((1, 8, 8), "tiny", seed=0), task.build_scheduler(50)
    counts = {}
    for batch in (8, 16, 32):
        meter = FlopMeter()
        with meter.step("train", batch):
            diffusion_loss(model, scheduler, torch.zeros(batch, 1, 8, 8), torch.Generator()).backward()
        counts[batch] = meter.take()["flops_train"]
    assert counts[8] > 0
    assert counts[16] / counts[8] == pytest.approx(2, rel=0.05)
    assert counts[32] / counts[8] == pytest.approx(4, rel=0.05)


def test_flop_meter_measures_once_and_multiplies():
    meter, x = FlopMeter(), torch.randn(4, 16)
    weight = torch.randn(16, 16)
    for _ in range(5):
        with meter.step("sample", x.shape):
            x @ weight
    assert meter.take() == {"flops_train": 0.0, "flops_sample": 5 * 2 * 4 * 16 * 16}
    assert meter.take()["flops_sample"] == 0.0  # take() resets
    assert len(meter.per_step) == 1


def test_every_shipped_profile_value_has_a_source_comment():
    folder = resources.files("fedfuse.bench.costs") / "profiles"
    for name in ("devices.toml", "networks.toml"):
        lines = (folder / name).read_text().splitlines()
        is_value = [bool(re.match(r"^\s*[a-z_]+\s*=", line)) for line in lines]
        for i, line in enumerate(lines):
            if re.match(r"^\s*[a-z_]+\s*=\s*[-0-9.]", line):  # a number: its block starts below a comment
                start = i
                while start > 0 and is_value[start - 1]:
                    start -= 1
                assert lines[start - 1].lstrip().startswith("#"), f"{name}:{i + 1} has no source comment: {line}"
    profiles = registry().entries("profiles")
    kinds = {n: e.spec.kind for n, e in profiles.items()}
    assert sum(k == "device" for k in kinds.values()) >= 5 and sum(k == "network" for k in kinds.values()) >= 4


def test_unknown_profile_in_a_suite_is_a_config_error(tmp_path):
    from helpers import write_suite

    from fedfuse.bench.suites.expand import expand
    from fedfuse.bench.suites.parse import load_suite

    path = write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\n[[profiles]]\nname = "x"\n'
                       'device = "toaster"\nnetwork = "lte"\n')
    with pytest.raises(ConfigError, match="unknown device profile 'toaster'; available: edge-gpu-t4"):
        expand(load_suite(str(path)), registry())
    inline = ('[[protocols]]\nname = "fedavg"\n[[profiles]]\nname = "mine"\ndevice = "toaster"\nnetwork = "lte"\n'
              '[devices.toaster]\ndescription = "a toaster"\nflops_per_cycle = 2\ncpu_freq_min_hz = 1e8\n'
              'cpu_freq_max_hz = 2e8\nkappa = 1e-27\nmemory_bytes = 1e8\n')
    cells = expand(load_suite(str(write_suite(tmp_path / "t.toml", inline))), registry())
    assert cells[0].profile["inline"]["devices"]["toaster"]["flops_per_cycle"] == 2


def test_to_target_sums_what_was_spent_until_the_first_round_that_met_it():
    from fedfuse.bench.metrics.target import to_target

    rounds = [{"round": 1, "energy_j": 2.0, "latency_s": 1.0, "bytes_up": 10, "bytes_down": 5},
              {"round": 2, "energy_j": 3.0, "latency_s": 2.0, "bytes_up": 10, "bytes_down": 5, "target_fid": 80.0},
              {"round": 3, "energy_j": 4.0, "latency_s": 3.0, "bytes_up": 10, "bytes_down": 5, "target_fid": 30.0},
              {"round": 4, "phase": "sampling", "energy_j": 9.0, "target_fid": 1.0}]
    assert to_target(rounds, {"fid": 40}) == {"target_reached": 1.0, "rounds_to_target": 3.0, "bytes_to_target": 45.0,
                                              "energy_to_target_j": 9.0, "latency_to_target_s": 6.0}
    assert to_target(rounds, {"fid": 10}) == {"target_reached": 0.0}  # the sampling phase does not count
    assert to_target(rounds, {}) == {}


def test_a_client_that_misses_the_deadline_works_until_it_pro_rata():
    cost = {"t_down_s": 1.0, "t_cmp_s": 4.0, "t_up_s": 2.0, "latency_s": 7.0, "e_cmp_j": 8.0, "e_up_j": 1.0,
            "energy_j": 9.0}
    cut = costmodel.cut_at_deadline(cost, 3.0)  # 1 s receiving, 2 of 4 s computing, no upload
    assert (cut["t_down_s"], cut["t_cmp_s"], cut["t_up_s"], cut["latency_s"]) == (1.0, 2.0, 0.0, 3.0)
    assert (cut["e_cmp_j"], cut["e_up_j"], cut["energy_j"]) == (4.0, 0.0, 4.0)
    assert costmodel.cut_at_deadline(cost, 6.0)["e_up_j"] == 0.5  # half the upload


def test_round_figures_fold_into_the_cells_by_their_spec():
    """Bytes, time and energy add up over rounds; the slowest client is the worst round's."""
    from fedfuse.bench.engine.runner import metric_specs, totals

    specs, measured = metric_specs(registry())
    rounds = [{"latency_s": 5.0, "slowest_client_s": 3.0}, {"latency_s": 6.0, "slowest_client_s": 7.0},
              {"latency_s": 4.0, "slowest_client_s": 2.0}]
    assert totals(rounds, specs) == {"latency_s": 15.0, "slowest_client_s": 7.0}
    assert {"latency_s", "slowest_client_s"} <= measured  # no protocol's final figure replaces them


def test_a_protocols_final_figures_cannot_replace_the_harness_measured_or_target_ones():
    from types import SimpleNamespace

    from fedfuse.bench.engine.runner import final_metrics, metric_specs

    specs, measured = metric_specs(registry())
    rounds = [{"round": 1, "energy_j": 2.0, "latency_s": 1.0, "bytes_up": 10, "bytes_down": 5, "target_fid": 30.0}]
    run = SimpleNamespace(rounds=rounds, cell=SimpleNamespace(evaluation={"target": {"fid": 40}}, dp={}))
    claimed = {"energy_j": 0.0, "energy_to_target_j": 0.0, "rounds_to_target": 0.0, "target_reached": 1.0, "fid": 12.0}
    metrics = final_metrics(run, claimed, specs, measured)
    assert (metrics["energy_j"], metrics["energy_to_target_j"], metrics["rounds_to_target"]) == (2.0, 2.0, 1.0)
    assert metrics["fid"] == 12.0  # what the harness's scoring returns with the loop's figures stands
    run.cell.evaluation["target"]["fid"] = 20.0  # not met: the loop cannot claim it was, nor a cost to reach it
    metrics = final_metrics(run, {**claimed, "target_fid": 10.0}, specs, measured)
    assert metrics["target_reached"] == 0.0 and metrics["target_fid"] == 30.0
    assert not {"energy_to_target_j", "rounds_to_target"} & set(metrics)
