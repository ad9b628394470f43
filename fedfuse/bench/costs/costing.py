"""Turn a round's measured traffic and FLOPs into the round record, through the cell's profiles."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from fedfuse.bench.costs import costmodel
from fedfuse.bench.costs.hardware import (
    ClientHardware,
    DeviceProfile,
    NetworkProfile,
    draw_clients,
)
from fedfuse.plugins.config import ConfigError, build_config

SUMS = ("bytes_down", "bytes_up", "payload_down", "payload_up")


def resolve_profile(name: str, kind: str, inline: dict, registry) -> DeviceProfile | NetworkProfile:
    """A device or network by name: the suite's inline definitions first, then the plugins'."""
    cls = DeviceProfile if kind == "device" else NetworkProfile
    if name in inline.get(f"{kind}s", {}):
        return build_config(cls, {"name": name, **inline[f"{kind}s"][name]}, f"inline {kind} '{name}'")
    entries = registry.entries("profiles")
    if name not in entries or entries[name].spec.kind != kind:
        known = sorted(n for n, e in entries.items() if e.spec.kind == kind) + sorted(inline.get(f"{kind}s", {}))
        raise ConfigError(f"unknown {kind} profile '{name}'; available: {', '.join(known)}")
    return entries[name].spec


@dataclass
class CellHardware:
    """Which device and link each client has (drawn once per cell with its seed), and the server's."""

    clients: list[ClientHardware]
    devices: dict[str, DeviceProfile]
    networks: dict[str, NetworkProfile]
    server: DeviceProfile

    @classmethod
    def for_cell(cls, cell, registry) -> "CellHardware":
        return cls.build(cell.profile, cell.clients, cell.seed, registry)

    @classmethod
    def build(cls, assignment: dict, clients: int, seed: int, registry) -> "CellHardware":
        """``clients`` clients' hardware under a profile assignment, drawn with ``seed``."""
        inline = assignment.get("inline", {})
        network = lambda name: resolve_profile(name, "network", inline, registry)  # noqa: E731
        clients = draw_clients(assignment, clients, seed, network)
        devices = {c.device: resolve_profile(c.device, "device", inline, registry) for c in clients}
        networks = {c.network: network(c.network) for c in clients}
        return cls(clients, devices, networks, resolve_profile(assignment["server"], "device", inline, registry))

    def client_compute(self, flops: dict[int, float]) -> dict:
        """Time and energy of ``flops`` {client: FLOPs} on each client's device at its highest
        frequency (the cost model's compute terms, static power for that time included); the
        means over the clients."""
        devices = [self.devices[self.clients[c].device] for c in flops]
        time = [costmodel.compute_time(f, d) for f, d in zip(flops.values(), devices)]
        energy = [costmodel.compute_energy(f, d) + d.static_power_w * t for f, d, t in zip(flops.values(), devices, time)]
        return {"t_cmp_s": float(np.mean(time)), "e_cmp_j": float(np.mean(energy))}

    def redraw(self, round: int, seed: int) -> None:
        """New distances for every client (a moving device, a changed channel) for this round."""
        rng = np.random.default_rng([seed, round, 0x4A2D])
        self.clients = [dataclasses.replace(c, distance_m=float(rng.uniform(self.networks[c.network].distance_min_m,
                                                                              self.networks[c.network].distance_max_m)))
                        for c in self.clients]

    def describe(self) -> list[dict]:
        return [dataclasses.asdict(c) for c in self.clients]

    def client_round_cost(self, pid: int, t: dict, point: tuple = (None, None)) -> dict:
        """Client ``pid``'s times and energies for its round figures ``t`` (bytes, FLOPs) at its
        operating ``point`` (f, power_w; the profile's maxima where None)."""
        hw, (f, p) = self.clients[pid], point
        return costmodel.client_cost(t["flops_train"] + t["flops_sample"], t["bytes_up"], t["bytes_down"],
                                     self.devices[hw.device], self.networks[hw.network], hw.distance_m, f, p)

    def round_figures(self, traffic: dict[int, dict], server_flops: float, points: dict,
                      deadline_s: float = 0.0) -> dict:
        """The round's totals and per-client detail. ``points`` = {client: (f, power_w)} chosen
        by the protocol this round (the profile's maxima otherwise); a client the grid marked
        ``late`` worked until ``deadline_s`` (costmodel.cut_at_deadline)."""
        per_client = {}
        for pid, t in traffic.items():
            hw, (f, p) = self.clients[pid], points.get(pid, (None, None))
            cost = self.client_round_cost(pid, t, (f, p))
            if t.get("late"):
                cost = costmodel.cut_at_deadline(cost, deadline_s)
            per_client[str(pid)] = {**t, **cost, "cpu_freq_hz": f or self.devices[hw.device].cpu_freq_max_hz,
                                    "tx_power_w": p or self.networks[hw.network].tx_power_w}
        static = {k: self.devices[self.clients[int(k)].device].static_power_w for k in per_client}
        summary = costmodel.round_cost(per_client, server_flops, self.server, static)
        for k, e_static in costmodel.static_energy(static, summary["latency_s"]).items():
            per_client[k]["e_static_j"] = e_static
            per_client[k]["energy_j"] += e_static
        totals = {k: sum(c[k] for c in traffic.values()) for k in SUMS}
        client_flops = sum(c["flops_train"] + c["flops_sample"] for c in traffic.values())
        examples = sum(c.get("train_examples", 0) for c in traffic.values())
        late = sum(1 for c in traffic.values() if c.get("late"))
        slowest = max((c["t_cmp_s"] + c["t_up_s"] for c in per_client.values()), default=0.0)
        return {**totals, "client_flops": client_flops, "server_flops": server_flops, "slowest_client_s": slowest,
                "client_train_examples": examples, **summary,
                **({"clients_late": late} if deadline_s else {}), "per_client": per_client}
