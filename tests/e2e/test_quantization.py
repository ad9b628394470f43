"""The codec (unbiased, bounded variance, exact packing) and the energy-efficiency solver."""

import math

import pytest

from fedfuse.toolkit import quantization as q


@pytest.fixture
def cells(shared_run, cli) -> dict:
    """The shared run for both tests (helpers.QUANT)."""
    from helpers import plain_run

    out = plain_run(shared_run, "quant")
    return {r["label"]: r for r in cli.results(out)}


def tiny_params() -> int:
    from fedfuse.toolkit.models import build_unet

    return sum(v.numel() for v in build_unet((1, 8, 8), "tiny", 0).state_dict().values())


@pytest.mark.slow
def test_recorded_upload_matches_the_codec_size_for_the_chosen_bits(cells):
    params = tiny_params()
    for record in (cells["ondemand-quant"], cells["fixed4"]):
        assert record["status"] == "ok", record["error"]
        for rnd in record["rounds"]:
            for client, plan in rnd["plan"].items():
                expected = q.packed_size(params, plan["bits"], math.ceil(params / 4096))
                assert rnd["per_client"][client]["payload_up"] == expected
                assert rnd["per_client"][client]["bytes_up"] < expected + 4096
            if record["protocol"] == "ondemand-quant":
                assert rnd["plan"]["0"]["bits"] >= 3 and rnd["plan"]["1"]["bits"] >= 7  # the demands hold
                assert rnd["per_client"]["0"]["cpu_freq_hz"] == rnd["plan"]["0"]["cpu_freq_hz"]  # costed as planned


@pytest.mark.slow
def test_the_two_by_two_levers_and_a_quantized_downlink(cells):
    """The 2x2 of the on-demand study: the same bits at maximum clock and with frequency scaling, and a
    downlink quantized to 4 bits. Frequency scaling never costs more energy; the 4-bit downlink
    sends about an eighth of the model's bytes; static power is charged for the whole round."""
    assert all(r["status"] == "ok" for r in cells.values())
    first = {label: cells[label]["rounds"][0] for label in ("max", "dvfs", "down4")}
    for rnd in first.values():  # static energy: P_static x the round's latency, on every device
        assert rnd["e_static_j"] == pytest.approx((3.0 + 1.5) * rnd["latency_s"])
    dvfs, full = first["dvfs"], first["max"]  # the plan may keep the round as short as at full speed,
    # but never costs more: the devices that are not the slowest slow down to the round's end
    assert dvfs["plan"]["0"]["bits"] == dvfs["plan"]["1"]["bits"] == 8
    assert dvfs["per_client"]["0"]["cpu_freq_hz"] < 1.5e9 or dvfs["per_client"]["1"]["cpu_freq_hz"] < 0.9216e9
    assert dvfs["energy_j"] <= full["energy_j"] * 1.01 and dvfs["latency_s"] >= full["latency_s"] * 0.99
    params = tiny_params()
    down = cells["down4"]["rounds"][1]["per_client"]["0"]["bytes_down"]
    assert q.packed_size(params, 4, math.ceil(params / 4096)) < down < params * 4 / 6
    assert cells["max"]["rounds"][1]["per_client"]["0"]["bytes_down"] > params * 4
    fids = {label: cells[label]["metrics"]["fid"] for label in ("max", "dvfs", "down4")}
    assert fids["dvfs"] == fids["max"]  # frequency scaling moves costs only: the same model, the same samples
    assert math.isfinite(fids["down4"]) and fids["down4"] != fids["max"]  # clients trained from the 4-bit model
