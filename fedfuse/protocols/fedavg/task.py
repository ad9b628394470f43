"""The model of full-model FedAvg: a diffusers UNet (class-conditional if the config says so). No flwr here; the UNet
presets, training and evaluation are the shared DDPM recipe (fedfuse.toolkit)."""

from fedfuse.api import Ema, build_scheduler, train  # noqa: F401  (task API)
from fedfuse.api import build_unet as build_model  # noqa: F401
