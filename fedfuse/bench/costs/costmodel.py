"""The cost model: FLOPs and bits mapped to time and energy through a hardware profile.

Every protocol is costed by these functions and no other:

* compute time      T_cmp = FLOPs / (flops_per_cycle * f)                        [s]
* compute energy    E_cmp = kappa * (FLOPs / flops_per_cycle) * f^2              [J]
* static energy     E_static = P_static * T_round: a device draws its static (idle) power for
                    the whole round it takes part in, waiting included               [J]
* channel gain      g = 10^(-PL/10),  PL = pl_ref_db + 10 * pl_exponent * log10(d / 1 km)
* link rate         r = B * log2(1 + p * g / (N0 * B))                            [bit/s]
* transfer time     T = bits / r;  uplink energy E_up = p_client * T_up          [s], [J]
* round latency     max over the round's clients of (T_down + T_cmp + T_up), plus the server's
                    compute time (a synchronous round)
* round energy      sum over clients of (E_cmp + E_up + E_static): what the edge devices
                    spend. Downlink reception and server energy are not part of it.
* deadline D        (a suite's ``deadline_s``) a client whose T_down + T_cmp + T_up exceeds D
                    misses the round: its update is not aggregated; it works until D in that
                    order (receive, compute, upload), spending E_cmp and E_up pro rata to the
                    time each phase got, and the round lasts D (plus the server's time).

With static power, running the clock slower is no longer almost free: every second the round
lasts costs each device P_static. kappa is derived from the load power minus the static power
(fedfuse/bench/costs/profiles/devices.toml), so a device at full load still draws its measured
power.
"""

from __future__ import annotations

import math

from fedfuse.bench.costs.hardware import DeviceProfile, NetworkProfile


def compute_time(flops: float, device: DeviceProfile, f: float | None = None) -> float:
    return flops / (device.flops_per_cycle * (f or device.cpu_freq_max_hz))


def compute_energy(flops: float, device: DeviceProfile, f: float | None = None) -> float:
    f = f or device.cpu_freq_max_hz
    return device.kappa * (flops / device.flops_per_cycle) * f**2


def path_gain(network: NetworkProfile, distance_m: float) -> float:
    path_loss_db = network.pl_ref_db + 10 * network.pl_exponent * math.log10(distance_m / 1000.0)
    return 10 ** (-path_loss_db / 10)


def link_rate(bandwidth_hz: float, power_w: float, gain: float, noise_psd: float) -> float:
    """Shannon rate of an AWGN link."""
    return bandwidth_hz * math.log2(1 + power_w * gain / (noise_psd * bandwidth_hz))


def uplink_rate(network: NetworkProfile, distance_m: float, power_w: float | None = None) -> float:
    p = power_w or network.tx_power_w
    return link_rate(network.bandwidth_hz, p, path_gain(network, distance_m), network.noise_psd_w_per_hz)


def downlink_rate(network: NetworkProfile, distance_m: float) -> float:
    return link_rate(network.bandwidth_hz, network.server_tx_power_w, path_gain(network, distance_m),
                     network.noise_psd_w_per_hz)


def client_cost(flops: float, bytes_up: float, bytes_down: float, device: DeviceProfile,
                network: NetworkProfile, distance_m: float, f: float | None = None,
                power_w: float | None = None) -> dict:
    """One client's round: times and energies, at frequency ``f`` and power ``power_w``
    (the profile's maxima when not given)."""
    p = power_w or network.tx_power_w
    t_up = 8 * bytes_up / uplink_rate(network, distance_m, p)
    t_down = 8 * bytes_down / downlink_rate(network, distance_m)
    t_cmp, e_cmp = compute_time(flops, device, f), compute_energy(flops, device, f)
    return {"t_down_s": t_down, "t_cmp_s": t_cmp, "t_up_s": t_up, "latency_s": t_down + t_cmp + t_up,
            "e_cmp_j": e_cmp, "e_up_j": p * t_up, "energy_j": e_cmp + p * t_up}


def round_cost(clients: dict, server_flops: float, server: DeviceProfile, static_power_w: dict | None = None) -> dict:
    """``clients``: {client: client_cost(...)} of those that took part in the round;
    ``static_power_w``: {client: W}, drawn for the whole round (``e_static_j``, in ``energy_j``)."""
    slowest = max((c["latency_s"] for c in clients.values()), default=0.0)
    t_server = compute_time(server_flops, server)
    latency = slowest + t_server
    e_static = sum(static_energy({k: (static_power_w or {}).get(k, 0.0) for k in clients}, latency).values())
    return {"latency_s": latency, "server_time_s": t_server, "e_static_j": e_static,
            "energy_j": sum(c["energy_j"] for c in clients.values()) + e_static}


def static_energy(static_power_w: dict, round_latency_s: float) -> dict:
    """{client: E_static = P_static * T_round}: every device is awake for the whole round."""
    return {k: p * round_latency_s for k, p in static_power_w.items()}


def cut_at_deadline(cost: dict, deadline_s: float) -> dict:
    """A client's ``client_cost`` when it misses the deadline: each phase (down, compute, up)
    runs until the deadline, its energy pro rata to the time it got; latency = the deadline."""
    left, out = deadline_s, dict(cost)
    for phase, energy in (("t_down_s", None), ("t_cmp_s", "e_cmp_j"), ("t_up_s", "e_up_j")):
        got = min(cost[phase], max(left, 0.0))
        if energy:
            out[energy] = cost[energy] * (got / cost[phase] if cost[phase] > 0 else 0.0)
        out[phase], left = got, left - got
    return {**out, "latency_s": deadline_s, "energy_j": out["e_cmp_j"] + out["e_up_j"]}
