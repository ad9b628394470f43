"""Registers the fedavg protocol (full-model FedAvg of a DDPM UNet)."""

from dataclasses import dataclass

from fedfuse.api import DdpmConfig, ProtocolSpec, hookimpl, require_positive


@dataclass
class FedAvgConfig(DdpmConfig):
    local_steps: int = 20  # optimizer steps per client per round
    conditional: bool = False  # a class-conditional UNet (a track that asks for classes): trained and sampled with labels

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "local_steps")


@hookimpl
def fedfuse_add_protocols():
    return [
        ProtocolSpec(
            name="fedavg", version="3", config=FedAvgConfig, partial_participation=True,
            server="fedfuse.protocols.fedavg.server_loop:server",
            client_app="fedfuse.protocols.fedavg.client_app:app",
            summary="full-model FedAvg of a DDPM UNet (diffusers; class-conditional with conditional = true), trained from scratch",
        )
    ]
