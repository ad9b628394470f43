"""Model, data and training for full-model FedAvg of an unconditional DDPM. No flwr here."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel


def build_model(image_shape: tuple[int, int, int], width: int, seed: int) -> UNet2DModel:
    """A two-level UNet (e.g. 8x8 -> 4x4) whose weights depend only on ``seed``."""
    channels, height, _ = image_shape
    with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=height, in_channels=channels, out_channels=channels,
            block_out_channels=(width, 2 * width), layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=min(8, width),
        )


def build_scheduler(timesteps: int) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=timesteps)


def diffusion_loss(model, scheduler, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The noise-prediction (epsilon) loss at uniformly drawn timesteps."""
    t = torch.randint(scheduler.config.num_train_timesteps, (len(images),), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    noisy = scheduler.add_noise(images, noise, t)
    return F.mse_loss(model(noisy, t).sample, noise)


def train(model, scheduler, data, steps: int, batch_size: int, lr: float, generator: torch.Generator,
          flops=None) -> float:
    """``steps`` AdamW steps on batches drawn from ``data``; returns the mean loss.
    ``flops`` (a harness FlopMeter, optional) counts each step's forward and backward."""
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    total = 0.0
    for _ in range(steps):
        images, _ = data.sample_batch(batch_size, generator)
        with flops.step("train", tuple(images.shape)) if flops else contextlib.nullcontext():
            loss = diffusion_loss(model, scheduler, images, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss became {loss.item()}; lower the learning rate")
        optimizer.step()
        total += loss.item()
    return total / steps


@torch.no_grad()
def evaluate(model, scheduler, images: torch.Tensor, batch_size: int, generator: torch.Generator) -> float:
    """Held-out noise-prediction loss; the same generator seed gives the same noise each call."""
    model.eval()
    losses = [diffusion_loss(model, scheduler, batch, generator).item() for batch in images.split(batch_size)]
    return sum(losses) / len(losses)
