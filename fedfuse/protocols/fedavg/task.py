"""The model of full-model FedAvg: an unconditional diffusers UNet. No flwr here; training
and evaluation are the harness's shared DDPM code (fedfuse.bench.diffusion)."""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from fedfuse.bench.diffusion import build_scheduler, diffusion_loss, evaluate, train  # noqa: F401  (task API)


def build_model(image_shape: tuple[int, int, int], width: int, seed: int) -> UNet2DModel:
    """A two-level UNet (e.g. 28x28 -> 14x14) whose weights depend only on ``seed``."""
    channels, height, _ = image_shape
    with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=height, in_channels=channels, out_channels=channels,
            block_out_channels=(width, 2 * width), layers_per_block=1,
            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=min(8, width),
        )
