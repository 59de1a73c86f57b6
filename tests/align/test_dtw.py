"""Vectorized edit distance and weighted DTW vs plain Python DPs. Run: python -m pytest tests/align/test_dtw.py -q"""

from __future__ import annotations

import random

import numpy as np

from crossdistill.align.dtw import (
    encode_strings,
    normalized_edit_distance,
    paired_edit_distance,
    paired_edit_distance_codes,
    pairwise_edit_distance,
    weighted_dtw,
)
from crossdistill.testing.reference import levenshtein as ref_levenshtein

ALPHABET = "abcde ▁Ġé日🙂"


def ref_dtw(cost):
    """CDM's weighted DTW, cell by cell: M[0,0] = 0, borders ∞, backtrack argmin(diag, up, left)."""
    n, m = len(cost), len(cost[0])
    inf = float("inf")
    acc = [[inf] * (m + 1) for _ in range(n + 1)]
    acc[0][0] = 0.0
    for i in range(n):
        for j in range(m):
            acc[i + 1][j + 1] = cost[i][j] + min(acc[i][j + 1], acc[i + 1][j], acc[i][j])
    i, j = n, m
    path = [(n - 1, m - 1)]
    while (i, j) != (1, 1):
        options = [acc[i - 1][j - 1], acc[i - 1][j], acc[i][j - 1]]
        k = options.index(min(options))
        i, j = [(i - 1, j - 1), (i - 1, j), (i, j - 1)][k]
        path.append((i - 1, j - 1))
    return path[::-1], acc[n][m]


def _word(rng: random.Random, max_len: int = 7) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, max_len)))


def test_edit_distance_equals_reference():
    rng = random.Random(0)
    a = [_word(rng, 10) for _ in range(40)] + ["", "kitten"]
    b = [_word(rng, 10) for _ in range(35)] + ["", "sitting"]
    ours = pairwise_edit_distance(a, b)
    ref = np.array([[ref_levenshtein(x, y) for y in b] for x in a])
    np.testing.assert_array_equal(ours, ref)
    assert ours[-1, -1] == 3
    norm = normalized_edit_distance(a, b)
    assert norm[-2, -2] == 0.0  # two empty strings
    np.testing.assert_allclose(norm[-1, -1], 3 / 13)


def test_paired_edit_distance_equals_reference():
    """The element-wise path (CDM's dynamic map) shares the row update with the pairwise one; check it on its own,
    including empty strings on either side and pre-encoded rows taken out of a larger vocabulary."""
    rng = random.Random(1)
    a = [_word(rng, 9) for _ in range(60)] + ["", "", "kitten"]
    b = [_word(rng, 9) for _ in range(60)] + ["abc", "", "sitting"]
    ref = np.array([ref_levenshtein(x, y) for x, y in zip(a, b)])
    np.testing.assert_array_equal(paired_edit_distance(a, b), ref)
    ca, la = encode_strings(a)
    cb, lb = encode_strings(b)
    cb = np.where(cb == -1, -2, cb)  # padding codes must differ between the sides
    rows = np.array([5, 61, 62, 0, 5])
    np.testing.assert_array_equal(paired_edit_distance_codes(ca[rows], la[rows], cb[rows], lb[rows]), ref[rows])


def test_weighted_dtw_equals_reference_dp_on_200_random_pairs():
    """CDM's full step 3: token strings -> edit-distance × entropy weights -> DTW path and total, 200 pairs."""
    rng = random.Random(1)
    for _ in range(200):
        t = [_word(rng) for _ in range(rng.randint(1, 14))]
        s = [_word(rng) for _ in range(rng.randint(1, 14))]
        wt = [rng.choice((3, 4, 5)) for _ in t]
        ws = [rng.choice((3, 4, 5)) for _ in s]
        cost = pairwise_edit_distance(t, s) * np.array(wt)[:, None] * np.array(ws)[None, :]
        path, total = weighted_dtw(cost.astype(np.float64))
        ref_cost = [[ref_levenshtein(x, y) * wt[i] * ws[j] for j, y in enumerate(s)] for i, x in enumerate(t)]
        ref_path, ref_total = ref_dtw(ref_cost)
        assert path == ref_path
        assert total == ref_total


def test_dtw_path_is_monotone_and_covers_both_sides():
    rng = np.random.default_rng(2)
    for n, m in [(1, 1), (1, 6), (6, 1), (9, 4)]:
        path, _ = weighted_dtw(rng.random((n, m)))
        assert path[0] == (0, 0) and path[-1] == (n - 1, m - 1)
        assert {i for i, _ in path} == set(range(n)) and {j for _, j in path} == set(range(m))
        for (i0, j0), (i1, j1) in zip(path, path[1:]):
            assert (i1 - i0, j1 - j0) in {(1, 1), (1, 0), (0, 1)}
    assert weighted_dtw(np.zeros((0, 3))) == ([], 0.0)
