"""Compiled kernels of the quantization codec (fedfuse.toolkit.quantization documents the format
and the draws). Imported lazily: numba's import and, on a machine's first use, compiling (cached
on disk afterwards, beside this file) should not weigh on processes that never quantize.

Work goes in chunks of at most ``CHUNK`` values (a multiple of 64: every chunk starts on a 64-bit
word of the packed string at any bit-width), spread over numba's threads. Within a chunk, the
values are quantized into a small integer scratch that stays in cache (one vectorised loop: the
draw, the arithmetic, the clipping), then packed by a loop for the bit-width (1, 2, 4, 8 and 16
bits by whole bytes; the others 8 values = ``bits`` bytes at a time); decoding is the mirror
image. The loops index 0-based slices: numba's negative-index wrap-around on computed indices
would keep LLVM from vectorising them. The packing reinterprets 64-bit words as bytes, so the
kernels need a little-endian machine (x86-64, ARM64: all that fedfuse runs on).
"""

from __future__ import annotations

import contextlib
import sys

import numba
import numpy as np
from numba import njit, prange

from fedfuse.toolkit.quantization import CHUNK

if sys.byteorder != "little":
    raise ImportError("fedfuse's quantization kernels need a little-endian machine")

GAMMA = np.uint64(0x9E3779B97F4A7C15)  # SplitMix64's increment and mixer (Steele, Lea & Flood, 2014)
MIX1 = np.uint64(0xBF58476D1CE4E5B9)
MIX2 = np.uint64(0x94D049BB133111EB)
S24 = np.float32(2.0**-24)
U30, U27, U31, U40 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(40)
I31, LOW31 = np.int32(31), np.int32(0x7FFFFFFF)
I32_MAX, I32_MIN = np.int32(2**31 - 1), np.int32(-(2**31))
ALL = np.uint64(2**64 - 1)


SERIAL_BELOW = 4 * CHUNK  # values: fewer run on the calling thread alone
SLOTS = 8  # work slots per thread in quantize and dequantize


@contextlib.contextmanager
def threads_for(n: int):
    """numba's thread count (numba.set_num_threads sets it) for a call over ``n`` values, or 1 for
    small inputs: their work (< 0.5 ms) costs less than waking the other threads would (and that
    costs milliseconds on a busy machine), so they run on the calling thread alone."""
    threads = numba.get_num_threads()
    if threads == 1 or n >= SERIAL_BELOW:
        yield threads
        return
    numba.set_num_threads(1)  # thread-local
    try:
        yield 1
    finally:
        numba.set_num_threads(threads)


@contextlib.contextmanager
def slots_for(n: int):
    """The work slots of a ``quantize`` or ``dequantize`` call (slot w takes chunks w, w + slots,
    ...): several per thread, handed out one at a time, so that a thread which other processes
    delay leaves its share to the others."""
    with threads_for(n) as threads:
        if threads == 1:
            yield 1
        else:
            with numba.parallel_chunksize(1):
                yield SLOTS * threads


@njit(inline="always")
def _draw(key, i):
    """u_i in [0, 1): the top 24 bits of SplitMix64's mix of ``key + i * GAMMA``, over 2^24."""
    z = key + np.uint64(i) * GAMMA
    z = (z ^ (z >> U30)) * MIX1
    z = (z ^ (z >> U27)) * MIX2
    z = z ^ (z >> U31)
    return np.float32(np.int32(z >> U40)) * S24


@njit(parallel=True, cache=True)
def uniforms(key, start, out):
    for j in prange(out.size):
        out[j] = _draw(key, start + j)


@njit(inline="always")
def _order(b):
    """An order-preserving int32 key of a float32's bit pattern (and its own inverse): integer
    min/max vectorise where float ones (NaN rules) do not. A NaN lands beyond ±inf, so a block
    holding one gets a NaN ``lo`` or ``hi``, and a NaN step, as numpy's min and max give."""
    return b ^ ((b >> I31) & LOW31)


@njit(inline="always")
def _block_scale(bits_of, levels, scale_bits, scale, b):
    """scale[b] = (lo, step) of the values whose float32 bit patterns are ``bits_of``."""
    lo = I32_MAX
    hi = I32_MIN
    for j in range(bits_of.size):
        k = _order(bits_of[j])
        lo = min(lo, k)
        hi = max(hi, k)
    scale_bits[b, 0] = _order(lo)
    scale_bits[b, 1] = _order(hi)
    scale[b, 1] = (scale[b, 1] - scale[b, 0]) / levels


@njit(parallel=True, cache=True)
def scales(flat_bits, block, bits, out_bits, out):
    """out[b] = (lo, step) of every block, step = (max - lo) / (2^bits - 1) in float32, for blocks
    that ``quantize`` cannot fit whole into its chunks (long ones, per-tensor among them).
    ``flat_bits`` and ``out_bits`` are int32 views of the values and of ``out``."""
    n = flat_bits.size
    levels = np.float32((1 << bits) - 1)
    blocks = out.shape[0]
    chunks = (n + CHUNK - 1) // CHUNK
    if block < CHUNK:
        for b in prange(blocks):
            _block_scale(flat_bits[b * block:min(n, (b + 1) * block)], levels, out_bits, out, b)
        return
    part = np.empty((chunks, 2, 2), np.int32)  # a chunk meets at most two blocks
    for c in prange(chunks):
        s = c * CHUNK
        stop = min(n, s + CHUNK)
        e = min(stop, (s // block + 1) * block)
        for j, (a, z) in enumerate(((s, e), (e, stop))):
            lo = I32_MAX
            hi = I32_MIN
            view = flat_bits[a:z]
            for i in range(view.size):
                k = _order(view[i])
                lo = min(lo, k)
                hi = max(hi, k)
            part[c, j, 0] = lo
            part[c, j, 1] = hi
    for b in range(blocks):
        out_bits[b, 0] = I32_MAX
        out_bits[b, 1] = I32_MIN
    for c in range(chunks):
        first = c * CHUNK // block
        last = (min(n, (c + 1) * CHUNK) - 1) // block
        for j in range(last - first + 1):
            out_bits[first + j, 0] = min(out_bits[first + j, 0], part[c, j, 0])
            out_bits[first + j, 1] = max(out_bits[first + j, 1], part[c, j, 1])
    for b in range(blocks):
        out_bits[b, 0] = _order(out_bits[b, 0])
        out_bits[b, 1] = _order(out_bits[b, 1])
        out[b, 1] = (out[b, 1] - out[b, 0]) / levels


@njit(inline="always")
def _group_tables(bits, shifts):
    """Widths other than 1, 2, 4, 8, 16 pack 8 values into ``bits`` bytes, gathered first in
    two 64-bit words (w0, w1): value k of the group sits at bit k * bits. Row k of ``shifts``
    says how, without branches: w0 gets (v << shifts[k, 0]) & shifts[k, 1], w1 gets
    ((v << shifts[k, 2]) >> shifts[k, 3]) & shifts[k, 4]."""
    for k in range(8):
        off = k * bits
        shifts[k, :] = 0
        if off < 64:
            shifts[k, 0] = off
            shifts[k, 1] = ALL
            if off + bits > 64:
                shifts[k, 3] = 64 - off
                shifts[k, 4] = ALL
        else:
            shifts[k, 2] = off - 64
            shifts[k, 4] = ALL


@njit(inline="always")
def _slot_tables(bits):
    """A work slot's scratch for (un)packing ``bits``-bit values: the groups' words (then the
    packed stream's) and the shift tables of ``_group_tables``."""
    words = np.empty(CHUNK // 2 + 3, np.uint64)
    shifts = np.empty((8, 5), np.uint64)
    _group_tables(bits, shifts)
    return words, shifts


@njit(inline="always")
def _pack(q, bits, out, shifts, words):
    """Pack q (b-bit values, zeros past those of ``out``) into the bytes ``out``, little-endian
    bit order: value i is bits i*b .. i*b+b-1, bit k being bit k % 8 of byte k // 8."""
    if bits == 8:
        for j in range(out.size):
            out[j] = np.uint8(q[j])
    elif bits == 16:
        for j in range(out.size // 2):
            out[2 * j] = np.uint8(q[j] & 0xFF)
            out[2 * j + 1] = np.uint8(q[j] >> 8)
    elif bits == 4:
        for j in range(out.size):
            out[j] = np.uint8(q[2 * j] | (q[2 * j + 1] << 4))
    elif bits == 2:
        for j in range(out.size):
            out[j] = np.uint8(q[4 * j] | (q[4 * j + 1] << 2) | (q[4 * j + 2] << 4) | (q[4 * j + 3] << 6))
    elif bits == 1:
        for j in range(out.size):
            v = q[8 * j] | (q[8 * j + 1] << 1) | (q[8 * j + 2] << 2) | (q[8 * j + 3] << 3)
            out[j] = np.uint8(v | (q[8 * j + 4] << 4) | (q[8 * j + 5] << 5) | (q[8 * j + 6] << 6) | (q[8 * j + 7] << 7))
    else:  # any other width: 8 values = ``bits`` bytes, built as two words per group, ...
        groups = (out.size + bits - 1) // bits
        for g in range(groups):
            w0 = np.uint64(0)
            w1 = np.uint64(0)
            for k in range(8):
                v = np.uint64(q[8 * g + k])
                w0 |= (v << shifts[k, 0]) & shifts[k, 1]
                w1 |= ((v << shifts[k, 2]) >> shifts[k, 3]) & shifts[k, 4]
            words[2 * g] = w0
            words[2 * g + 1] = w1
        # ... then the groups' 8 * bits bits end to end in a stream of 64-bit words, without
        # branches: the word being filled is stored at every step (the last store to it counts)
        stream = words[2 * groups:]
        cur = np.uint64(0)
        fill = np.uint64(0)  # bits of cur in use, < 64
        m = 0
        for g in range(groups):
            for half in range(2 if bits > 8 else 1):
                v = words[2 * g + half]
                nb = np.uint64(64 if bits > 8 and half == 0 else 8 * bits - 64 * half)
                cur |= v << fill
                stream[m] = cur
                full = fill + nb >= np.uint64(64)
                left = (v >> np.uint64(1)) >> (np.uint64(63) - fill)  # the bits of v past the word
                cur = left if full else cur
                m += full
                fill = fill + nb - np.uint64(64) if full else fill + nb
        stream[m] = cur  # the last, partial word
        whole = out.size // 8
        for m in range(whole + 1):  # ... and the words' bytes, little-endian
            w = stream[m]
            for j in range(8 if m < whole else out.size - 8 * whole):
                out[8 * m + j] = np.uint8((w >> np.uint64(8 * j)) & np.uint64(0xFF))


@njit(parallel=True, cache=True)
def quantize(flat, flat_bits, scales, scale_bits, key, bits, block, chunk, fused, slots, packed):
    """Stochastic rounding of every value with the draws of ``_draw``, and packing. Work items of
    ``chunk`` values (a multiple of 64: each starts on a 64-bit word of the packed string; at most
    CHUNK); with ``fused``, a multiple of ``block`` too, and the blocks' scales are computed here
    while their values are in cache (else ``scales`` computed them). A block with a NaN or an
    infinite value, or a range beyond float32, gets a non-finite step and meaningless integers
    (zeros or clipped: never more than ``bits`` bits)."""
    n = flat.size
    levels = (1 << bits) - 1
    chunks = (n + chunk - 1) // chunk
    slots = max(1, min(slots, chunks))
    for w in prange(slots):
        q = np.zeros(CHUNK + 64, np.uint16)  # per slot, in cache: the chunk's integers, zeros past them
        words, shifts = _slot_tables(bits)
        for c in range(w, chunks, slots):
            start = c * chunk
            stop = min(n, start + chunk)
            s = start
            while s < stop:
                b = s // block
                e = min(stop, (b + 1) * block)
                if fused:
                    _block_scale(flat_bits[s:e], np.float32(levels), scale_bits, scales, b)
                lo = scales[b, 0]
                step = scales[b, 1]
                safe = step if step > 0 else np.float32(1.0)
                x = flat[s:e]
                qv = q[s - start:e - start]
                for j in range(x.size):
                    t = (x[j] - lo) / safe + _draw(key, s + j)
                    qv[j] = min(np.int32(t), levels)  # NaN or inf: int32 min, 0 in 16 bits
                s = e
            count = stop - start
            q[count:count + 64] = 0
            _pack(q, bits, packed[start * bits // 8:(stop * bits + 7) // 8], shifts, words)


@njit(inline="always")
def _unpack(data, bits, q, count, words, shifts):
    """The inverse of ``_pack``: q[:count] from the bytes ``data`` (other widths than 1, 2, 4, 8
    and 16 write whole groups of 8: up to q[(count + 7) // 8 * 8 - 1])."""
    if bits == 8:
        for j in range(count):
            q[j] = data[j]
    elif bits == 16:
        for j in range(count):
            q[j] = np.uint16(data[2 * j]) | (np.uint16(data[2 * j + 1]) << 8)
    elif bits == 4:
        for j in range(count):
            q[j] = (np.uint16(data[j // 2]) >> np.uint16((j % 2) * 4)) & np.uint16(15)
    elif bits == 2:
        for j in range(count):
            q[j] = (np.uint16(data[j // 4]) >> np.uint16((j % 4) * 2)) & np.uint16(3)
    elif bits == 1:
        for j in range(count):
            q[j] = (np.uint16(data[j // 8]) >> np.uint16(j % 8)) & np.uint16(1)
    else:  # any other width: the bytes as 64-bit words, each group's 8 * bits bits from them
        # into two words, then the group's 8 values
        groups = (count + 7) // 8
        stream = words[2 * groups:]
        whole = data.size // 8
        for m in range(whole + 1):
            w = np.uint64(0)
            for j in range(8 if m < whole else data.size - 8 * whole):
                w |= np.uint64(data[8 * m + j]) << np.uint64(8 * j)
            stream[m] = w
        stream[whole + 1] = 0  # the last groups' reach
        stream[whole + 2] = 0
        for g in range(groups):  # group g: bits 8*bits*g .. of the stream (bits past it are masked off below)
            at = 8 * bits * g
            m = at >> 6
            f = np.uint64(at & 63)
            words[2 * g] = (stream[m] >> f) | ((stream[m + 1] << np.uint64(1)) << (np.uint64(63) - f))
            words[2 * g + 1] = (stream[m + 1] >> f) | ((stream[m + 2] << np.uint64(1)) << (np.uint64(63) - f))
        mask = np.uint64((1 << bits) - 1)
        for g in range(groups):
            w0 = words[2 * g]
            w1 = words[2 * g + 1]
            for k in range(8):  # the inverse of the shifts in _group_tables
                v = ((w0 >> shifts[k, 0]) & shifts[k, 1]) | ((w1 << shifts[k, 3]) >> shifts[k, 2]) & shifts[k, 4]
                q[8 * g + k] = np.uint16(v & mask)


@njit(parallel=True, cache=True)
def dequantize(packed, scales, bits, block, slots, out):
    """out[i] = lo + q_i * step of i's block, in float32 (the same arithmetic as numpy's)."""
    n = out.size
    chunks = (n + CHUNK - 1) // CHUNK
    slots = max(1, min(slots, chunks))
    for w in prange(slots):
        q = np.empty(CHUNK, np.uint16)  # per slot, in cache (CHUNK: a multiple of 8)
        words, shifts = _slot_tables(bits)
        for c in range(w, chunks, slots):
            start = c * CHUNK
            stop = min(n, start + CHUNK)
            _unpack(packed[start * bits // 8:(stop * bits + 7) // 8], bits, q, stop - start, words, shifts)
            s = start
            while s < stop:
                b = s // block
                e = min(stop, (b + 1) * block)
                lo = scales[b, 0]
                step = scales[b, 1]
                o = out[s:e]
                qv = q[s - start:e - start]
                for j in range(o.size):
                    o[j] = lo + np.float32(qv[j]) * step
                s = e
