"""The codec (unbiased, bounded variance, exact packing) and the energy-efficiency solver."""

import math

import pytest

from fedfuse.toolkit import quantization as q


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


@pytest.mark.slow
def test_the_two_by_two_levers_and_a_quantized_downlink(cli, tmp_path):
    """The 2x2 of the on-demand study: the same bits at maximum clock and with frequency scaling, and a
    downlink quantized to 4 bits. Frequency scaling never costs more energy; the 4-bit downlink
    sends about an eighth of the model's bytes; static power is charged for the whole round."""
    from helpers import write_suite

    common = 'model = "tiny", local_steps = 2, bits = 8, deadline_s = 20.0'
    protocols = "".join(f'[[protocols]]\nname = "fixed-quant"\nlabel = "{label}"\nconfig = {{ {common}{extra} }}\n'
                        for label, extra in (("max", ""), ("dvfs", ", dvfs = true"), ("down4", ", downlink_bits = 4")))
    profiles = '[[profiles]]\nname = "two"\ndevice = ["raspberry-pi-4", "jetson-nano"]\nnetwork = "wifi"\n'
    suite = write_suite(tmp_path / "s.toml", protocols + profiles, rounds="2", samples="16", sample_steps="2")
    done = cli("run", str(suite), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    cells = {r["label"]: r for r in cli.results(tmp_path / "out")}
    assert all(r["status"] == "ok" for r in cells.values())
    first = {label: r["rounds"][0] for label, r in cells.items()}
    for rnd in first.values():  # static energy: P_static x the round's latency, on every device
        assert rnd["e_static_j"] == pytest.approx((3.0 + 1.5) * rnd["latency_s"])
    dvfs, full = first["dvfs"], first["max"]  # the plan may keep the round as short as at full speed,
    # but never costs more: the devices that are not the slowest slow down to the round's end
    assert dvfs["plan"]["0"]["bits"] == dvfs["plan"]["1"]["bits"] == 8
    assert dvfs["per_client"]["0"]["cpu_freq_hz"] < 1.5e9 or dvfs["per_client"]["1"]["cpu_freq_hz"] < 0.9216e9
    assert dvfs["energy_j"] <= full["energy_j"] * 1.01 and dvfs["latency_s"] >= full["latency_s"] * 0.99
    params = sum(v.numel() for v in __import__("fedfuse.toolkit.models", fromlist=["x"]).build_unet(
        (1, 8, 8), "tiny", 0).state_dict().values())
    down = cells["down4"]["rounds"][1]["per_client"]["0"]["bytes_down"]
    assert q.packed_size(params, 4, math.ceil(params / 4096)) < down < params * 4 / 6
    assert cells["max"]["rounds"][1]["per_client"]["0"]["bytes_down"] > params * 4
    fids = {label: r["metrics"]["fid"] for label, r in cells.items()}
    assert fids["dvfs"] == fids["max"]  # frequency scaling moves costs only: the same model, the same samples
    assert math.isfinite(fids["down4"]) and fids["down4"] != fids["max"]  # clients trained from the 4-bit model
