"""The 'model' is one image-shaped tensor fitted to the data by SGD. No flwr here."""

import torch


def train(mean: torch.Tensor, data, steps: int, batch_size: int, lr: float, generator) -> tuple[torch.Tensor, float]:
    mean = mean.clone().requires_grad_(True)
    optimizer = torch.optim.SGD([mean], lr=lr)
    losses = []
    for _ in range(steps):
        images, _ = data.sample_batch(batch_size, generator)
        per_pixel = ((images - mean) ** 2).mean(0)  # summed below: each pixel's gradient is 2(mean - x)
        optimizer.zero_grad()
        per_pixel.sum().backward()
        optimizer.step()
        losses.append(per_pixel.mean().item())
    return mean.detach(), sum(losses) / len(losses)
