"""Split diffusion (CollaFuse): the diffusion timeline cut between a client and the server.
No flwr here.

Timesteps 0..T-1 (diffusers' indexing). With cut ratio c — the server's share — the cut is
``t_c = round((1 - c) * T)``: each client owns the low-noise steps ``t < t_c`` with a private
denoiser; the server owns ``t >= t_c`` with one shared denoiser. c = 0: all on the client,
nothing shared; c = 1: all on the server, clients share clean images.

What a client shares is ``x_cut = q(x_{t_c - 1} | x_0)``, its images noised to the cut. The
server's denoiser is a diffusion model whose data are these ``x_cut``, with the remaining betas
``beta[t_c:]``: noising ``x_cut`` with them gives exactly the marginal ``q(x_t | x_0)`` (the
``exact`` mode, default). The reference code instead re-noises ``x_cut`` with fresh noise as if
it were clean (``reference`` mode), which over-noises it. Clients may cut at different points;
then, in exact mode, the server's one denoiser is conditioned on the cut (``needs_cut_labels``).

Conditioning (``condition = "label"`` or an attribute): both sides' models take the image's
condition, learnt with classifier-free guidance (a null condition in training; at sampling
``Guided`` where ``guidance`` is not 1, plain conditional at 1, the default). The server's model has one embedding per (cut label, condition or null):
``joint_label``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler
from torch import nn

from fedfuse.api import ClientData, ConfigError, ImageData, build_scheduler, conditioned, drop_labels, fit, to_device


def cut_index(cut_ratio: float, timesteps: int) -> int:
    """The first timestep the server owns (the client owns t < t_c)."""
    if not 0.0 <= cut_ratio <= 1.0:
        raise ValueError(f"cut ratio must be in [0, 1], got {cut_ratio}")
    return round((1.0 - cut_ratio) * timesteps)


class Offset(nn.Module):
    """A denoiser called with local timesteps s of a sub-schedule, embedded as absolute t = s + offset."""

    def __init__(self, model: nn.Module, offset: int):
        super().__init__()
        self.model, self.offset = model, offset

    def forward(self, x, t, **kwargs):
        return self.model(x, t + self.offset, **kwargs)


def full_schedule(timesteps: int) -> DDPMScheduler:
    """The whole chain's noise schedule, which every cut splits (the toolkit's DDPM schedule)."""
    return build_scheduler(timesteps)


def noise_to_cut(x0: torch.Tensor, timesteps: int, t_c: int, generator: torch.Generator) -> torch.Tensor:
    """x_cut = q(x_{t_c - 1} | x_0); the clean images when the server owns everything (t_c = 0)."""
    if t_c == 0:
        return x0.clone()
    noise = torch.randn(x0.shape, generator=generator)
    return full_schedule(timesteps).add_noise(x0, noise, torch.full((len(x0),), t_c - 1))


def cut_scales(timesteps: int, t_c: int) -> tuple[float, float]:
    """(a, s) of x_cut = a·x_0 + s·noise: how much image and how much noise it carries."""
    if t_c == 0:
        return 1.0, 0.0
    alpha_bar = float(full_schedule(timesteps).alphas_cumprod[t_c - 1])
    return alpha_bar ** 0.5, (1 - alpha_bar) ** 0.5


def shared_cuts(cuts, timesteps: int) -> list[int]:
    """The distinct cuts at which clients hand over to the server (a client with t_c = T hands
    over nothing). Sorted: a cut's position is its label for a cut-conditioned server model."""
    return sorted({int(t_c) for t_c in cuts if t_c < timesteps})


def needs_cut_labels(marginal: str, cuts: list[int]) -> bool:
    """In exact mode the server's target at (x_t, t) is the noise added since the cut, which
    depends on the cut: with clients at different cuts its one denoiser is conditioned on it.
    The reference mode, like the reference code, trains one unconditioned model."""
    return marginal == "exact" and len(cuts) > 1


def noise_from_cut(x_cut: torch.Tensor, cuts: torch.Tensor, t: torch.Tensor, timesteps: int, marginal: str,
                   noise: torch.Tensor) -> torch.Tensor:
    """x_t for each element's t >= its cut. Exact: q(x_t | x_{t_c - 1}), whose marginal is
    q(x_t | x_0). Reference: x_cut noised as if it were clean, q(x_t | x_0 := x_cut)."""
    abar = full_schedule(timesteps).alphas_cumprod
    if marginal == "exact":  # abar_t / abar_{t_c - 1}, and abar_t when x_cut is x_0 (t_c = 0)
        abar_t = abar[t] / torch.where(cuts > 0, abar[(cuts - 1).clamp(min=0)], torch.ones(()))
    else:
        abar_t = abar[t]
    scale = abar_t.view(-1, *[1] * (x_cut.dim() - 1))
    return scale.sqrt() * x_cut + (1 - scale).sqrt() * noise


def server_loss(model, x_cut, cuts, labels, timesteps: int, marginal: str, generator, device="cpu") -> torch.Tensor:
    """Noise prediction at t drawn uniformly from each element's own [t_c, T); draws on the
    CPU generator, computes on ``device``."""
    t = cuts + (torch.rand(len(cuts), generator=generator) * (timesteps - cuts)).long()
    noise = torch.randn(x_cut.shape, generator=generator)
    kwargs = {} if labels is None else {"class_labels": to_device(labels, device)}
    noisy = to_device(noise_from_cut(x_cut, cuts, t, timesteps, marginal, noise), device)
    return F.mse_loss(model(noisy, to_device(t, device), **kwargs).sample, to_device(noise, device))


def cut_step_loss(timesteps: int, t_c: int):
    """The membership attack's per-image loss on the server's denoiser (exact marginal, one cut
    t_c): x_t drawn from q(x_t | x_0), and as the target the noise added since the cut, in
    expectation given x_t and x_0: sqrt((1 - r) / (1 - abar_t)) * eps with r = abar_t / abar_{t_c - 1}
    (abar_t when x_cut is x_0). It differs from the server's own loss by a constant per t."""
    schedule = full_schedule(timesteps)
    abar = schedule.alphas_cumprod

    def step_loss(model, x0, t, noise, labels):
        r = abar[t] / (abar[t_c - 1] if t_c > 0 else 1.0)
        scale = ((1 - r) / (1 - abar[t])).sqrt().view(-1, *[1] * (x0.dim() - 1))
        kwargs = {} if labels is None else {"class_labels": labels}
        prediction = model(schedule.add_noise(x0, noise, t), t, **kwargs).sample
        return (prediction - scale * noise).pow(2).flatten(1).mean(1)

    return step_loss


def train_server(model, pool: dict, timesteps: int, marginal: str, steps: int, recipe, generator: torch.Generator,
                 resources=None, flops=None, start_step: int = 0, ema=None, n_cond: int = 0,
                 cond_dropout: float = 0.0) -> float:
    """The server's denoiser, trained by the shared recipe on the shared pool: ``x_cut`` with
    each image's ``cut``, its ``cut_label`` when the model is cut-conditioned and its ``cond``
    (one of ``n_cond`` values, dropped to none with probability ``cond_dropout``)."""
    shape = (recipe.batch_size, *pool["x_cut"].shape[1:])

    def loss_of(module, device, pick, gen):
        cut_label = pool["cut_label"][pick] if "cut_label" in pool else None
        cond = drop_labels(pool["cond"][pick], cond_dropout, n_cond, gen) if "cond" in pool else None
        return server_loss(module, pool["x_cut"][pick], pool["cut"][pick], joint_label(cut_label, cond, n_cond),
                           timesteps, marginal, gen, device)

    def batch_loss(module, device):
        return loss_of(module, device, torch.randint(len(pool["x_cut"]), (recipe.batch_size,), generator=generator),
                       generator)

    def dry_loss(module, device):  # a batch's shapes (the first image, repeated), no RNG of the run's
        return loss_of(module, device, torch.zeros(recipe.batch_size, dtype=torch.long), torch.Generator().manual_seed(0))

    return fit(model, batch_loss, steps, recipe, resources, flops, start_step, ema, lambda: shape, dry_loss)


# --- conditioning ------------------------------------------------------------------------------

def condition_values(data: ImageData, condition: str) -> tuple[torch.Tensor | None, int]:
    """Each training image's condition and the number of values (0: unconditional): the class
    label, or a dataset attribute such as CelebA's ``Smiling`` (0/1)."""
    if condition == "none":
        return None, 0
    if condition == "label":
        return data.train_labels, len(data.class_names)
    if condition not in data.attributes:
        raise ConfigError(f"condition '{condition}': the dataset has no such attribute; use 'none', 'label' "
                          f"or one of: {', '.join(data.attributes) or '(no attributes)'}")
    values = torch.from_numpy(data.attributes[condition]).long()
    return values, int(values.max()) + 1


def with_conditions(view: ClientData, values: torch.Tensor | None) -> ClientData:
    """The client's data with each image's condition as its label (unchanged when unconditional)."""
    return view if values is None else ClientData(view.images, values, view.indices)


def joint_label(cut_label, cond, n_cond: int):
    """The server model's class label for (cut label, condition); ``cond == n_cond`` is 'no
    condition'. None when the model is neither cut- nor condition-conditioned."""
    if n_cond == 0:
        return cut_label
    return cond if cut_label is None else cut_label * (n_cond + 1) + cond


def server_classes(cut_labels: int, n_cond: int) -> int | None:
    """How many class embeddings the server's model needs (None: unconditional)."""
    if n_cond == 0:
        return cut_labels or None
    return max(1, cut_labels) * (n_cond + 1)


class Recorded:
    """A client's data that keeps every batch it hands out: with ``share = "batches"`` a client
    shares exactly the images it trained on, as CollaFuse's clients do."""

    def __init__(self, data: ClientData):
        self.data, self.batches = data, []

    @property
    def images(self) -> torch.Tensor:
        return self.data.images

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.data.sample_batch(batch_size, generator)
        self.batches.append(batch)
        return batch

    def poisson_batch(self, rate: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        batch = self.data.poisson_batch(rate, generator)
        self.batches.append(batch)
        return batch

    def drawn(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.cat([x for x, _ in self.batches]), torch.cat([y for _, y in self.batches])


def interleaved(sizes: list[int], batch_size: int) -> torch.Tensor:
    """Indices into the concatenation of parts of ``sizes`` that take one batch of each part in
    turn: [3, 5] by 2 gives 0 1 | 3 4 | 2 | 5 6 | 7."""
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    order = [torch.arange(start + b, start + min(b + batch_size, size))
             for b in range(0, max(sizes, default=0), batch_size)
             for start, size in zip(starts, sizes) if b < size]
    return torch.cat(order) if order else torch.zeros(0, dtype=torch.long)


class Pool:
    """The server's training data across rounds: every image received, with its cut and
    (when conditioned) condition; the newest ``capacity`` are kept (first in, first out)."""

    def __init__(self, capacity: int):
        self.capacity, self.tensors = capacity, {}

    def add(self, **tensors: torch.Tensor) -> None:
        for key, value in tensors.items():
            joined = torch.cat([self.tensors[key], value]) if key in self.tensors else value
            self.tensors[key] = joined[-self.capacity:]

    def __len__(self) -> int:
        return len(self.tensors.get("x_cut", ()))


def ddim_over(betas: torch.Tensor, steps: int) -> DDIMScheduler:
    """DDIM over a (sub-)schedule, starting at its last timestep and ending at its clean end."""
    scheduler = DDIMScheduler(num_train_timesteps=len(betas), trained_betas=betas.tolist(),
                              timestep_spacing="trailing", set_alpha_to_one=True)
    scheduler.set_timesteps(max(1, min(steps, len(betas))))
    return scheduler


def split_steps(total: int, t_c: int, timesteps: int) -> tuple[int, int]:
    """Sampling steps (server, client), in proportion to the part of the timeline each owns."""
    server = 0 if t_c == timesteps else max(1, round(total * (timesteps - t_c) / timesteps))
    client = 0 if t_c == 0 else max(1, total - server)
    return server, client


def server_sample(model, timesteps: int, t_c: int, marginal: str, n: int, shape, steps: int,
                  generator: torch.Generator, flops=None, labels: torch.Tensor | None = None, null_label: int = -1,
                  guidance: float = 1.0, resources=None) -> torch.Tensor:
    """The server's part of sampling: pure noise down to the cut (x_cut); ``labels`` are the
    model's class labels (``joint_label``) when it is conditioned, ``null_label`` the one
    guidance contrasts them with."""
    from fedfuse.api import denoise

    x = torch.randn((n, *shape), generator=generator)
    betas = full_schedule(timesteps).betas
    if marginal == "exact":
        scheduler = ddim_over(betas[t_c:], steps)
        model, kwargs = conditioned(Offset(model, t_c), labels, null_label, guidance)
        return denoise(model, scheduler, x, scheduler.timesteps, generator, flops, resources, **kwargs)
    scheduler = ddim_over(betas, round(steps * timesteps / max(1, timesteps - t_c)))
    model, kwargs = conditioned(model, labels, null_label, guidance)
    return denoise(model, scheduler, x, [t for t in scheduler.timesteps if t >= t_c], generator, flops, resources,
                   **kwargs)


def client_sample(model, timesteps: int, t_c: int, x_cut: torch.Tensor, steps: int, generator: torch.Generator,
                  flops=None, resources=None, labels: torch.Tensor | None = None, null_label: int = -1,
                  guidance: float = 1.0) -> torch.Tensor:
    """The client's part: from the cut (or from pure noise when it owns everything) to x_0.
    With the server's model instead, the server's own approximation of x_0 (``approx``, from a
    received x_cut; ``fresh``, from its own, is CollaFuse's ``cloud_approx``): a model that never
    trained on t < t_c carried on down to 0."""
    from fedfuse.api import denoise

    scheduler = ddim_over(full_schedule(timesteps).betas[:t_c], steps)
    model, kwargs = conditioned(model, labels, null_label, guidance)
    return denoise(model, scheduler, x_cut, scheduler.timesteps, generator, flops, resources, **kwargs).clamp(-1, 1)


def naive_reconstruction(x_cut: torch.Tensor, timesteps: int, t_c: int) -> torch.Tensor:
    """What the server can read off a shared x_cut without a model for t < t_c: its mean
    rescaled, E[x_0] under q(x_cut | x_0) = N(sqrt(abar) x_0, (1 - abar) I)."""
    if t_c == 0:
        return x_cut
    abar = full_schedule(timesteps).alphas_cumprod[t_c - 1]
    return (x_cut / abar.sqrt()).clamp(-1, 1)


@dataclass
class ServerModel:
    """The server's trained (EMA) model and how it is labelled: the cut labels and the number
    of condition values."""

    model: object
    cuts: dict
    labels: dict
    n_cond: int

    def label_of(self, node, cond: torch.Tensor | None, n: int):
        """(class labels, null label) of the server's model for ``n`` images of ``node`` with
        conditions ``cond``."""
        cut_label = self.labels.get(self.cuts[node])
        if cond is None and cut_label is None:
            return None, -1
        cut = None if cut_label is None else torch.full((n,), cut_label)
        null = joint_label(cut_label, self.n_cond, self.n_cond) if self.n_cond else -1
        return joint_label(cut, cond, self.n_cond), null

    def guidance(self, scale: float) -> float:
        """Classifier-free guidance applies to conditions, not to the cut label."""
        return scale if self.n_cond else 1.0
