"""DDPM training and evaluation shared by every protocol that trains a diffusers denoiser.

Plain torch and diffusers, no flwr: protocols' task.py files import it.
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel


def build_scheduler(timesteps: int) -> DDPMScheduler:
    return DDPMScheduler(num_train_timesteps=timesteps)


def build_unet(image_shape: tuple[int, int, int], width: int, seed: int, classes: int | None = None) -> UNet2DModel:
    """A two-level UNet (e.g. 28x28 -> 14x14) whose weights depend only on ``seed``;
    unconditional, or conditioned on ``classes`` labels (``class_labels=`` when called)."""
    channels, height, _ = image_shape
    with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=height, in_channels=channels, out_channels=channels,
            block_out_channels=(width, 2 * width), layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=min(8, width), num_class_embeds=classes,
        )


def diffusion_loss(model, scheduler, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None, t_range: tuple[int, int] | None = None) -> torch.Tensor:
    """The noise-prediction (epsilon) loss at timesteps drawn uniformly from ``t_range``
    (default: all); ``labels`` condition a class-conditional model."""
    low, high = t_range or (0, scheduler.config.num_train_timesteps)
    t = torch.randint(low, high, (len(images),), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    noisy = scheduler.add_noise(images, noise, t)
    kwargs = {"class_labels": labels} if labels is not None else {}
    return F.mse_loss(model(noisy, t, **kwargs).sample, noise)


def train(model, scheduler, data, steps: int, batch_size: int, lr: float, generator: torch.Generator,
          flops=None, conditional: bool = False, t_range: tuple[int, int] | None = None) -> float:
    """``steps`` AdamW steps over the parameters that require grad, on batches drawn from
    ``data`` (at timesteps in ``t_range``, default all); returns the mean loss. ``flops``
    (a harness FlopMeter) counts each step."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    total = 0.0
    for _ in range(steps):
        images, labels = data.sample_batch(batch_size, generator)
        with flops.step("train", tuple(images.shape)) if flops else contextlib.nullcontext():
            loss = diffusion_loss(model, scheduler, images, generator, labels if conditional else None, t_range)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"training loss became {loss.item()}; lower the learning rate")
        optimizer.step()
        total += loss.item()
    return total / steps


@torch.no_grad()
def evaluate(model, scheduler, images: torch.Tensor, batch_size: int, generator: torch.Generator,
             labels: torch.Tensor | None = None) -> float:
    """Held-out noise-prediction loss; the same generator seed gives the same noise each call."""
    model.eval()
    label_batches = labels.split(batch_size) if labels is not None else [None] * len(images.split(batch_size))
    losses = [diffusion_loss(model, scheduler, x, generator, y).item()
              for x, y in zip(images.split(batch_size), label_batches)]
    return sum(losses) / len(losses)
