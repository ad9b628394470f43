"""Membership inference against a diffusion model: the loss-threshold attack.

The attacker holds a denoiser and asks, of each candidate image, "was it trained on?". It
scores an image by minus its denoising loss, the mean over ``TIMESTEPS`` fixed timesteps of the
squared error of the model's prediction (the target the scheduler's ``prediction_type`` names)
on the image noised with fixed noise: a training image tends to have a lower loss. This is the
loss attack of Matsumoto et al. 2023 ("Membership inference attacks against diffusion models")
and the loss-threshold baseline of Carlini et al. 2023 ("Extracting training data from diffusion
models"), without shadow models and with the loss averaged over a few timesteps instead of
taken at one tuned timestep (docs/metrics.md says why). ``mia_auc`` and ``mia_tpr_at_1fpr``
measure how well the scores separate members from non-members: 0.5 and ~0.01 = no leak.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from fedfuse.toolkit.ddpm import training_target

TIMESTEPS = 4  # K: fixed timesteps per image
LOW_FRACTION = 0.5  # they spread over the lower half of the range, where the loss separates (docs/metrics.md)
NOISE_SEED = 0x3A1A  # the same noise for every model, cell and protocol: scores are paired across them
BATCH = 64
FPR = 0.01


def attack_timesteps(t_range: tuple[int, int], k: int = TIMESTEPS) -> torch.Tensor:
    """``k`` fixed timesteps: the midpoints of ``k`` equal bins over the lower ``LOW_FRACTION``
    of ``[low, high)`` (at least one step wide), as integers."""
    low, high = t_range
    span = max(1.0, (high - low) * LOW_FRACTION)
    return (low + span * (torch.arange(k) + 0.5) / k).long().clamp(low, high - 1)


def fixed_noise(k: int, n: int, shape: tuple[int, ...], seed: int = NOISE_SEED) -> torch.Tensor:
    """Noise of shape (k, n, *shape) from ``seed``: image i of either set gets noise[:, i]."""
    return torch.randn((k, n, *shape), generator=torch.Generator().manual_seed(seed))


def scheduler_step_loss(scheduler) -> Callable:
    """The per-image loss of a denoiser trained on ``scheduler``'s noising and target (the
    toolkit's ``training_target``, as it trains): ``step_loss(model, images, t, noise, labels) -> (n,)``."""

    def step_loss(model, images, t, noise, labels):
        kwargs = {} if labels is None else {"class_labels": labels}
        prediction = model(scheduler.add_noise(images, noise, t), t, **kwargs).sample
        return (prediction - training_target(scheduler, images, noise, t)).pow(2).flatten(1).mean(1)

    return step_loss


@torch.no_grad()
def losses(model, step_loss: Callable, images: torch.Tensor, timesteps: torch.Tensor, noise: torch.Tensor,
           labels: torch.Tensor | None = None, batch_size: int = BATCH) -> torch.Tensor:
    """Each image's loss, the mean over ``timesteps`` (image i noised with ``noise[k, i]`` at
    timestep k); the model in eval mode meanwhile, its mode restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        per_step = [step_losses(model, step_loss, images, int(t), noise[k], labels, batch_size)
                    for k, t in enumerate(timesteps)]
    finally:
        model.train(was_training)
    return torch.stack(per_step).mean(0)


def step_losses(model, step_loss: Callable, images: torch.Tensor, t: int, noise: torch.Tensor,
                labels: torch.Tensor | None, batch_size: int) -> torch.Tensor:
    """Each image's loss at timestep ``t``, in batches, on the model's device (back on the CPU)."""
    device, out = next(model.parameters()).device, []
    for start in range(0, len(images), batch_size):
        part = slice(start, min(start + batch_size, len(images)))  # noise may hold more images
        x, y = images[part].to(device), None if labels is None else labels[part].to(device)
        out.append(step_loss(model, x, torch.full((len(x),), t, device=device), noise[part].to(device), y).cpu())
    return torch.cat(out)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks of ``values``, tied values sharing the mean of their ranks."""
    order = np.argsort(values, kind="mergesort")
    _, first, counts = np.unique(values[order], return_index=True, return_counts=True)
    ranks = np.empty(len(values))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)
    return ranks


def auc(member_scores, nonmember_scores) -> float:
    """P(a member scores above a non-member), ties counting one half: the Mann-Whitney U
    statistic from average ranks, / (m n)."""
    members, nonmembers = np.asarray(member_scores, float), np.asarray(nonmember_scores, float)
    m, n = len(members), len(nonmembers)
    rank_sum = average_ranks(np.concatenate([members, nonmembers]))[:m].sum()
    return float((rank_sum - m * (m + 1) / 2) / (m * n))


def tpr_at_fpr(member_scores, nonmember_scores, fpr: float = FPR) -> float:
    """The share of members that the most permissive threshold lets through while it lets at
    most ``fpr`` of the non-members through (a score strictly above it passes). With
    ``n`` non-members that threshold is the ``floor(fpr n) + 1``-th highest non-member score:
    below 100 non-members (at 1 %), the share of members scoring above every non-member."""
    members, nonmembers = np.asarray(member_scores, float), np.sort(np.asarray(nonmember_scores, float))[::-1]
    threshold = nonmembers[min(int(np.floor(fpr * len(nonmembers))), len(nonmembers) - 1)]
    return float(np.mean(members > threshold))


def scores(model, step_loss: Callable, images: torch.Tensor, labels, t_range: tuple[int, int],
           noise: torch.Tensor) -> np.ndarray:
    """The attack's score of each image: minus its loss (higher = more likely a member)."""
    return -losses(model, step_loss, images, attack_timesteps(t_range, len(noise)), noise, labels).numpy()


def attack(model, scheduler, members: torch.Tensor, nonmembers: torch.Tensor, member_labels=None,
           nonmember_labels=None, t_range: tuple[int, int] | None = None, step_loss: Callable | None = None,
           timesteps: int = TIMESTEPS, seed: int = NOISE_SEED) -> dict:
    """The loss-threshold attack on ``model`` (trained with ``scheduler``; in ``t_range`` only,
    default the whole timeline) with the model's inputs of members and non-members, and their
    class labels for a conditional model. ``step_loss`` replaces the scheduler's noising and
    target for a denoiser trained otherwise. Member i and non-member i get the same noise."""
    t_range = t_range or (0, scheduler.config.num_train_timesteps)
    step_loss = step_loss or scheduler_step_loss(scheduler)
    noise = fixed_noise(timesteps, max(len(members), len(nonmembers)), tuple(members.shape[1:]), seed)
    inside = scores(model, step_loss, members, member_labels, t_range, noise)
    outside = scores(model, step_loss, nonmembers, nonmember_labels, t_range, noise)
    return {"mia_auc": auc(inside, outside), "mia_tpr_at_1fpr": tpr_at_fpr(inside, outside),
            "mia_members": len(inside), "mia_nonmembers": len(outside)}


# --- who the members and non-members are (the harness draws them) -------------------------------

def draw_members(private: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` of the clients' ``private`` image indices (all if fewer), drawn with ``seed``."""
    rng = np.random.default_rng(seed)
    return rng.choice(private, size=min(n, len(private)), replace=False)


def class_matched(member_labels: np.ndarray, pool_labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions (into the members, into the held-out pool) of two equal-size sets with the same
    number of images of each class: each class's members paired, in order, with the pool's first
    images of that class; members of a class the pool has fewer of are left out. Class-matched,
    so that the attack cannot tell the sets apart by how hard their classes are to denoise."""
    kept_members, kept_pool = [], []
    for label in np.unique(member_labels):
        mine, theirs = np.flatnonzero(member_labels == label), np.flatnonzero(pool_labels == label)
        k = min(len(mine), len(theirs))
        kept_members.append(mine[:k])
        kept_pool.append(theirs[:k])
    return np.concatenate(kept_members), np.concatenate(kept_pool)

