"""Stochastic uniform quantization (QSGD-style, unbiased), bit-packed for the wire.

Per block of ``block`` values (or the whole tensor): ``lo = min``, ``step = (max - min) / L``
with ``L = 2^b - 1`` levels; each value becomes ``q = floor((x - lo) / step + u)``, u ~ U[0, 1),
so ``E[lo + q * step] = x`` (unbiased) and the error's variance is at most ``step^2 / 4``.
The b-bit integers are packed into ``ceil(n * b / 8)`` bytes; each block adds its ``lo`` and
``step`` as two float32. Everything is vectorised numpy: no Python loop over elements.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_BITS = 16


@dataclass(frozen=True)
class Quantized:
    packed: np.ndarray  # uint8, ceil(n * bits / 8) bytes
    scales: np.ndarray  # float32 (blocks, 2): lo, step
    shape: tuple[int, ...]
    bits: int
    block: int  # values per block (n for per-tensor)

    @property
    def nbytes(self) -> int:
        return self.packed.nbytes + self.scales.nbytes


def packed_size(n: int, bits: int, blocks: int) -> int:
    return -(-n * bits // 8) + 8 * blocks


def variance_bound(value_range: float, bits: int) -> float:
    """Per-value error variance bound of b-bit stochastic rounding over ``value_range``."""
    return (value_range / (2**bits - 1)) ** 2 / 4


def encode(x: np.ndarray, bits: int, rng: np.random.Generator, block: int | None = None) -> Quantized:
    if not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be in 1..{MAX_BITS}, got {bits}")
    flat = np.ascontiguousarray(x, dtype=np.float32).ravel()
    block = min(block or flat.size, flat.size) or 1
    padded = np.pad(flat, (0, -flat.size % block), mode="edge").reshape(-1, block)
    lo = padded.min(axis=1, keepdims=True)
    step = (padded.max(axis=1, keepdims=True) - lo) / (2**bits - 1)
    safe = np.where(step > 0, step, 1.0)
    level = (padded - lo) / safe + rng.random(padded.shape, dtype=np.float32)
    q = np.minimum(np.floor(level), 2**bits - 1).astype(np.uint32).ravel()[: flat.size]
    scales = np.concatenate([lo, step], axis=1).astype(np.float32)
    return Quantized(pack(q, bits), scales, tuple(np.shape(x)), bits, block)


def decode(z: Quantized) -> np.ndarray:
    n = int(np.prod(z.shape))
    q = unpack(z.packed, z.bits, n).astype(np.float32)
    q = np.pad(q, (0, -n % z.block)).reshape(-1, z.block)
    return (z.scales[:, :1] + q * z.scales[:, 1:]).ravel()[:n].reshape(z.shape)


def pack(q: np.ndarray, bits: int) -> np.ndarray:
    """b-bit unsigned integers -> bytes, little-endian bit order."""
    if bits == 8:
        return q.astype(np.uint8)
    if bits == 16:
        return q.astype("<u2").view(np.uint8)
    if 8 % bits == 0:  # 1, 2, 4 bits: several values per byte, by shifts
        per = 8 // bits
        v = np.pad(q.astype(np.uint8), (0, -q.size % per)).reshape(-1, per)
        return np.bitwise_or.reduce(v << (np.arange(per, dtype=np.uint8) * bits), axis=1).astype(np.uint8)
    planes = ((q[:, None] >> np.arange(bits, dtype=np.uint32)) & 1).astype(np.uint8)
    return np.packbits(planes.ravel(), bitorder="little")


def unpack(data: np.ndarray, bits: int, n: int) -> np.ndarray:
    if bits == 8:
        return data[:n].astype(np.uint32)
    if bits == 16:
        return data[: 2 * n].view("<u2").astype(np.uint32)
    if 8 % bits == 0:
        per = 8 // bits
        v = (data[:, None] >> (np.arange(per, dtype=np.uint8) * bits)) & (2**bits - 1)
        return v.ravel()[:n].astype(np.uint32)
    planes = np.unpackbits(data, count=n * bits, bitorder="little").reshape(n, bits).astype(np.uint32)
    return planes @ (np.uint32(1) << np.arange(bits, dtype=np.uint32))
