"""Stochastic uniform quantization (QSGD-style, unbiased), bit-packed for the wire.

Per block of ``block`` values (or the whole tensor): ``lo = min``, ``step = (max - min) / L``
with ``L = 2^b - 1`` levels; each value becomes ``q = min(floor((x - lo) / step + u), L)``,
u ~ U[0, 1), so ``E[lo + q * step] = x`` (unbiased) and the error's variance is at most
``step^2 / 4``. The b-bit integers are packed into ``ceil(n * b / 8)`` bytes, little-endian bit
order (value i holds bits ``i*b .. i*b+b-1`` of the byte string, bit k of the string being bit
``k % 8`` of byte ``k // 8``); each block adds its ``lo`` and ``step`` as two float32.

The rounding draws are counter-based: ``encode`` takes one 64-bit key from ``rng`` (one
``rng.integers(0, 2**64, dtype=np.uint64)``) and value i gets ``u_i`` = the top 24 bits of
SplitMix64's mix of ``key + i * 0x9E3779B97F4A7C15``, over 2^24 (the 24-bit grid of numpy's
float32 draws; SplitMix64 passes BigCrush). So a payload is a pure function of the input and of
``rng``'s state, whatever the thread count, and the rounding stays unbiased up to the 2^-24 grid,
as before. ``uniforms`` gives the draws, for tests and for anyone re-deriving a payload.

Speed: encode and decode are compiled kernels (numba; each block's min/max, then its draws,
rounding and packing while it is in cache; both cores from 131,072 values on):
10 M values take 0.6-0.9× the time of a ``torch.clone`` of them on 2 cores at 1, 2, 4, 8 and
16 bits, 1.0-1.55× at the others, whose packing is not whole bytes (benchmarks/bench_codec.py,
``bash scripts/bench.sh -k codec``). The first call in a process loads them from numba's cache
(about 0.5 s); the first on a machine compiles them (about 10 s of CPU).

A block holding a NaN or an infinite value (or whose range overflows float32) gets a non-finite
step, or lo, as numpy's min and max gave it, so that the receiver's check of finite values
refuses the payload; its integers mean nothing.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

MAX_BITS = 16
CHUNK = 1 << 15  # values per parallel work item; a multiple of 64 (64 values = ``bits`` 64-bit words)


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
    n = flat.size
    block = min(block or n, n) or 1
    key = rng.integers(0, 2**64, dtype=np.uint64)
    blocks = -(-n // block)
    scales = np.empty((blocks, 2), np.float32)
    packed = np.empty(-(-n * bits // 8), np.uint8)
    if n:
        k = _kernels()
        whole = math.lcm(block, 64)  # chunks of whole blocks that start on a 64-bit word: scales in the same pass
        fused = whole <= CHUNK
        flat_bits, scale_bits = flat.view(np.int32), scales.view(np.int32)
        if not fused:
            with k.threads_for(n):
                k.scales(flat_bits, block, bits, scale_bits, scales)
        chunk = CHUNK // whole * whole if fused else CHUNK
        with k.slots_for(n) as slots:
            k.quantize(flat, flat_bits, scales, scale_bits, key, bits, block, chunk, fused, slots, packed)
    return Quantized(packed, scales, tuple(np.shape(x)), bits, block)


def decode(z: Quantized) -> np.ndarray:
    n = int(np.prod(z.shape))
    if not 1 <= z.bits <= MAX_BITS or z.block < 1:
        raise ValueError(f"quantization.decode: bits must be in 1..{MAX_BITS} and block >= 1, got {z.bits} and {z.block}")
    out = np.empty(n, np.float32)
    if n:
        packed = np.ascontiguousarray(z.packed, dtype=np.uint8).ravel()
        scales = np.ascontiguousarray(z.scales, dtype=np.float32).reshape(-1, 2)
        if packed.size < -(-n * z.bits // 8) or scales.shape[0] < -(-n // z.block):
            raise ValueError(f"quantization.decode: {packed.size} bytes and {scales.shape[0]} scales are too few "
                             f"for {n} values at {z.bits} bits in blocks of {z.block}")
        k = _kernels()
        with k.slots_for(n) as slots:
            k.dequantize(packed, scales, z.bits, z.block, slots, out)
    return out.reshape(z.shape)


def uniforms(key: int, start: int, count: int) -> np.ndarray:
    """The rounding draws u_i, i in [start, start + count), that ``encode`` uses under ``key``
    (float32 in [0, 1), multiples of 2^-24)."""
    out = np.empty(count, np.float32)
    k = _kernels()
    with k.threads_for(count):
        k.uniforms(np.uint64(key), start, out)
    return out


@functools.cache
def _kernels():
    """Compile (or load from numba's on-disk cache) the kernels on first use: importing numba
    costs about half a second, which a process that never quantizes should not pay."""
    from fedfuse.toolkit import _quantization_kernels

    return _quantization_kernels
