"""scikit-learn's handwritten digits: 1,797 images of 8x8 pixels, shipped inside scikit-learn."""

from __future__ import annotations

import functools

import numpy as np
import torch

from fedfuse.datasets import ImageData

EVAL_FRACTION = 1 / 6  # ~300 held-out images
SPLIT_SEED = 20240301  # fixed: the held-out split never depends on a cell's seed


def held_out_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified random (train, eval) index split, fixed by ``seed``."""
    rng = np.random.default_rng(seed)
    eval_idx = []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        eval_idx.append(members[: round(len(members) * fraction)])
    eval_idx = np.sort(np.concatenate(eval_idx))
    train_idx = np.setdiff1d(np.arange(len(labels)), eval_idx)
    return train_idx, eval_idx


@functools.cache
def load_digits() -> ImageData:
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load()
    images = torch.from_numpy(raw.images.astype(np.float32) / 16.0 * 2 - 1).unsqueeze(1)
    labels = torch.from_numpy(raw.target.astype(np.int64))
    train_idx, eval_idx = held_out_split(raw.target, EVAL_FRACTION, SPLIT_SEED)
    return ImageData(
        train_images=images[train_idx], train_labels=labels[train_idx],
        eval_images=images[eval_idx], eval_labels=labels[eval_idx],
        class_names=tuple(str(d) for d in range(10)),
    )
