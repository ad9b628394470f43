"""Does classifier-free guidance keep a conditional denoiser on its class as it trains?

    .venv/bin/python scripts/guidance_probe.py [ROUNDS] [STEPS_PER_ROUND]

One class-conditional tiny UNet on all digits 8x8 with split diffusion's recipe (T = 200,
10 % of labels dropped to "none", EMA 0.995), trained as `centralized` trains it: ROUNDS calls
of STEPS_PER_ROUND steps (default 6 x 500). After each round it generates 100 images of each
of the classes 0, 1, 6 and 7 (DDIM, 50 steps) at guidance scale 2 and 1, and prints the share
the digits feature net (the featnet FID's classifier) reads as the class asked for.
"""

import sys

import torch

from fedfuse.api import ClientData, Ema, build_unet, train
from fedfuse.bench.metrics.featnet import feature_net
from fedfuse.datasets.builtin import load_digits
from fedfuse.protocols.split_diffusion import task
from fedfuse.toolkit.recipe import Recipe

CLASSES, N, T = (0, 1, 6, 7), 100, 200


def class_accuracy(model, net, shape, null: int, scale: float) -> list[float]:
    """Per asked class, the share of its samples the feature net labels as that class
    (``null``: the label of "no condition", one past the dataset's classes)."""
    shares = []
    for c in CLASSES:
        generator = torch.Generator().manual_seed(5)
        x = task.server_sample(model, T, 0, "exact", N, shape, 50, generator, None,
                               torch.full((N,), c), null, scale).clamp(-1, 1)
        with torch.no_grad():
            shares.append(round(float((net.logits(x).argmax(1) == c).float().mean()), 2))
    return shares


def main(rounds: int = 6, per_round: int = 500) -> None:
    data = load_digits()
    images, labels = data.train_images, data.train_labels
    null = int(labels.max()) + 1  # the "no condition" label: one embedding past the classes
    model = build_unet(data.image_shape, "tiny", 3, classes=null + 1)
    ema, net = Ema(model, 0.995), feature_net("digits", data)[0]
    for r in range(rounds):
        train(model, task.full_schedule(T), ClientData(images, labels, torch.arange(len(images))), per_round,
              Recipe(), torch.Generator().manual_seed(r), conditional=True, ema=ema, label_dropout=0.1,
              null_label=null, start_step=r * per_round)
        print(f"{(r + 1) * per_round} steps: asked class generated (classes {CLASSES}) at guidance 2",
              class_accuracy(ema.model, net, data.image_shape, null, 2.0), "at guidance 1",
              class_accuracy(ema.model, net, data.image_shape, null, 1.0), flush=True)


if __name__ == "__main__":
    main(*map(int, sys.argv[1:3]))
