"""What a DDPM protocol's config says about its model and optimiser: the UNet presets and the
recipe fields. Plain data with no torch or diffusers import, so that loading the plugins (every
``fedfuse`` command does) stays fast; ``models`` builds the UNets, ``ddpm`` trains them.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    if name not in PRESETS:
        raise ValueError(f"model must be one of {', '.join(PRESETS)}, got {name!r}")


@dataclass
class DdpmConfig:
    """The recipe fields every DDPM protocol's config inherits (docs/quality.md chose them)."""

    model: str = "small"  # UNet preset: tiny | small | base | base-attn | wide | large
    timesteps: int = 200  # diffusion length T of the DDPM noise schedule
    batch_size: int = 64  # images per optimizer step
    lr: float = 2e-3  # AdamW learning rate after the warm-up
    warmup_steps: int = 100  # linear learning-rate warm-up, counted over all rounds
    ema_decay: float = 0.995  # per optimizer step; the EMA weights sample and evaluate (0: off)

    def __post_init__(self):
        check_preset(self.model)
        for name in ("timesteps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"'{name}' must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0 or self.warmup_steps < 0 or not 0 <= self.ema_decay < 1:
            raise ValueError("'lr' must be > 0, 'warmup_steps' >= 0 and 'ema_decay' in [0, 1)")

    @property
    def recipe(self) -> "Recipe":
        return Recipe(self.lr, self.batch_size, self.warmup_steps, self.ema_decay)


@dataclass(frozen=True)
class Recipe:
    """How a denoiser is optimised (the fields every DDPM protocol config carries)."""

    lr: float = 2e-3  # AdamW learning rate after the warm-up
    batch_size: int = 64  # images per optimizer step
    warmup_steps: int = 100  # linear learning-rate warm-up over the first optimizer steps
    ema_decay: float = 0.995  # per optimizer step; 0 = sample with the raw weights
