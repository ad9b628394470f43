"""Quantized model updates: the delta of local training as one flat vector (per-block scales
adapt to each tensor's range), encoded with the shared codec (fedfuse.toolkit.quantization).
One packed array and one array of scales travel: Flower frames each array with a few hundred
bytes, which per tensor would cost as much as the payload of a small model. No flwr here."""

from __future__ import annotations

import numpy as np
import torch

from fedfuse.api import quantization

FULL_PRECISION = 32  # "bits" meaning: send the float32 delta as it is


def flat_delta(before: dict, after: dict) -> np.ndarray:
    return torch.cat([(after[k] - before[k]).float().ravel() for k in after]).numpy()


def encode_update(before: dict, after: dict, bits: int, block: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    delta = flat_delta(before, after)
    if bits == FULL_PRECISION:
        return {"delta": delta}
    z = quantization.encode(delta, bits, rng, block)
    return {"packed": z.packed, "scales": z.scales}


def update_schema(n: int, bits: int, block: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """{array name: (shape, dtype)} of the update a client sends for ``n`` values at ``bits``."""
    if bits == FULL_PRECISION:
        return {"delta": ((n,), "float32")}
    blocks = -(-n // min(block, n))
    return {"packed": ((-(-n * bits // 8),), "uint8"), "scales": ((blocks, 2), "float32")}


def decode_update(arrays: dict[str, np.ndarray], shapes: dict[str, tuple], bits: int, block: int) -> dict[str, torch.Tensor]:
    n = sum(int(np.prod(s)) for s in shapes.values())
    if bits == FULL_PRECISION:
        flat = arrays["delta"]
    else:
        flat = quantization.decode(quantization.Quantized(arrays["packed"], arrays["scales"], (n,), bits, min(block, n)))
    out, start = {}, 0
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        out[name] = torch.from_numpy(np.array(flat[start:start + size]).reshape(shape))
        start += size
    return out


def apply_change(view: dict[str, torch.Tensor], change: dict[str, np.ndarray], bits: int,
                 block: int) -> dict[str, torch.Tensor]:
    """A quantized broadcast applied to the model a client holds: server and clients apply the
    same bytes, so both keep the same ``view``."""
    shapes = {k: tuple(v.shape) for k, v in view.items()}
    delta = decode_update(change, shapes, bits, block)
    return {k: v + delta[k].to(v.dtype) for k, v in view.items()}


def weighted_mean(updates: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    total = sum(weights)
    return {k: sum(w * u[k] for u, w in zip(updates, weights)) / total for k in updates[0]}
