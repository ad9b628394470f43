"""What protocols share: the DDPM recipe (models, training on any device through Lightning
Fabric, EMA, sampling schedules). Plain torch, diffusers and Fabric; no flwr."""
