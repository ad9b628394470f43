"""Registers fedavg-lora and its baseline fedavg-full-finetune (same start, same data, all weights)."""

from dataclasses import dataclass
from typing import ClassVar

from fedfuse.api import DdpmConfig, MetricSpec, ProtocolSpec, StudySpec, added_later, hookimpl, require_positive
from fedfuse.protocols.fedavg_lora.aggregation import AGGREGATIONS


@dataclass
class FineTuneConfig(DdpmConfig):
    """``model``: the base's UNet preset (with attention at its lowest level where the preset
    has none; ``base-attn`` has it at every level)."""

    local_steps: int = 20  # optimizer steps per client per round
    pretrain_steps: int = 600  # central pre-training of the base on public images (cached)
    pretrain_lr: float = 2e-3
    pretrain_seed: int = 0
    base_on_clients: bool = True  # False: the server sends the base once before round 1 (counted)
    model_path: str = ""  # a local diffusers Stable Diffusion directory to fine-tune instead of the small base
    # Classifier-free guidance, Stable Diffusion only (the small base has no empty condition):
    guidance_scale: float = 1.0  # at sampling; 1 = off (plain conditional); SD users typically set 7.5
    cond_dropout: float = 0.0  # in training, P(a prompt is replaced by the empty one); SD users typically set 0.1
    # > 0: personalised models on the shared base. In the last round each client fine-tunes its own
    # copy of the global trainable part for this many steps on its own images, keeps it, and
    # generates with it (scored, as always, on its own label mix); 0: every client holds the global one
    personalize_steps: int = added_later(0)

    def __post_init__(self):
        super().__post_init__()
        require_positive(self, "local_steps", "pretrain_steps")
        if self.personalize_steps < 0 or (self.personalize_steps and self.model_path):
            raise ValueError(f"'personalize_steps' must be >= 0, and 0 with a Stable Diffusion base (model_path); got "
                             f"{self.personalize_steps}")
        if not 0.0 <= self.cond_dropout < 1.0 or self.guidance_scale < 0:
            raise ValueError(f"'cond_dropout' must be in [0, 1) and 'guidance_scale' >= 0, got {self.cond_dropout} "
                             f"and {self.guidance_scale}")
        if not self.model_path and (self.guidance_scale != 1.0 or self.cond_dropout > 0):
            raise ValueError("'guidance_scale' and 'cond_dropout' need an empty condition to guide against: only a "
                             "Stable Diffusion base (model_path) has one; leave them at 1.0 and 0.0 for the small base")


@dataclass
class LoraFineTuneConfig(FineTuneConfig):
    mode: ClassVar[str] = "lora"
    lr: float = 5e-3  # adapters start at zero (LoRA's B): a larger step than full fine-tuning's
    rank: int = 4
    alpha: float = 4.0
    # the modules adapted: names, or groups (task.TARGET_GROUPS: "attn", "conv", "attn+conv")
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0")  # every attention projection
    # How the server combines the clients' factors (aggregation.py): "fedavg-ab" averages A and
    # B apart (inexact), "ffa" freezes A at a shared init and sends B only (exact), "svd"
    # re-factors the mean of the products B @ A to rank r (exact up to truncation).
    aggregation: str = "fedavg-ab"

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"'rank' must be >= 1, got {self.rank}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"'aggregation' must be one of {', '.join(AGGREGATIONS)}; got {self.aggregation!r}")


@dataclass
class FullFineTuneConfig(FineTuneConfig):
    mode: ClassVar[str] = "full"
    aggregation: ClassVar[str] = "fedavg-ab"  # every weight averaged: exact
    lr: float = 5e-4


@hookimpl
def fedfuse_add_protocols():
    apps = {"server": "fedfuse.protocols.fedavg_lora.server_loop:server",
            "client_app": "fedfuse.protocols.fedavg_lora.client_app:app", "partial_participation": True}
    return [
        ProtocolSpec(name="fedavg-lora", version="5", config=LoraFineTuneConfig, dp=("record", "client"), **apps,
                     summary="FedAvg of LoRA adapters (peft) on a base pre-trained on public data"),
        ProtocolSpec(name="fedavg-full-finetune", version="4", config=FullFineTuneConfig, dp=("record", "client"), **apps,
                     summary="baseline: the same start and data, every weight fine-tuned and averaged"),
    ]


@hookimpl
def fedfuse_add_metrics():
    return [
        *(MetricSpec(f"base_{m}", "", higher_is_better=m == "recall", aggregate="last",
                     summary=f"fine-tuning: the pre-trained base's {m}, before any round") for m in ("fid", "recall")),
        MetricSpec("trained_share", "", higher_is_better=False, aggregate="last",
                   summary="fine-tuning: trained (and sent) values as a share of the base's parameters"),
        MetricSpec("aggregation_error", "", higher_is_better=False, aggregate="mean",
                   summary="LoRA: ||mean(B A) - applied update|| / ||mean(B A)|| per round (0: exact)"),
    ]


@hookimpl
def fedfuse_add_studies():
    return [StudySpec(
        "seed-fedavg-lora", protocol="fedavg-lora",
        summary="federated LoRA against full fine-tuning: bytes, cost, quality beside the base, leakage, aggregation error",
        columns=("trained_params", "trained_share", "aggregation_error", "base_fid", "eval_loss", "pretrain_s"),
        panels=(("bytes_up", "fid"), ("aggregation_error", "fid"), ("bytes_up", "mia_auc")),
        claims="fedfuse.protocols.fedavg_lora.claims:check")]
