"""The sampler service: generate images with a trained denoiser and a diffusers scheduler.

``sample`` runs the whole reverse process; ``denoise`` runs part of it, from a given ``x_t``
over given timesteps — how split protocols hand a trajectory from server to client. Seeded,
batched, and every denoiser call is counted by the FLOP meter when one is given.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from diffusers.models.unets.unet_2d import UNet2DOutput
from torch import nn

SCHEDULERS = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}


def make_scheduler(kind: str, train_timesteps, steps: int):
    """A ``kind`` sampling scheduler with the training schedule, set to ``steps`` steps.
    ``train_timesteps``: the length of fedfuse's own schedule (``build_scheduler``'s), or the
    training scheduler itself (e.g. a Stable Diffusion pipeline's), whose config — betas,
    length, prediction type, timestep spacing and offset, clipping — the sampler is built from,
    as diffusers swaps a pipeline's scheduler; it then reads the model's output as trained."""
    if kind not in SCHEDULERS:
        raise ValueError(f"scheduler must be one of {', '.join(SCHEDULERS)}, got {kind!r}")
    if isinstance(train_timesteps, int):
        scheduler = SCHEDULERS[kind](num_train_timesteps=train_timesteps)
    else:
        scheduler = SCHEDULERS[kind].from_config(train_timesteps.config)
    scheduler.set_timesteps(min(steps, scheduler.config.num_train_timesteps))
    return scheduler


class Guided(nn.Module):
    """Classifier-free guidance around a conditional denoiser: each call runs the model on the
    batch twice (with ``labels`` and with ``null_labels``, in one forward pass, so the FLOP
    meter counts both) and returns ``eps_null + scale * (eps_cond - eps_null)``."""

    def __init__(self, model: nn.Module, labels: torch.Tensor, null_labels: torch.Tensor, scale: float):
        super().__init__()
        self.model, self.scale = model, scale
        self.register_buffer("labels", torch.cat([labels, null_labels]))  # buffers move with the module

    def forward(self, x, t, **kwargs):
        eps_cond, eps_null = self.model(torch.cat([x, x]), t, class_labels=self.labels, **kwargs).sample.chunk(2)
        return UNet2DOutput(sample=eps_null + self.scale * (eps_cond - eps_null))


def conditioned(model: nn.Module, labels: torch.Tensor | None, null_label: int, scale: float) -> tuple:
    """(denoiser, model kwargs) for sampling: unconditional when ``labels`` is None, plain
    conditional at ``scale`` 1, classifier-free guided at any other scale."""
    if labels is None:
        return model, {}
    if scale == 1.0:
        return model, {"class_labels": labels}
    return Guided(model, labels, torch.full_like(labels, null_label), scale), {}


@torch.no_grad()
def denoise(model, scheduler, x: torch.Tensor, timesteps, generator: torch.Generator | None = None,
            flops=None, resources=None, **model_kwargs) -> torch.Tensor:
    """Run ``scheduler.step`` for each of ``timesteps`` (descending) starting from ``x``, on
    the device of ``resources`` (Fabric's, at its precision); the result is on the CPU."""
    from fedfuse.toolkit.device import fabric, to_device

    fab = fabric(resources)
    module = fab.setup_module(model)
    module.eval()
    x = to_device(x, fab.device)
    model_kwargs = {k: to_device(v, fab.device) for k, v in model_kwargs.items()}
    for t in timesteps:
        with flops.step("sample", (tuple(x.shape), id(model))) if flops else contextlib.nullcontext():
            eps = module(x, to_device(torch.as_tensor(t), fab.device), **model_kwargs).sample.float()
        x = scheduler.step(eps, t, x, generator=generator).prev_sample
    model.to("cpu")
    return x.cpu()


def batch_denoiser(model: nn.Module, kwargs: dict, null_label: int, guidance: float) -> tuple:
    """(denoiser, model kwargs) for one batch: ``conditioned`` on its ``class_labels``, if any."""
    labels = kwargs.pop("class_labels", None)
    denoiser, label_kwargs = conditioned(model, labels, null_label, guidance)
    return denoiser, {**kwargs, **label_kwargs}


def sample(model, n: int, shape: tuple[int, int, int], train_timesteps, steps: int = 50,
           kind: str = "ddim", seed: int = 0, batch_size: int = 256, flops=None, resources=None,
           guidance: float = 1.0, null_label: int = -1, clamp: bool = True, **model_kwargs) -> torch.Tensor:
    """``n`` images in [-1, 1]: pure noise denoised over ``steps`` steps of a ``kind`` scheduler
    (``make_scheduler``: ``train_timesteps`` is a length or the training scheduler). With
    ``class_labels``, ``guidance`` other than 1 samples with classifier-free guidance against
    ``null_label``. ``clamp`` False leaves the result unclamped: latents, not images."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        scheduler = make_scheduler(kind, train_timesteps, steps)
        x = torch.randn((size, *shape), generator=generator)
        denoiser, kwargs = batch_denoiser(model, {k: v[start:start + size] for k, v in model_kwargs.items()},
                                          null_label, guidance)
        out.append(denoise(denoiser, scheduler, x, scheduler.timesteps, generator, flops, resources, **kwargs))
    return torch.cat(out).clamp(-1, 1) if clamp else torch.cat(out)
