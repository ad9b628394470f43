"""What a DDPM protocol's config says about its model and optimiser: the UNet presets and the
recipe fields. Plain data with no torch or diffusers import, so that loading the plugins (every
``fedfuse`` command does) stays fast; ``models`` builds the UNets, ``ddpm`` trains them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from fedfuse.plugins.config import added_later

PRESETS = {
    "tiny": {"widths": (16, 32), "layers": 1, "attention": False},
    "small": {"widths": (32, 64), "layers": 1, "attention": False},
    "base": {"widths": (32, 64), "layers": 2, "attention": True},
    # self-attention at every resolution, as a latent-diffusion UNet has it (what LoRA adapts)
    "base-attn": {"widths": (32, 64), "layers": 2, "attention": "all"},
    # GPU presets (docs/quality.md, *On a GPU*): 4.0 M and 15.7 M parameters; "large" has three
    # resolution levels, so its image side must divide by 4.
    "wide": {"widths": (64, 128), "layers": 2, "attention": True},
    "large": {"widths": (64, 128, 256), "layers": 2, "attention": True},
}


def check_preset(name: str) -> None:
    """For a config's ``__post_init__``: ``name`` must be a UNet preset (ValueError naming them)."""
    if name not in PRESETS:
        raise ValueError(f"model must be one of {', '.join(PRESETS)}, got {name!r}")


@dataclass
class DdpmConfig:
    """The recipe fields every DDPM protocol's config inherits (docs/quality.md chose them)."""

    model: str = "small"  # UNet preset: tiny | small | base | base-attn | wide | large
    timesteps: int = 200  # diffusion length T of the DDPM noise schedule
    batch_size: int = 64  # images per optimizer step
    lr: float = 2e-3  # the optimizer's learning rate after the warm-up
    warmup_steps: int = 100  # linear learning-rate warm-up, counted over all rounds
    ema_decay: float = 0.995  # per optimizer step; the EMA weights sample and evaluate (0: off)
    # The local optimizer: AdamW (the default), or SGD as most FL papers define local training
    # (SCAFFOLD, FedProx, FedNova); momentum is SGD's, weight_decay either's (decoupled for AdamW)
    optimizer: Literal["adamw", "sgd"] = added_later("adamw")
    momentum: float = added_later(0.0)
    weight_decay: float = added_later(0.01)

    def __post_init__(self):
        check_preset(self.model)
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(f"'momentum' must be in [0, 1) and 'weight_decay' >= 0, got {self.momentum} and "
                             f"{self.weight_decay}")
        for name in ("timesteps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.warmup_steps < 0 or not 0 <= self.ema_decay < 1:
            raise ValueError("'lr' must be > 0, 'warmup_steps' >= 0 and 'ema_decay' in [0, 1)")

    @property
    def recipe(self) -> "Recipe":
        return Recipe(self.lr, self.batch_size, self.warmup_steps, self.ema_decay, self.optimizer, self.momentum,
                      self.weight_decay)


@dataclass(frozen=True)
class Recipe:
    """How a denoiser is optimised (the fields every DDPM protocol config carries)."""

    lr: float = 2e-3  # learning rate after the warm-up
    batch_size: int = 64  # images per optimizer step
    warmup_steps: int = 100  # linear learning-rate warm-up over the first optimizer steps
    ema_decay: float = 0.995  # per optimizer step; 0 = sample with the raw weights
    optimizer: str = "adamw"  # or "sgd"
    momentum: float = 0.0  # SGD's
    weight_decay: float = 0.01  # torch's AdamW default

    def make_optimizer(self, params):
        """A fresh optimizer over ``params`` (each ``fit`` call starts one: its state does not
        cross rounds, as a client's would not unless it kept it)."""
        import torch

        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
