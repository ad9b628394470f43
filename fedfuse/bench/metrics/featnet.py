"""Feature networks: small classifiers trained by fedfuse on a dataset's training split. Their
penultimate layer is the feature space FID/KID/recall/coverage are computed in.

Shipped for the built-in datasets (``weights/<dataset>-featnet-v1.pt`` with a ``.json`` card:
seed, epochs, test accuracy, parameter count, the command that made it); trained on demand
and cached by content hash for user datasets. Reproduce a shipped one with::

    python -m fedfuse.bench.metrics.featnet fashion-mnist
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from fedfuse.files import write_atomic

VERSION = "v1"
FEATURE_DIM = 128
MIN_ACCURACY = 0.80  # below this the feature space is used only with a warning
WEIGHTS = Path(__file__).parent / "weights"
TRAIN = {"epochs": 4, "batch_size": 128, "lr": 2e-3, "seed": 0}


class FeatureNet(nn.Module):
    """Two conv blocks, a pooled 2x2 grid, a 128-d ReLU feature layer, a linear classifier."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        block = lambda cin, cout: nn.Sequential(  # noqa: E731
            nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))
        self.body = nn.Sequential(block(channels, 32), block(32, 64), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.features = nn.Sequential(nn.Linear(256, FEATURE_DIM), nn.ReLU())
        self.head = nn.Linear(FEATURE_DIM, num_classes)
        self.num_features = FEATURE_DIM  # read by torchmetrics' FID/KID

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features of images in [-1, 1] (what FID/KID consume)."""
        return self.features(self.body(images))

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward(images))


def fit(data, epochs: int, batch_size: int, lr: float, seed: int, log=print) -> FeatureNet:
    torch.manual_seed(seed)
    net = FeatureNet(data.image_shape[0], len(data.class_names))
    opt = torch.optim.AdamW(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * -(-len(data.train_labels) // batch_size))
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        net.train()
        for idx in torch.randperm(len(data.train_labels), generator=gen).split(batch_size):
            loss = F.cross_entropy(net.logits(data.train_images[idx]), data.train_labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        log(f"epoch {epoch + 1}/{epochs}: test accuracy {accuracy(net, data):.4f}")
    return net.eval()


@torch.no_grad()
def accuracy(net: FeatureNet, data) -> float:
    net.eval()
    hits = sum((net.logits(x).argmax(1) == y).sum().item()
               for x, y in zip(data.eval_images.split(512), data.eval_labels.split(512)))
    return hits / len(data.eval_labels)


def card_for(name: str, net: FeatureNet, data, seconds: float) -> dict:
    return {"feature_space": f"{name}-featnet-{VERSION}", "dataset": name, "version": VERSION,
            "test_accuracy": round(accuracy(net, data), 4), "params": sum(p.numel() for p in net.parameters()),
            "feature_dim": FEATURE_DIM, "train": TRAIN, "train_seconds": round(seconds, 1),
            "command": f"python -m fedfuse.bench.metrics.featnet {name}", "torch": torch.__version__}


def train_and_save(name: str, data, folder: Path, log=print) -> tuple[FeatureNet, dict]:
    start = time.time()
    net = fit(data, **TRAIN, log=log)
    card = card_for(name, net, data, time.time() - start)
    folder.mkdir(parents=True, exist_ok=True)
    # The card first, the weights last: a reader that finds the weights finds a whole card.
    space = card["feature_space"]
    write_atomic(folder / f"{space}.json", lambda tmp: tmp.write_text(json.dumps(card, indent=1) + "\n"))
    write_atomic(folder / f"{space}.pt", lambda tmp: torch.save(net.state_dict(), tmp))
    return net, card


def content_key(data) -> str:
    """Hash of a dataset's images and labels: user datasets' feature nets are cached by it."""
    h = hashlib.sha256()
    for t in (data.train_images, data.train_labels, data.eval_labels):
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


_LOADED: dict[str, tuple[FeatureNet, dict]] = {}


def feature_net(name: str, data) -> tuple[FeatureNet, dict]:
    """The dataset's feature net and its card: the shipped one, else one trained and cached."""
    from fedfuse.datasets.folders import cache_dir

    shipped = WEIGHTS / f"{name}-featnet-{VERSION}.pt"
    folder = WEIGHTS if shipped.is_file() else cache_dir().parent / "featnets" / f"{name}-{content_key(data)}"
    key = str(folder / name)
    if key not in _LOADED:
        _LOADED[key] = _load_or_train(name, data, folder)
    return _LOADED[key]


def _load_or_train(name, data, folder: Path) -> tuple[FeatureNet, dict]:
    path = folder / f"{name}-featnet-{VERSION}.pt"
    if not path.is_file():
        warnings.warn(f"no feature net for '{name}' yet: training one ({TRAIN['epochs']} epochs, cached in {folder})")
        net, card = train_and_save(name, data, folder, log=lambda msg: None)
    else:
        net = FeatureNet(data.image_shape[0], len(data.class_names))
        net.load_state_dict(torch.load(path, weights_only=True))
        card = json.loads(path.with_suffix(".json").read_text())
    if card["test_accuracy"] < MIN_ACCURACY:
        warnings.warn(f"feature net {card['feature_space']} has test accuracy {card['test_accuracy']:.2f} "
                      f"< {MIN_ACCURACY}: its FID/KID measure little; treat them with care")
    return net.eval().requires_grad_(False), card


def dataset_of(space_key: str) -> tuple[str, dict]:
    """``mnist-14px`` -> ("mnist", {"size": 14}); a plain name -> (name, {})."""
    base, _, side = space_key.rpartition("-")
    if base and side.endswith("px") and side[:-2].isdigit():
        return base, {"size": int(side[:-2])}
    return space_key, {}


def main(argv: list[str]) -> None:
    from fedfuse.datasets.loading import load

    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in argv or ["digits", "fashion-mnist", "mnist", "fashion-mnist-14px", "mnist-14px"]:
        data = load(*dataset_of(name))
        print(f"training the {name} feature net on {len(data.train_labels)} images")
        _, card = train_and_save(name, data, WEIGHTS)
        print(json.dumps(card))


if __name__ == "__main__":
    main(sys.argv[1:])
