"""Hardware profiles (devices, networks) and their assignment to a cell's clients.

Shipped profiles live in ``fedfuse/bench/costs/profiles/*.toml`` with a source for every value;
plugins add more through ``fedfuse_add_profiles``, and a suite may define its own inline.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources

import numpy as np

from fedfuse.plugins.config import ConfigError, build_config


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    flops_per_cycle: float
    cpu_freq_min_hz: float
    cpu_freq_max_hz: float
    kappa: float
    memory_bytes: float
    static_power_w: float = 0.0  # drawn while awake, whatever the clock: idle power of the board
    kind: str = "device"

    def __post_init__(self):
        if not 0 < self.cpu_freq_min_hz <= self.cpu_freq_max_hz or self.flops_per_cycle <= 0 or self.kappa <= 0:
            raise ValueError(f"device '{self.name}': need 0 < cpu_freq_min_hz <= cpu_freq_max_hz, "
                             "flops_per_cycle > 0 and kappa > 0")
        if self.static_power_w < 0:
            raise ValueError(f"device '{self.name}': static_power_w must be >= 0, got {self.static_power_w}")


@dataclass(frozen=True)
class NetworkProfile:
    name: str
    description: str
    bandwidth_hz: float
    tx_power_w: float
    server_tx_power_w: float
    noise_psd_w_per_hz: float
    path_loss: str
    pl_ref_db: float
    pl_exponent: float
    distance_min_m: float
    distance_max_m: float
    kind: str = "network"

    def __post_init__(self):
        if self.path_loss != "log-distance":
            raise ValueError(f"network '{self.name}': path_loss must be 'log-distance'")
        if not 0 < self.distance_min_m <= self.distance_max_m or min(self.bandwidth_hz, self.tx_power_w) <= 0:
            raise ValueError(f"network '{self.name}': need 0 < distance_min_m <= distance_max_m, "
                             "bandwidth_hz > 0 and tx_power_w > 0")


def parse_profiles(doc: dict, cls: type, where: str) -> list:
    return [build_config(cls, {"name": name, **values}, f"{where} [{name}]") for name, values in doc.items()]


def shipped_profiles() -> list:
    folder = resources.files("fedfuse.bench.costs") / "profiles"
    out = []
    for filename, cls in (("devices.toml", DeviceProfile), ("networks.toml", NetworkProfile)):
        out += parse_profiles(tomllib.loads((folder / filename).read_text()), cls, filename)
    return out


# --- assignment ----------------------------------------------------------------------------

DEFAULT_ASSIGNMENT = {"name": "phone-lte", "device": "phone-midrange", "network": "lte", "server": "edge-gpu-t4"}


@dataclass(frozen=True)
class ClientHardware:
    device: str
    network: str
    distance_m: float


def draw_clients(assignment: dict, clients: int, seed: int, lookup) -> list[ClientHardware]:
    """Each client's device, network and distance: all one profile, a mix with proportions
    ({name = share}, drawn with the seed), or an explicit per-client list."""
    rng = np.random.default_rng([seed, 0x4A2D])
    devices = pick(assignment["device"], clients, rng, "device")
    networks = pick(assignment["network"], clients, rng, "network")
    out = []
    for device, network in zip(devices, networks):
        net = lookup(network)
        out.append(ClientHardware(device, network, float(rng.uniform(net.distance_min_m, net.distance_max_m))))
    return out


def pick(choice, clients: int, rng: np.random.Generator, what: str) -> list[str]:
    if isinstance(choice, str):
        return [choice] * clients
    if isinstance(choice, list):
        if len(choice) != clients:
            raise ConfigError(f"profile {what} list has {len(choice)} entries for {clients} clients")
        return list(choice)
    names, shares = list(choice), np.array(list(choice.values()), dtype=float)
    if (shares < 0).any() or not np.isclose(shares.sum(), 1.0):
        raise ConfigError(f"profile {what} mix {choice}: shares must be >= 0 and sum to 1")
    counts = np.floor(shares * clients).astype(int)
    for i in np.argsort(-(shares * clients - counts))[: clients - counts.sum()]:  # largest remainders
        counts[i] += 1
    return list(rng.permutation(np.repeat(names, counts)))


def key_figures(profile) -> str:
    """One line for `fedfuse list profiles` (sources: the TOML files)."""
    if profile.kind == "device":
        peak = profile.flops_per_cycle * profile.cpu_freq_max_hz / 1e9
        return (f"{peak:,.0f} GFLOP/s peak, f {profile.cpu_freq_min_hz / 1e9:.2f}-{profile.cpu_freq_max_hz / 1e9:.2f} GHz, "
                f"kappa {profile.kappa:.2e}")
    return (f"B {profile.bandwidth_hz / 1e6:g} MHz, p {profile.tx_power_w:g} W, "
            f"d {profile.distance_min_m:g}-{profile.distance_max_m:g} m")
