"""The model of full-model FedAvg: an unconditional diffusers UNet. No flwr here; the UNet,
training and evaluation are the harness's shared DDPM code (fedfuse.bench.diffusion)."""

from fedfuse.bench.diffusion import build_scheduler, diffusion_loss, evaluate, train  # noqa: F401  (task API)
from fedfuse.bench.diffusion import build_unet as build_model  # noqa: F401
