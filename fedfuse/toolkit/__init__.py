"""What protocols share: the DDPM recipe (model presets, training on any device through
Lightning Fabric, EMA, sampling), seeds, the quantization codec and the round helpers.
Everything but ``rounds`` is plain torch, diffusers and Fabric, with no flwr. Plugin authors
reach all of it through ``fedfuse.api``."""
