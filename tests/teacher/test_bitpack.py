"""Bit-packed token ids. Run: python -m pytest tests/teacher/test_bitpack.py -q"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crossdistill.teacher.bitpack import bits_for, pack, packed_nbytes, unpack


@pytest.mark.parametrize("vocab, bits", [(1, 1), (2, 1), (3, 2), (256, 8), (257, 9), (300, 9), (49_152, 16),
                                         (65_536, 16), (128_256, 17), (151_936, 18), (262_144, 18)])
def test_bits_for_real_vocabularies(vocab, bits):
    assert bits_for(vocab) == bits


@given(bits=st.integers(1, 32), n=st.integers(0, 70), seed=st.integers(0, 2**31))
@settings(max_examples=200, deadline=None)
def test_round_trip_any_width_and_length(bits, n, seed):
    values = np.random.default_rng(seed).integers(0, 1 << bits, size=n, dtype=np.int64)
    packed = pack(values, bits)
    assert packed.dtype == np.uint8 and packed.size == packed_nbytes(n, bits) == -(-n // 8) * bits
    np.testing.assert_array_equal(unpack(packed, n, bits), values)


def test_extreme_values_survive():
    for bits in (9, 17, 18, 32):
        values = np.array([0, (1 << bits) - 1] * 9, dtype=np.int64)
        np.testing.assert_array_equal(unpack(pack(values, bits), values.size, bits), values)


def test_layout_is_little_endian_bit_stream():
    # 9-bit values 1 and 2: bits 0 and 10 set -> bytes 0x01, 0x04, then zeros up to 9 bytes (one group of 8).
    assert pack(np.array([1, 2]), 9).tolist() == [1, 4, 0, 0, 0, 0, 0, 0, 0]


def test_out_of_range_and_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="values must lie in"):
        pack(np.array([512]), 9)
    with pytest.raises(ValueError, match="values must lie in"):
        pack(np.array([-1]), 9)
    with pytest.raises(ValueError, match="expected 9 for 3 values"):
        unpack(np.zeros(8, dtype=np.uint8), 3, 9)
