"""`fedfuse profile measure`: a device profile from a measurement that the harness loads, that
says where each value came from, and that a suite uses through `profile_files`."""

import re
import time
import tomllib
from pathlib import Path

import pytest
import torch
from helpers import write_suite

from fedfuse.bench.cli.main import main
from fedfuse.bench.costs import costmodel, machine
from fedfuse.bench.costs.costing import CellHardware
from fedfuse.bench.costs.hardware import DeviceProfile, parse_profiles
from fedfuse.bench.suites.expand import expand
from fedfuse.bench.suites.parse import load_suite
from fedfuse.plugins.config import ConfigError
from fedfuse.plugins.manager import registry

TINY = ["--preset", "tiny", "--side", "8", "--batch-size", "16", "--steps", "2", "--warmup", "1", "--threads", "1",
        "--idle-s", "0.2"]


@pytest.fixture(autouse=True)
def torch_threads():
    """--threads changes the process's torch threads: give the other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class FakeRapl(machine.PackageEnergy):
    """A package counter of 3 W plus 20 W per busy CPU-second of this process: idle power while
    the command sleeps, more while it trains (RAPL itself needs root and bare metal)."""

    def read(self) -> tuple[int, ...]:
        return (int((3 * time.perf_counter() + 20 * time.process_time()) * 1e6) % self.ranges[0],)


def measure(tmp_path: Path, *extra: str) -> tuple[DeviceProfile, str]:
    out = tmp_path / "my-box.toml"
    assert main(["profile", "measure", "my-box", *TINY, "--out", str(out), *extra]) == 0
    text = out.read_text()
    [profile] = parse_profiles(tomllib.loads(text)["devices"], DeviceProfile, str(out))  # the harness's loader
    return profile, text


def comments_of(text: str) -> dict[str, str]:
    """Each value's key -> the comment line just above it."""
    lines = text.splitlines()
    return {line.split(" = ")[0]: lines[i - 1] for i, line in enumerate(lines) if " = " in line and i
            and not line.startswith("#")}


def test_measured_profile_loads_and_a_suite_reproduces_the_step_time(tmp_path, monkeypatch):
    zone = Path("/sys/class/powercap/intel-rapl:0")
    monkeypatch.setattr(machine, "package_energy", lambda root: FakeRapl((zone,), (2**40,)))
    profile, text = measure(tmp_path)
    assert 0 < profile.flops_per_cycle < 1e4 and 1e8 < profile.cpu_freq_min_hz <= profile.cpu_freq_max_hz < 1e10
    assert 1e8 < profile.memory_bytes < 1e14 and 2 < profile.static_power_w < 5  # the fake's 3 W at rest
    assert profile.kappa > 0
    comments = comments_of(text)
    for key in ("flops_per_cycle", "cpu_freq_min_hz", "cpu_freq_max_hz", "kappa", "static_power_w", "memory_bytes"):
        assert comments[key].startswith("# measured ") and "torch " in comments[key], comments[key]
    assert "RAPL" in comments["kappa"] and "RAPL" in comments["static_power_w"]
    flops, seconds = map(float, re.search(r"([0-9.e+]+) FLOPs per step .* / ([0-9.e+-]+) s per step",
                                          comments["flops_per_cycle"]).groups())

    suite = write_suite(tmp_path / "suite.toml", '[[profiles]]\nname = "mine"\ndevice = "my-box"\nnetwork = "wifi"\n'
                        '[[protocols]]\nname = "fedavg"\nconfig = { local_steps = 2, model = "tiny" }\n',
                        top='profile_files = ["my-box.toml"]\n')
    [cell] = expand(load_suite(str(suite)), registry())
    hardware = CellHardware.for_cell(cell, registry())
    assert hardware.devices["my-box"] == profile
    # the cost model at f_max gives back the measured step time (up to the comment's 4 digits)
    assert costmodel.compute_time(flops, hardware.devices["my-box"]) == pytest.approx(seconds, rel=2e-3)


def test_without_rapl_the_power_figures_are_given_and_say_so(tmp_path, monkeypatch):
    def absent(root):
        raise machine.Unavailable("no powercap in this test")

    monkeypatch.setattr(machine, "package_energy", absent)
    assert main(["profile", "measure", "my-box", *TINY, "--out", str(tmp_path / "x.toml")]) == 2
    assert not (tmp_path / "x.toml").exists()  # refused before timing: no half-made profile

    profile, text = measure(tmp_path, "--static-power-w", "2", "--load-power-w", "10")
    assert profile.static_power_w == 2 and profile.kappa == pytest.approx(8 / profile.cpu_freq_max_hz**3, rel=1e-5)
    comments = comments_of(text)
    assert comments["static_power_w"].startswith("# given on the command line") and "not measured" in comments["kappa"]
    assert "no powercap in this test" in text and comments["flops_per_cycle"].startswith("# measured ")


def test_machine_readers_on_a_fake_sys(tmp_path):
    cpu = tmp_path / "sys/devices/system/cpu"
    for i, (low, high) in enumerate([(600000, 1500000), (600000, 1800000)]):
        (cpu / f"cpu{i}/cpufreq").mkdir(parents=True)
        (cpu / f"cpu{i}/cpufreq/cpuinfo_min_freq").write_text(f"{low}\n")
        (cpu / f"cpu{i}/cpufreq/cpuinfo_max_freq").write_text(f"{high}\n")
    assert machine.clock_range(tmp_path)[:2] == (6e8, 1.8e9)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/cpuinfo").write_text("processor\t: 0\nmodel name\t: Some CPU\ncpu MHz\t\t: 2400.5\n")
    assert machine.cpu_model(tmp_path) == "Some CPU"
    with pytest.raises(machine.Unavailable, match="powercap is absent"):
        machine.package_energy(tmp_path)
    rapl = tmp_path / "sys/class/powercap"
    zones = [("intel-rapl:0", "package-0", 900), ("intel-rapl:0:0", "core", 5), ("intel-rapl:1", "psys", 7)]
    for zone, name, energy in zones:
        (rapl / zone).mkdir(parents=True)
        for file, value in [("name", name), ("energy_uj", energy), ("max_energy_range_uj", 1000)]:
            (rapl / zone / file).write_text(f"{value}\n")
    meter = machine.package_energy(tmp_path)
    assert [z.name for z in meter.zones] == ["intel-rapl:0"]  # packages only: not their sub-zones, not psys
    assert meter.read() == (900,) and meter.joules((900,), (100,)) == pytest.approx(200e-6)  # wrapped at 1000


def test_profile_files_errors(tmp_path):
    (tmp_path / "p.toml").write_text('[devices.b]\ndescription = "x"\n')
    (tmp_path / "bad.toml").write_text('[b]\ndescription = "x"\n')
    cases = [("missing.toml", "", "not found"), ("bad.toml", "", "unknown key 'b'"),
             ("p.toml", '[devices.b]\ndescription = "y"\n', "defined again")]
    for file, extra, message in cases:
        write_suite(tmp_path / "s.toml", '[[protocols]]\nname = "fedavg"\n' + extra, top=f'profile_files = ["{file}"]\n')
        with pytest.raises(ConfigError, match=message):
            load_suite(str(tmp_path / "s.toml"))
