"""What protocols share: the DDPM recipe (model presets, training on any device through
Lightning Fabric, EMA, sampling), seeds and the quantization codec; plain torch, diffusers and
Fabric, with no flwr. Plugin authors reach all of it through ``fedfuse.api``."""
