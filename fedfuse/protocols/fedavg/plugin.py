"""Registers the fedavg protocol (full-model FedAvg of a DDPM UNet)."""

from dataclasses import dataclass

from fedfuse.bench.config import require_positive
from fedfuse.plugins import ProtocolSpec, hookimpl


@dataclass
class FedAvgConfig:
    local_steps: int = 20  # optimizer steps per client per round
    batch_size: int = 32
    lr: float = 2e-3
    width: int = 32  # channels of the UNet's first level (the second has twice as many)
    timesteps: int = 200  # diffusion length T of the DDPM noise schedule
    eval_samples: int = 512  # held-out images for the server's eval_loss each round

    def __post_init__(self):
        require_positive(self, "local_steps", "batch_size", "width", "timesteps", "eval_samples")
        if not self.lr > 0:
            raise ValueError(f"'lr' must be > 0, got {self.lr}")


@hookimpl
def fedfuse_add_protocols():
    return [
        ProtocolSpec(
            name="fedavg", version="1", config=FedAvgConfig,
            server="fedfuse.protocols.fedavg.server_app:server",
            client_app="fedfuse.protocols.fedavg.client_app:app",
            summary="full-model FedAvg of an unconditional DDPM UNet (diffusers), trained from scratch",
        )
    ]

