"""Registers fedavg-lora and its baseline fedavg-full-finetune (same start, same data, all weights)."""

from dataclasses import dataclass
from typing import ClassVar

from fedfuse.api import DdpmConfig, MetricSpec, ProtocolSpec, hookimpl, require_positive


@dataclass
class FineTuneConfig(DdpmConfig):
    """``model``: the base's UNet preset (always with attention at its lowest level)."""

    local_steps: int = 20  # optimizer steps per client per round
    pretrain_steps: int = 600  # central pre-training of the base on public images (cached)
    pretrain_lr: float = 2e-3
    pretrain_seed: int = 0
    base_on_clients: bool = True  # False: the server sends the base once before round 1 (counted)
    model_path: str = ""  # a local diffusers Stable Diffusion directory to fine-tune instead of the small base

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "local_steps", "pretrain_steps")


@dataclass
class LoraFineTuneConfig(FineTuneConfig):
    mode: ClassVar[str] = "lora"
    lr: float = 5e-3  # adapters start at zero (LoRA's B): a larger step than full fine-tuning's
    rank: int = 4
    alpha: float = 4.0
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # attention projections

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"'rank' must be >= 1, got {self.rank}")


@dataclass
class FullFineTuneConfig(FineTuneConfig):
    mode: ClassVar[str] = "full"
    lr: float = 5e-4


@hookimpl
def fedfuse_add_protocols():
    apps = {"server": "fedfuse.protocols.fedavg_lora.server_app:server",
            "client_app": "fedfuse.protocols.fedavg_lora.client_app:app"}
    return [
        ProtocolSpec(name="fedavg-lora", version="3", config=LoraFineTuneConfig, **apps,
                     summary="FedAvg of LoRA adapters (peft) on a base pre-trained on public data"),
        ProtocolSpec(name="fedavg-full-finetune", version="2", config=FullFineTuneConfig, **apps,
                     summary="baseline: the same start and data, every weight fine-tuned and averaged"),
    ]


@hookimpl
def fedfuse_add_metrics():
    return [
        *(MetricSpec(f"base_{m}", "", higher_is_better=m == "recall", aggregate="last",
                     summary=f"fine-tuning: the pre-trained base's {m}, before any round") for m in ("fid", "recall")),
    ]
