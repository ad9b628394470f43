"""Image datasets and the partitioning of their training part across clients."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ImageData:
    """A decoded dataset: float32 images in [-1, 1], shape (N, C, H, W), and int64 labels.

    ``eval_*`` is the fixed held-out split that no protocol trains on.
    """

    train_images: torch.Tensor
    train_labels: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    class_names: tuple[str, ...]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])


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
