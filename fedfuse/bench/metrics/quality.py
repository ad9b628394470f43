"""FID, KID, precision, recall, density and coverage between generated and held-out real images,
in a named feature space.

FID and KID are torchmetrics' own; they are handed features already computed (through an
identity "feature network"), so every image is embedded once for all metrics. Precision,
recall, density and coverage are the k-NN estimates of the ``prdc`` package (Naeem et al.
2020). Measured here: k-NN precision *rises* under blur and noise at these sizes, so rank on
FID, KID, recall and coverage.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import torch
from torch import nn


class Precomputed(nn.Module):
    """An identity 'feature extractor': torchmetrics receives features we already computed."""

    def __init__(self, dim: int):
        super().__init__()
        self.num_features = dim

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@torch.no_grad()
def embed(net: nn.Module, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    return torch.cat([net(batch) for batch in images.split(batch_size)]).double()


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    """FID between two sets of features."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=Precomputed(real.shape[1])).double()
    metric.update(real, real=True)
    metric.update(fake, real=False)
    return float(metric.compute())


def fid_kid(real: torch.Tensor, fake: torch.Tensor, kid_subsets: int = 50) -> dict:
    from torchmetrics.image.kid import KernelInceptionDistance

    subset = min(len(real), len(fake), 1000) // 2  # two disjoint-ish halves per draw: an unbiased spread
    with warnings.catch_warnings():  # "will save all extracted features": a few hundred vectors here
        warnings.simplefilter("ignore", UserWarning)
        kid = KernelInceptionDistance(feature=Precomputed(real.shape[1]), subsets=kid_subsets, subset_size=subset)
    kid.update(real, real=True)
    kid.update(fake, real=False)
    with torch.random.fork_rng():  # KID draws its subsets from the global RNG: make them repeatable
        torch.manual_seed(0)
        kid_mean, kid_std = kid.compute()
    return {"fid": fid(real, fake), "kid": float(kid_mean), "kid_std": float(kid_std)}


def prdc(real: torch.Tensor, fake: torch.Tensor, k: int = 5) -> dict:
    """Precision, recall, density, coverage (Naeem et al. 2020) with ``k`` nearest neighbours;
    fewer when a set is too small to have k (a client's few held-out images of its classes)."""
    from prdc import compute_prdc

    k = min(k, len(real) - 2, len(fake) - 2)  # compute_prdc partitions at k + 1 over each set
    if k < 1:  # too few images for any neighbour: no such scores (a cell's metrics stay finite)
        return {}
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the sample counts
        out = compute_prdc(real_features=real.numpy(), fake_features=fake.numpy(), nearest_k=k)
    return {key: float(value) for key, value in out.items()}


def score(net: nn.Module, real_images: torch.Tensor, fake_images: torch.Tensor) -> dict:
    """All quality metrics of ``fake_images`` against ``real_images`` (both in [-1, 1])."""
    if not torch.isfinite(fake_images).all():
        raise FloatingPointError("generated images contain NaN or inf")
    real, fake = embed(net, real_images), embed(net, fake_images)
    return {**fid_kid(real, fake), **prdc(real, fake)}


def save_grid(images: torch.Tensor, path, columns: int = 8) -> None:
    """The first ``columns``^2 images as one PNG (greyscale or RGB)."""
    from PIL import Image

    images = images[: columns * columns]
    rows = -(-len(images) // columns)
    c, h, w = images.shape[1:]
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
    grid = np.zeros((c, rows * (h + 2), columns * (w + 2)), dtype=np.uint8)
    for i, img in enumerate(pixels):
        r, col = divmod(i, columns)
        grid[:, r * (h + 2) + 1: r * (h + 2) + 1 + h, col * (w + 2) + 1: col * (w + 2) + 1 + w] = img
    mode_img = Image.fromarray(grid[0]) if c == 1 else Image.fromarray(grid.transpose(1, 2, 0))
    scale = max(1, 256 // (rows * (h + 2)))  # small images are enlarged so a person can see them
    mode_img.resize((mode_img.width * scale, mode_img.height * scale), Image.Resampling.NEAREST).save(path)
