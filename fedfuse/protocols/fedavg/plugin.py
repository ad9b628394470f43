"""Registers the fedavg protocol (full-model FedAvg of a DDPM UNet)."""

from dataclasses import dataclass
from typing import Literal

from fedfuse.api import DdpmConfig, ProtocolSpec, added_later, hookimpl, require_positive


@dataclass
class FedAvgConfig(DdpmConfig):
    local_steps: int = 20  # optimizer steps per client per round
    conditional: bool = False  # a class-conditional UNet (a track that asks for classes): trained and sampled with labels
    aggregator: Literal["mean", "median", "trimmed-mean"] = added_later("mean")  # mean: FedAvg; the others are robust to a bad client
    trim: float = added_later(0.2)  # trimmed-mean: the share of clients cut from each end, per coordinate

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "local_steps")
        if not 0 <= self.trim < 0.5:
            raise ValueError(f"'trim' must be in [0, 0.5), got {self.trim}")


@hookimpl
def fedfuse_add_protocols():
    return [
        ProtocolSpec(
            name="fedavg", version="3", config=FedAvgConfig, partial_participation=True, dp=("record", "client"),
            server="fedfuse.protocols.fedavg.server_loop:server",
            client_app="fedfuse.protocols.fedavg.client_app:app",
            summary="full-model FedAvg of a DDPM UNet (diffusers; class-conditional with conditional = true), trained from scratch",
        )
    ]
