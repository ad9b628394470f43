"""The DDPM recipe every protocol trains with: the loss of the scheduler's prediction type
(epsilon for fedfuse's own schedule; v or the clean sample for a scheduler configured so),
the recipe's optimizer (AdamW, or SGD) with a linear warm-up, an EMA of the weights for sampling and evaluation, on the device
Lightning Fabric gives.

Protocols say *what* to train (the model, which parameters, the loss of a batch, a t-range);
``fit`` owns *how* (device, precision, optimizer, warm-up, the non-finite guard, FLOP counting).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from torch.optim.swa_utils import AveragedModel

from fedfuse.toolkit import compiling
from fedfuse.toolkit.device import Resources, fabric, to_device
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
    noisy = to_device(scheduler.add_noise(images, noise, t), device)
    kwargs = {"class_labels": to_device(labels, device)} if labels is not None else {}
    target = training_target(scheduler, images, noise, t)
    return F.mse_loss(model(noisy, to_device(t, device), **kwargs).sample, to_device(target, device))


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
    ``dry_step``) and no real step runs under the counter; with ``compile`` on (``resources``)
    it is also the batch the compiled gradients are checked on. ``dp`` (a ``DpSgd``, which the
    harness hands a client as ``run.dp_sgd(round)``) makes every step a DP-SGD step: the batch
    loss must then be a mean of per-image losses. Returns the mean loss (a non-finite one raises
    ``FloatingPointError``: ``checked_sum``); the model is back on the CPU afterwards."""
    with dp.per_sample(model) if dp is not None else contextlib.nullcontext(model) as trained:
        return _fit(model, trained, batch_loss, steps, recipe, resources, flops, start_step, ema, shape_of,
                    dry_loss, dp)


def _fit(model, trained, batch_loss, steps, recipe, resources, flops, start_step, ema, shape_of, dry_loss, dp):
    """``fit``'s loop; ``trained`` is ``model`` or its per-sample-gradient wrapper."""
    fab = fabric(resources)
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        module, optimizer = fab.setup(maybe_compiled(trained, resources, fab, dry_loss, dp, shape_of),
                                      recipe.make_optimizer(params))
        module.train()
        if ema is not None:
            ema.to(fab.device)
        flops = count_flops(module, model, trained, fab, params, flops, steps, shape_of, dry_loss, dp)
        return _steps(module, model, optimizer, batch_loss, steps, recipe, start_step, ema, shape_of, flops,
                      params, fab, dp)
    finally:  # back on the CPU however the loop ends: a kept model never holds GPU memory
        model.to("cpu")
        if ema is not None:
            ema.to("cpu")


def count_flops(module, model, trained, fab, params, flops, steps, shape_of, dry_loss, dp):
    """What a track's budget counts (optimizer steps x batch size) and, given ``dry_loss``, the
    FLOPs of ``steps`` steps from one throwaway step (FlopMeter's ``dry_step``). Returns the
    meter the real steps count under: None once the throwaway step has counted them."""
    if flops is None:
        return None
    flops.count_examples(steps * batch_size_of(shape_of()))
    if dry_loss is None:
        return flops

    def dry():  # a DP-SGD step is counted as a plain one (DpSgd.plain_pass says why)
        with dp.plain_pass(trained) if dp is not None else contextlib.nullcontext():
            dry_backward(module, dry_loss, fab, params)

    with torch.compiler.set_stance("force_eager"):  # torch's FLOP counter sees eager ops only
        flops.dry_step("train", (shape_of(), parameter_layout(model)), steps, dry)
    return None


def _steps(module, model, optimizer, batch_loss, steps, recipe, start_step, ema, shape_of, flops, params, fab, dp):
    """The optimizer steps; returns the mean loss. The losses' sum stays where they are: on a
    GPU, reading it each step would stop the host every step."""
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup(start_step + s, recipe.warmup_steps))
    total = torch.zeros((), dtype=torch.float64, device=fab.device)
    for _ in range(steps):
        with flops.step("train", shape_of()) if flops else contextlib.nullcontext():
            loss = batch_loss(module, fab.device)
            optimizer.zero_grad(set_to_none=True)
            fab.backward(loss)
        total += loss.detach().double()
        if fab.device.type == "cpu":  # free here: a NaN stops the run before its update
            checked_sum(total)
        if dp is not None:
            dp.privatize(params)
        optimizer.step()
        schedule.step()
        if ema is not None:
            ema.update(model)
    return checked_sum(total) / steps


def checked_sum(total: torch.Tensor) -> float:
    """The losses' sum so far, which a NaN or inf loss makes non-finite: the non-finite guard.
    On the CPU it runs every step, before the optimizer applies that loss's gradients; on a GPU
    once, after the loop (the model and EMA then hold the non-finite steps' updates, and the
    error refuses them as a CPU run's would)."""
    value = total.item()
    if not math.isfinite(value):
        raise FloatingPointError(f"training loss became {value}; lower the learning rate")
    return value


def maybe_compiled(model, resources: Resources | None, fab, dry_loss, dp, shape_of):
    """What the loop steps: ``model``, or with ``compile`` on its compiled form once checked
    (``compiling.compiled``). DP-SGD's per-sample gradients hook eager autograd: it stays eager."""
    if resources is None or resources.compile_backend is None:
        return model
    if dp is not None:
        raise ValueError("'compile' does not apply to DP-SGD training (per-sample gradients need eager mode)")
    return compiling.compiled(model, fab, resources.precision, resources.compile_backend, dry_loss,
                              (shape_of(), parameter_layout(model)))


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
    """An exponential moving average of a model's weights (kept in torch's ``AveragedModel``, whose
    state dict it is): the weights that sample and evaluate. Each ``update`` stands for
    ``steps_per_update`` optimizer steps (1 in a training loop; a round's local steps for a
    server averaging the global model once a round). The decay warms up as in diffusers'
    EMAModel, ``min(decay, (1 + k) / (10 + k))`` after k steps, so a short run is not stuck near
    its initial weights. ``decay = 0`` follows the raw weights. Its state (weights and update
    count) is a plain state dict: a client keeps it in Flower's ``context.state``."""

    def __init__(self, model, decay: float, state: dict | None = None, steps_per_update: int = 1):
        self.decay, self.steps_per_update = decay, steps_per_update
        self.averaged = AveragedModel(model, device=torch.device("cpu"), use_buffers=True)
        if state is not None:
            self.averaged.load_state_dict(state)

    def update(self, model) -> None:
        """One fused (foreach) update on the EMA's device. The count stays on the CPU (``to``),
        so a GPU step never waits for the card to read it, as ``AveragedModel``'s own would."""
        if self.decay <= 0:
            self.averaged.module.load_state_dict(model.state_dict())
            return
        averaged = [t.detach() for t in itertools.chain(self.model.parameters(), self.model.buffers())]
        current = [t.detach().to(a.device) for t, a in
                   zip(itertools.chain(model.parameters(), model.buffers()), averaged, strict=True)]
        count = int(self.averaged.n_averaged)
        if count == 0:
            torch._foreach_copy_(averaged, current)
        else:
            self._average(averaged, current, count)
        self.averaged.n_averaged += 1

    def _average(self, averaged: list, current: list, count: int) -> None:
        """ema += (weights - ema) * (1 - decay) for floating tensors; counters (e.g.
        BatchNorm's) follow the model."""
        k = count * self.steps_per_update  # optimizer steps averaged so far
        weight = 1 - min(self.decay, (1 + k) / (10 + k)) ** self.steps_per_update
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        counters = [(a, c) for a, c in zip(averaged, current) if not a.is_floating_point()]
        if counters:
            torch._foreach_copy_(*map(list, zip(*counters)))
        if not floats:
            return
        ema, weights = map(list, zip(*floats))
        diff = torch._foreach_sub(weights, ema)
        torch._foreach_mul_(diff, weight)
        torch._foreach_add_(ema, diff)

    def to(self, device) -> "Ema":
        """The averaged weights on ``device``; the update count stays on the CPU."""
        self.averaged.module.to(device)
        return self

    @property
    def model(self):
        return self.averaged.module

    def state_dict(self) -> dict:
        return self.averaged.state_dict()
