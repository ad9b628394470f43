"""Registers ondemand-quant and its fixed-bit baseline fixed-quant (fedavg is the 32-bit one)."""

from dataclasses import dataclass
from typing import ClassVar

from fedfuse.api import DdpmConfig, MetricSpec, ProtocolSpec, hookimpl, require_positive


@dataclass
class QuantCommon(DdpmConfig):
    local_steps: int = 20
    block: int = 4096  # values per quantization scale
    redraw_channel: bool = False  # draw clients' distances anew every round

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "local_steps", "block")


@dataclass
class OnDemandConfig(QuantCommon):
    mode: ClassVar[str] = "ondemand"
    deadline_s: float = 5.0  # each client's round deadline T_max (simulated seconds)
    error_bits: int = 6  # aggregate error bound: as if every client sent this many bits
    min_bits: tuple[int, ...] = ()  # demand: a minimum precision (one for all, or one per client)
    energy_budget_j: tuple[float, ...] = ()  # demand: an energy budget per round (one for all, or per client)

    def __post_init__(self):
        super().__post_init__()
        if not 1 <= self.error_bits <= 16 or self.deadline_s <= 0:
            raise ValueError("'error_bits' must be in 1..16 and 'deadline_s' > 0")


@dataclass
class FixedConfig(QuantCommon):
    mode: ClassVar[str] = "fixed"
    bits: int = 8  # one bit-width for all (32 = full precision)

    def __post_init__(self):
        super().__post_init__()
        if not (1 <= self.bits <= 16 or self.bits == 32):
            raise ValueError(f"'bits' must be in 1..16 or 32, got {self.bits}")


@hookimpl
def fedfuse_add_protocols():
    apps = {"server": "fedfuse.protocols.ondemand_quant.server_app:server",
            "client_app": "fedfuse.protocols.ondemand_quant.client_app:app",
            "reply_check": "fedfuse.protocols.ondemand_quant.server_app:check_update"}
    return [
        ProtocolSpec(name="ondemand-quant", version="2", config=OnDemandConfig, **apps,
                     summary="FedAvg with per-device bits, CPU frequency and power from an energy-efficiency problem"),
        ProtocolSpec(name="fixed-quant", version="2", config=FixedConfig, **apps,
                     summary="baseline: FedAvg with every update quantized to one fixed bit-width"),
    ]


@hookimpl
def fedfuse_add_metrics():
    return [
        MetricSpec("mean_bits", "bits", higher_is_better=False, aggregate="mean",
                   summary="quantized FL: mean bit-width of the clients' updates"),
    ]
