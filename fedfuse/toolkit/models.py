"""UNets of the presets (``recipe.PRESETS``): one name for a denoiser's size, the same for every protocol.

Measured on 2 CPU cores, batch 64, one training step (docs/quality.md has the curves):
``tiny`` 164 k parameters, ``small`` 651 k, ``base`` 1.0 M with self-attention at the lowest
resolution, ``base-attn`` the same with self-attention at every resolution. Two resolution
levels, so any even image side works (28 -> 14, 14 -> 7, 8 -> 4).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel

from fedfuse.toolkit.recipe import PRESETS, check_preset  # noqa: F401  (models.PRESETS stays valid)


def build_unet(image_shape: tuple[int, int, int], preset: str, seed: int, classes: int | None = None,
               attention: bool | str | None = None) -> UNet2DModel:
    """A UNet of the ``preset``'s size whose initial weights depend only on ``seed``;
    unconditional, or conditioned on ``classes`` labels (``class_labels=`` when called).
    ``attention`` overrides the preset's: False, True (at the lowest resolution) or ``"all"``
    (at every resolution); LoRA needs attention projections to adapt."""
    check_preset(preset)
    p = PRESETS[preset]
    attn = p["attention"] if attention is None else attention
    levels = len(p["widths"])
    if any(side % 2 ** (levels - 1) for side in image_shape[1:]):
        raise ValueError(f"model '{preset}' halves the image {levels - 1} times: its side must divide by "
                         f"{2 ** (levels - 1)}, got {image_shape[1]}x{image_shape[2]}")
    attends = [attn == "all" or (bool(attn) and level == levels - 1) for level in range(levels)]  # high to low res
    down = ["AttnDownBlock2D" if a else "DownBlock2D" for a in attends]
    up = ["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attends)]
    channels, height, _ = image_shape
    with torch.random.fork_rng():  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=height, in_channels=channels, out_channels=channels, block_out_channels=p["widths"],
            layers_per_block=p["layers"], down_block_types=tuple(down), up_block_types=tuple(up),
            norm_num_groups=min(8, p["widths"][0]), attention_head_dim=min(32, p["widths"][-1]),
            num_class_embeds=classes,
        )
