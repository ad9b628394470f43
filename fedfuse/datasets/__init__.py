"""Image datasets and the partitioning of their training part across clients."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


class DatasetError(ValueError):
    """A dataset cannot be loaded as asked; the message says why and what to do."""


@dataclass(frozen=True)
class ImageData:
    """A decoded dataset: float32 images in [-1, 1], shape (N, C, H, W), and int64 labels.

    ``eval_*`` is the fixed held-out split that no protocol trains on. ``attributes`` maps
    an attribute name (e.g. CelebA's ``Male``) to one int per training image, for
    attribute-group partitions. ``public`` indexes training images any party may use
    (e.g. to pre-train a base model); clients are partitioned over the rest, ``private``.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    class_names: tuple[str, ...]
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    public: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    warnings: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    @property
    def private(self) -> np.ndarray:
        return np.setdiff1d(np.arange(len(self.train_labels)), self.public)


@dataclass(frozen=True)
class ClientData:
    """A client's partition: an index view into the decoded training images (no copy)."""

    images: torch.Tensor
    labels: torch.Tensor
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.indices)

    def sample_batch(self, batch_size: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch drawn uniformly with replacement from the partition."""
        pick = self.indices[torch.randint(len(self.indices), (batch_size,), generator=generator)]
        return self.images[pick], self.labels[pick]

    def poisson_batch(self, rate: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of Poisson sampling: each image of the partition in it independently with
        probability ``rate`` (DP-SGD's sampling, ``fedfuse.toolkit.privacy``)."""
        pick = self.indices[torch.rand(len(self.indices), generator=generator) < rate]
        if len(pick) == 0:
            raise RuntimeError(f"a Poisson-sampled batch came out empty (rate {rate:.3g} over {len(self.indices)} "
                               "images); raise the batch size")
        return self.images[pick], self.labels[pick]


def to_unit_range(uint8_images: np.ndarray) -> torch.Tensor:
    """uint8 (N, C, H, W) in [0, 255] -> float32 in [-1, 1]."""
    return torch.from_numpy(uint8_images).float().div_(127.5).sub_(1.0)


def held_out_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random (train, eval) index split, fixed by ``seed`` (never by position)."""
    rng = np.random.default_rng(seed)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    # at least one held-out image per class that has two, so small folders still get an eval split
    eval_idx = [rng.permutation(m)[: max(round(len(m) * fraction), int(len(m) > 1))] for m in members]
    eval_idx = np.sort(np.concatenate(eval_idx))
    return np.setdiff1d(np.arange(len(labels)), eval_idx), eval_idx
