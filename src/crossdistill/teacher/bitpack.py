"""Pack non-negative integers (token ids) at a fixed number of bits each.

Token ids need ceil(log2 V) bits: 9 for a 300-token test vocabulary, 16 for 49,152 (SmolLM2), 17 for 128,256
(Llama 3), 18 for 151,936 (Qwen) and 262,144 (Gemma 3). The narrowest integer type that holds 18 bits is 32 bits, so
packing saves 44% of the id bytes exactly where they dominate the cache (ids are ~53% of a top-k entry at V = 152k).

Layout: value i occupies bits [i*b, (i+1)*b) of a little-endian bit stream. Eight values fill exactly b bytes, so the
stream is processed as rows of b bytes with eight fixed column offsets — vectorised numpy, no Python loop over values.
"""

from __future__ import annotations

import numpy as np


def bits_for(vocab_size: int) -> int:
    """Bits needed to store ids in ``[0, vocab_size)`` (at least 1)."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be >= 1, got {vocab_size}")
    return max(1, int(vocab_size - 1).bit_length())


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes used by :func:`pack` for ``n`` values (whole groups of 8 values)."""
    return -(-n // 8) * bits


def pack(values: np.ndarray, bits: int) -> np.ndarray:
    """Pack a 1-D array of ints in ``[0, 2**bits)`` into ``uint8 [packed_nbytes(n, bits)]``."""
    if not 1 <= bits <= 32:
        raise ValueError(f"bits must be in [1, 32], got {bits}")
    v = np.ascontiguousarray(values, dtype=np.int64).reshape(-1)
    if v.size and (v.min() < 0 or v.max() >= (1 << bits)):
        raise ValueError(f"values must lie in [0, 2**{bits}); got range [{v.min()}, {v.max()}]")
    groups = -(-v.size // 8)
    padded = np.zeros(groups * 8, dtype=np.uint64)
    padded[: v.size] = v
    padded = padded.reshape(groups, 8)
    # One extra byte column absorbs the spill of the last value so every slice below has the same width.
    out = np.zeros((groups, bits + 8), dtype=np.uint8)
    for j in range(8):
        bit = j * bits
        byte, shift = bit // 8, bit % 8
        word = padded[:, j] << np.uint64(shift)  # value shifted into its position within a 5-byte window
        for t in range(-(-(shift + bits) // 8)):
            out[:, byte + t] |= ((word >> np.uint64(8 * t)) & np.uint64(0xFF)).astype(np.uint8)
    return out[:, :bits].reshape(-1)


def unpack(packed: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``n`` values as ``int64 [n]``."""
    buf = np.ascontiguousarray(packed, dtype=np.uint8).reshape(-1)
    groups = -(-n // 8)
    if buf.size != groups * bits:
        raise ValueError(f"packed buffer has {buf.size} bytes, expected {groups * bits} for {n} values of {bits} bits")
    rows = np.zeros((groups, bits + 8), dtype=np.uint8)
    rows[:, :bits] = buf.reshape(groups, bits)
    out = np.empty((groups, 8), dtype=np.uint64)
    mask = np.uint64((1 << bits) - 1)
    for j in range(8):
        bit = j * bits
        byte, shift = bit // 8, bit % 8
        # The 8 bytes from the value's first byte, read as one little-endian word (shift + bits <= 39 < 64).
        word = np.ascontiguousarray(rows[:, byte:byte + 8]).view("<u8")[:, 0]
        out[:, j] = (word >> np.uint64(shift)) & mask
    return out.reshape(-1)[:n].astype(np.int64)
