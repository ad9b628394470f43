"""Evidence that a feature space measures what it claims: FID between two disjoint real splits
(the floor), against pure noise, and rising as real images are blurred or noised more.

    python -m fedfuse.bench.metrics.calibrate fashion-mnist [--n 2000]
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from fedfuse.bench.metrics.quality import score

BLUR_SIGMAS = (0.5, 1.0, 2.0)
NOISE_SIGMAS = (0.05, 0.1, 0.2)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x**2 / (2 * sigma**2))
    k = (k / k.sum()).to(images.dtype)
    c = images.shape[1]
    out = F.conv2d(F.pad(images, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def corrupted(images: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {f"blur sigma={s}": gaussian_blur(images, s) for s in BLUR_SIGMAS}
    out |= {f"noise sigma={s}": (images + s * 2 * torch.randn(images.shape, generator=gen)).clamp(-1, 1)
            for s in NOISE_SIGMAS}  # sigma in units of the [0, 1] pixel range (x2 in [-1, 1])
    out["pure noise"] = torch.rand(images.shape, generator=gen) * 2 - 1
    return out


def calibrate(name: str, n: int = 2000) -> dict:
    from fedfuse.bench.metrics.featnet import dataset_of, feature_net
    from fedfuse.datasets.loading import load

    data = load(*dataset_of(name))
    net, card = feature_net(name, data)
    gen = torch.Generator().manual_seed(0)
    train = data.train_images[torch.randperm(len(data.train_images), generator=gen)[:n]]
    held = data.eval_images[torch.randperm(len(data.eval_images), generator=gen)[:n]]
    rows = {"real train vs held-out (floor)": score(net, held, train)}
    rows |= {label: score(net, held, images) for label, images in corrupted(train).items()}
    return {"feature_space": card["feature_space"], "test_accuracy": card["test_accuracy"], "n": n, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("--n", type=int, default=2000)
    args = parser.parse_args()
    result = calibrate(args.dataset, args.n)
    print(f"{result['feature_space']} (test accuracy {result['test_accuracy']}), n = {result['n']} per side\n")
    print("| comparison | FID | KID | recall | coverage | precision |\n|---|---|---|---|---|---|")
    for label, m in result["rows"].items():
        print(f"| {label} | {m['fid']:.2f} | {m['kid']:.4f} | {m['recall']:.3f} | {m['coverage']:.3f} | {m['precision']:.3f} |")
    print("\n" + json.dumps(result))


if __name__ == "__main__":
    main()
