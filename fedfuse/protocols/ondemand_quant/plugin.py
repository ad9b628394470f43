"""Registers ondemand-quant and its fixed-bit baseline fixed-quant (fedavg is the 32-bit one)."""

from dataclasses import dataclass
from typing import ClassVar

from fedfuse.api import DdpmConfig, MetricSpec, ProtocolSpec, StudySpec, hookimpl, require_positive


@dataclass
class QuantCommon(DdpmConfig):
    local_steps: int = 20
    block: int = 4096  # values per quantization scale
    redraw_channel: bool = False  # draw clients' distances anew every round
    # the model's way down: 32 sends it as it is; fewer bits send the change of the global model
    # since the last broadcast, quantized (every client keeps the model it was sent)
    downlink_bits: int = 32
    conditional: bool = False  # a class-conditional UNet (a track that asks for classes): trained and sampled with labels

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "local_steps", "block")
        if not (1 <= self.downlink_bits <= 16 or self.downlink_bits == 32):
            raise ValueError(f"'downlink_bits' must be in 1..16 or 32, got {self.downlink_bits}")


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

    def check_clients(self, n: int) -> None:
        one_or_each(self.min_bits, "min_bits", n)
        one_or_each(self.energy_budget_j, "energy_budget_j", n)


@dataclass
class FixedConfig(QuantCommon):
    mode: ClassVar[str] = "fixed"
    bits: int | tuple[int, ...] = 8  # one bit-width for all (32 = full precision), or one per client
    # false: every device at its maximum CPU frequency and transmit power; true: the least-energy
    # frequency and power within deadline_s, as on-demand chooses them, with the bits fixed
    dvfs: bool = False
    deadline_s: float = 5.0

    def __post_init__(self):
        super().__post_init__()
        if not all(1 <= b <= 16 or b == 32 for b in self.bit_list):
            raise ValueError(f"'bits' must be in 1..16 or 32, got {self.bits}")
        if self.deadline_s <= 0:
            raise ValueError(f"'deadline_s' must be > 0, got {self.deadline_s}")

    @property
    def bit_list(self) -> tuple[int, ...]:
        return self.bits if isinstance(self.bits, tuple) else (self.bits,)

    def check_clients(self, n: int) -> None:
        one_or_each(self.bit_list, "bits", n)


def one_or_each(values: tuple, name: str, clients: int) -> None:
    """A per-client setting holds one value for all clients or one per client."""
    if len(values) not in (0, 1, clients):
        raise ValueError(f"'{name}' holds {len(values)} values; give one for all clients or one for each of the {clients}")


@hookimpl
def fedfuse_add_protocols():
    apps = {"server": "fedfuse.protocols.ondemand_quant.server_loop:server",
            "client_app": "fedfuse.protocols.ondemand_quant.client_app:app",
            "reply_check": "fedfuse.protocols.ondemand_quant.server_loop:check_update", "partial_participation": True}
    return [
        ProtocolSpec(name="ondemand-quant", version="4", config=OnDemandConfig, dp=("record", "client"), **apps,
                     summary="FedAvg with per-device bits, CPU frequency and power from an energy-efficiency problem"),
        ProtocolSpec(name="fixed-quant", version="4", config=FixedConfig, dp=("record", "client"), **apps,
                     summary="baseline: FedAvg with every update quantized to one fixed bit-width (32: full precision); dvfs optional"),
    ]


@hookimpl
def fedfuse_add_metrics():
    return [
        MetricSpec("mean_bits", "bits", higher_is_better=False, aggregate="mean",
                   summary="quantized FL: mean bit-width of the clients' updates"),
    ]


@hookimpl
def fedfuse_add_studies():
    return [StudySpec(
        "seed-ondemand-quant", protocol="ondemand-quant",
        summary="on-demand bit-widths against fixed bits and full precision: quality, energy, rounds to target",
        columns=("mean_bits", "e_static_j", "rounds_to_target", "energy_to_target_j", "latency_to_target_s", "eval_loss"),
        panels=(("mean_bits", "fid"), ("energy_j", "fid"), ("mean_bits", "energy_j"), ("mean_bits", "energy_to_target_j")),
        claims="fedfuse.protocols.ondemand_quant.claims:check")]
