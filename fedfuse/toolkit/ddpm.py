"""The DDPM recipe every protocol trains with: the loss of the scheduler's prediction type
(epsilon for fedfuse's own schedule; v or the clean sample for a scheduler configured so),
the recipe's optimizer (AdamW, or SGD) with a linear warm-up, an EMA of the weights for sampling and evaluation, on the device
Lightning Fabric gives.

Protocols say *what* to train (the model, which parameters, the loss of a batch, a t-range);
``fit`` owns *how* (device, precision, optimizer, warm-up, the non-finite guard, FLOP counting).
"""

from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch.optim.swa_utils import AveragedModel

from fedfuse.toolkit.device import Resources, fabric
from fedfuse.toolkit.privacy import DpSgd
from fedfuse.toolkit.recipe import DdpmConfig, Recipe  # noqa: F401  (re-exported: ddpm.Recipe)


def build_scheduler(timesteps: int) -> DDPMScheduler:
    """diffusers' DDPM noise schedule of ``timesteps`` steps (its linear betas, epsilon
    prediction): what fedfuse's own models train with and the samplers are built from."""
    return DDPMScheduler(num_train_timesteps=timesteps)


def training_target(scheduler, images: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the model learns to output for ``images`` noised with ``noise`` at ``t``, by the
    scheduler's ``prediction_type``: the noise (epsilon), the velocity (v, as Stable Diffusion
    2.x) or the clean images (sample). A sampler built from the same config reads the output so."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(images, noise, t)
    if kind == "sample":
        return images
    raise ValueError(f"prediction_type must be epsilon, v_prediction or sample, got {kind!r}")


def diffusion_loss(model, scheduler, images: torch.Tensor, generator: torch.Generator,
                   labels: torch.Tensor | None = None, t_range: tuple[int, int] | None = None,
                   device="cpu") -> torch.Tensor:
    """The denoising loss (MSE to ``training_target``: the noise, for fedfuse's own schedule) at
    timesteps drawn uniformly from ``t_range`` (default: all); ``labels`` condition a
    class-conditional model. ``images`` (on the CPU) are noised with the CPU generator's draws;
    the model computes on ``device``."""
    low, high = t_range or (0, scheduler.config.num_train_timesteps)
    t = torch.randint(low, high, (len(images),), generator=generator)
    noise = torch.randn(images.shape, generator=generator)
    noisy = scheduler.add_noise(images, noise, t).to(device)
    kwargs = {"class_labels": labels.to(device)} if labels is not None else {}
    target = training_target(scheduler, images, noise, t)
    return F.mse_loss(model(noisy, t.to(device), **kwargs).sample, target.to(device))


def drop_labels(labels: torch.Tensor, p: float, null_label: int, generator: torch.Generator) -> torch.Tensor:
    """Classifier-free guidance training: each label replaced by ``null_label`` with probability
    ``p``, so one model learns the conditional and the unconditional noise prediction."""
    if p <= 0:
        return labels
    return torch.where(torch.rand(len(labels), generator=generator) < p, torch.full_like(labels, null_label), labels)


def warmup(step: int, warmup_steps: int) -> float:
    """The learning-rate factor at optimizer step ``step`` (counted over all rounds)."""
    return 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)


def fit(model, batch_loss: Callable, steps: int, recipe: Recipe, resources: Resources | None = None,
        flops=None, start_step: int = 0, ema: "Ema | None" = None, shape_of: Callable = lambda: None,
        dry_loss: Callable | None = None, dp: DpSgd | None = None) -> float:
    """``steps`` steps of the recipe's optimizer (AdamW or SGD) on ``model``'s trainable
    parameters; ``batch_loss(module, device)`` returns one batch's loss. ``start_step`` continues the warm-up across rounds; ``ema`` is
    updated after each step. ``flops`` (a harness FlopMeter) counts each step under the key
    ``shape_of()``; given ``dry_loss(module, device)``, a loss on fixed inputs of a batch's
    shapes that draws no random numbers, it counts one throwaway step of that instead (FlopMeter's
    ``dry_step``) and no real step runs under the counter. ``dp`` (a ``DpSgd``, which the
    harness hands a client as ``run.dp_sgd(round)``) makes every step a DP-SGD step: the batch
    loss must then be a mean of per-image losses. Returns the mean loss; the model is back on
    the CPU afterwards."""
    with dp.per_sample(model) if dp is not None else contextlib.nullcontext(model) as trained:
        return _fit(model, trained, batch_loss, steps, recipe, resources, flops, start_step, ema, shape_of,
                    dry_loss, dp)


def _fit(model, trained, batch_loss, steps, recipe, resources, flops, start_step, ema, shape_of, dry_loss, dp):
    """``fit``'s loop; ``trained`` is ``model`` or its per-sample-gradient wrapper."""
    fab = fabric(resources)
    params = [p for p in model.parameters() if p.requires_grad]
    module, optimizer = fab.setup(trained, recipe.make_optimizer(params))
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup(start_step + s, recipe.warmup_steps))
    module.train()
    if ema is not None:
        ema.averaged.to(fab.device)
    if flops is not None:  # what a track's budget counts: optimizer steps x batch size
        flops.count_examples(steps * batch_size_of(shape_of()))
    if flops is not None and dry_loss is not None:
        def dry():  # a DP-SGD step is counted as a plain one (DpSgd.plain_pass says why)
            with dp.plain_pass(trained) if dp is not None else contextlib.nullcontext():
                dry_backward(module, dry_loss, fab, params)

        flops.dry_step("train", (shape_of(), parameter_layout(model)), steps, dry)
        flops = None  # counted: the real steps run uncounted
    total = 0.0
    try:
        for _ in range(steps):
            with flops.step("train", shape_of()) if flops else contextlib.nullcontext():
                loss = batch_loss(module, fab.device)
                optimizer.zero_grad(set_to_none=True)
                fab.backward(loss)
            value = loss.item()
            if not math.isfinite(value):
                raise FloatingPointError(f"training loss became {value}; lower the learning rate")
            if dp is not None:
                dp.privatize(params)
            optimizer.step()
            schedule.step()
            if ema is not None:
                ema.update(model)
            total += value
    finally:  # back on the CPU however the loop ends: a kept model never holds GPU memory
        model.to("cpu")
        if ema is not None:
            ema.averaged.to("cpu")
    return total / steps


def batch_size_of(shape) -> int:
    """A step's batch size from its input shape (``shape_of()``); 0 where the shape is not given."""
    return int(shape[0]) if isinstance(shape, (tuple, list)) and shape and isinstance(shape[0], int) else 0


def parameter_layout(model) -> int:
    """What a training step's FLOPs depend on besides the batch: each parameter's name, shape and
    whether it trains (frozen weights need no weight gradient)."""
    return hash(tuple((n, tuple(p.shape), p.requires_grad) for n, p in model.named_parameters()))


def dry_backward(module, dry_loss: Callable, fab, params: list) -> None:
    """One forward and backward pass of ``dry_loss`` whose gradients are then dropped; the global
    RNG is restored (a dropout layer would draw from it)."""
    with torch.random.fork_rng(devices=[]):
        fab.backward(dry_loss(module, fab.device))
    for p in params:
        p.grad = None
        if hasattr(p, "grad_sample"):  # a DP-SGD step's per-sample gradients
            p.grad_sample = None


def train(model, scheduler, data, steps: int, recipe: Recipe, generator: torch.Generator,
          resources: Resources | None = None, flops=None, conditional: bool = False,
          t_range: tuple[int, int] | None = None, start_step: int = 0, ema: "Ema | None" = None,
          extra_loss: Callable | None = None, label_dropout: float = 0.0, null_label: int = -1,
          dp: DpSgd | None = None) -> float:
    """DDPM training on batches drawn from ``data`` (a ClientData) at timesteps in ``t_range``.
    ``extra_loss(module)``, if given, is added to every batch's loss: a protocol's own term
    (a proximal term, a regulariser) without a copy of this loop; the mean loss returned
    includes it. A conditional model with ``label_dropout`` > 0 learns classifier-free guidance
    (``null_label`` = no condition). ``dp``: DP-SGD steps (``fit``)."""
    shape = (recipe.batch_size, *data.images.shape[1:])

    def loss_of(module, device, images, labels, gen):
        loss = diffusion_loss(module, scheduler, images, gen, labels if conditional else None, t_range, device)
        # Fabric (and DP-SGD) wrap the model; the term sees the model itself (same parameters, same names)
        return loss + extra_loss(model) if extra_loss is not None else loss

    def batch_loss(module, device):
        images, labels = (dp.draw(data, recipe.batch_size, generator) if dp is not None
                          else data.sample_batch(recipe.batch_size, generator))
        labels = drop_labels(labels, label_dropout, null_label, generator) if conditional else labels
        return loss_of(module, device, images, labels, generator)

    def dry_loss(module, device):  # a batch's shapes, fixed values, no RNG of the run's
        zeros = torch.zeros(recipe.batch_size, dtype=torch.long)
        return loss_of(module, device, torch.zeros(shape), zeros, torch.Generator().manual_seed(0))

    return fit(model, batch_loss, steps, recipe, resources, flops, start_step, ema, lambda: shape, dry_loss, dp)


@torch.no_grad()
def evaluate(model, scheduler, images: torch.Tensor, batch_size: int, generator: torch.Generator,
             labels: torch.Tensor | None = None) -> float:
    """Held-out denoising loss (``diffusion_loss``, so of the scheduler's prediction type); the
    same generator seed gives the same noise each call."""
    model.eval()
    label_batches = labels.split(batch_size) if labels is not None else [None] * len(images.split(batch_size))
    losses = [diffusion_loss(model, scheduler, x, generator, y).item()
              for x, y in zip(images.split(batch_size), label_batches)]
    return sum(losses) / len(losses)


class Ema:
    """An exponential moving average of a model's weights (torch's ``AveragedModel``): the
    weights that sample and evaluate. Each ``update`` stands for ``steps_per_update``
    optimizer steps (1 in a training loop; a round's local steps for a server averaging the
    global model once a round). The decay warms up as in diffusers' EMAModel,
    ``min(decay, (1 + k) / (10 + k))`` after k steps, so a short run is not stuck near its
    initial weights. ``decay = 0`` follows the raw weights. Its state (weights and update
    count) is a plain state dict: a client keeps it in Flower's ``context.state``."""

    def __init__(self, model, decay: float, state: dict | None = None, steps_per_update: int = 1):
        self.decay, self.steps_per_update = decay, steps_per_update
        self.averaged = AveragedModel(model, device=torch.device("cpu"), multi_avg_fn=self._average, use_buffers=True)
        if state is not None:
            self.averaged.load_state_dict(state)

    def _average(self, averaged: list, current: list, updates: torch.Tensor) -> None:
        """One fused (foreach) update per device and dtype, on the EMA's device: no copy of the
        weights to the CPU each step when training runs on a GPU, one host sync per update."""
        if not averaged[0].is_floating_point():  # counters (e.g. BatchNorm's) follow the model
            torch._foreach_copy_(averaged, current)
            return
        k = int(updates) * self.steps_per_update  # optimizer steps averaged so far
        diff = torch._foreach_sub(current, averaged)  # ema += (weights - ema) * (1 - decay)
        torch._foreach_mul_(diff, 1 - min(self.decay, (1 + k) / (10 + k)) ** self.steps_per_update)
        torch._foreach_add_(averaged, diff)

    def update(self, model) -> None:
        if self.decay <= 0:
            self.averaged.module.load_state_dict(model.state_dict())
        else:
            self.averaged.update_parameters(model)

    @property
    def model(self):
        return self.averaged.module

    def state_dict(self) -> dict:
        return self.averaged.state_dict()


