"""Edit distances between token strings and weighted dynamic time warping, vectorized with NumPy (CDM's alignment step).

Both dynamic programs are O(n·m) cells, but neither runs a Python loop per cell:

* :func:`pairwise_edit_distance` computes the Levenshtein distance of EVERY pair of two string lists at once: one
  NumPy row update per character of the longer first-side string, applied to all pairs together. Within a row the
  left-neighbour dependency D[i, j] = min(X[j], D[i, j−1] + 1) is solved in closed form as
  j + cummin_{j' ≤ j}(X[j'] − j') (``np.minimum.accumulate``), so the row costs a constant number of array ops.
* :func:`weighted_dtw` fills the accumulated-cost matrix one anti-diagonal at a time (cells with the same i + j
  depend only on the two previous diagonals), n + m − 1 vector steps; the backtrack walks the path, O(n + m).

The plain Python DPs these must equal live in the tests (``tests/align/test_dtw.py``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _encode(strings: Sequence[str], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """``[N, L]`` int32 code points padded with ``pad``, and ``[N]`` lengths."""
    lens = np.fromiter((len(s) for s in strings), dtype=np.int64, count=len(strings))
    width = int(lens.max()) if len(strings) else 0
    out = np.full((len(strings), max(width, 1)), pad, dtype=np.int32)
    for i, s in enumerate(strings):
        if s:
            out[i, : len(s)] = np.frombuffer(s.encode("utf-32-le"), dtype=np.int32)
    return out, lens


def pairwise_edit_distance(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Levenshtein distance (unit insert/delete/substitute) between every ``a[i]`` and ``b[j]``.

    Args:
        a: N strings.
        b: M strings.

    Returns:
        ``[N, M]`` int64.
    """
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return np.zeros((n, m), dtype=np.int64)
    # Deduplicate: token sequences repeat strings a lot, and the DP cost is per distinct pair.
    ua, ia = np.unique(np.asarray(list(a), dtype=object).astype(str), return_inverse=True)
    ub, ib = np.unique(np.asarray(list(b), dtype=object).astype(str), return_inverse=True)
    ca, la = _encode(list(ua), -1)
    cb, lb = _encode(list(ub), -2)                                            # pads never match each other
    lb_max = cb.shape[1]
    # Layout [Lb + 1, A, B]: the DP column index first so every step works on contiguous [A, B] planes.
    result = np.where(la[:, None] == 0, lb[None, :], 0).astype(np.int64)      # empty a: distance |b|
    # [Lb, 1, B] against [1, A, 1] characters: every (a, b) pair on one [A, B] plane.
    for _, done, row in _levenshtein_rows(cb.T[:, None, :], lambda i: ca[None, :, i - 1, None], la, lb_max,
                                          (len(ua), len(ub))):
        result[done] = row[lb[None, :], done[:, None], np.arange(len(ub))[None, :]]
    return result[ia][:, ib]


def _levenshtein_rows(cb_t, a_chars, la: np.ndarray, lb_max: int, plane: tuple[int, ...]):
    """Run the Levenshtein DP row by row; yield ``(i, done, row)`` after each row i at which some first-side string
    ends (``done``: the indices along the first plane axis with ``la == i``; ``row``: ``[Lb + 1, *plane]``, valid until
    the next step).

    ``cb_t`` holds the second side's characters ``[Lb, ...]`` and ``a_chars(i)`` the first side's i-th characters, in
    shapes that broadcast to ``[Lb, *plane]``. The within-row left-neighbour dependency is solved in closed form:
    D[i, j] = j + cummin_{j' ≤ j}(X[j'] − j').
    """
    # int16 (token strings are far shorter than 32767) keeps the memory traffic low.
    dt = np.int16 if max(int(la.max()), lb_max) < 30000 else np.int64
    steps = np.arange(lb_max + 1, dtype=dt).reshape((-1,) + (1,) * len(plane))
    row = np.broadcast_to(steps, (lb_max + 1, *plane)).astype(dt)             # D[0, j] = j
    x = np.empty_like(row)
    for i in range(1, int(la.max()) + 1):
        sub = (cb_t != a_chars(i)).astype(dt)
        x[0] = i
        np.minimum(row[1:] + 1, row[:-1] + sub, out=x[1:])
        x -= steps
        np.minimum.accumulate(x, axis=0, out=row)
        row += steps
        done = np.nonzero(la == i)[0]
        if done.size:
            yield i, done, row


def paired_edit_distance(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """Levenshtein distance of ``a[p]`` and ``b[p]`` for each p (element-wise, same length lists): ``[P]`` int64."""
    if len(a) != len(b):
        raise ValueError(f"paired_edit_distance needs lists of equal length, got {len(a)} and {len(b)}")
    ca, la = _encode(a, -1)
    cb, lb = _encode(b, -2)
    return paired_edit_distance_codes(ca, la, cb, lb)


def encode_strings(strings: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``([N, L] int32 code points padded with -1, [N] lengths)``: encode a vocabulary once, then pass rows to
    :func:`paired_edit_distance_codes` (encoding per call dominates otherwise)."""
    return _encode(strings, -1)


def paired_edit_distance_codes(ca: np.ndarray, la: np.ndarray, cb: np.ndarray, lb: np.ndarray) -> np.ndarray:
    """Element-wise Levenshtein distance of pre-encoded strings (rows of :func:`encode_strings`): ``[P]`` int64.

    Same row update as :func:`pairwise_edit_distance`, on a ``[Lb + 1, P]`` plane. Padding codes must differ
    between the sides or lie beyond each row's length (they are never read as characters: the result of row p is
    taken at column ``lb[p]`` of DP row ``la[p]``).
    """
    n = len(la)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    wa = max(int(la.max()), 1)
    wb = max(int(lb.max()), 1)
    ca, cb = ca[:, :wa], cb[:, :wb]
    result = np.where(la == 0, lb, 0).astype(np.int64)
    for _, done, row in _levenshtein_rows(np.ascontiguousarray(cb.T), lambda i: ca[None, :, i - 1], la, wb, (n,)):
        result[done] = row[lb[done], done]
    return result


def normalized_edit_distance(a: Sequence[str], b: Sequence[str]) -> np.ndarray:
    """``ed(a, b) / (|a| + |b|)`` for every pair (CDM's similarity test), ``[N, M]`` float64; two empty strings → 0."""
    ed = pairwise_edit_distance(a, b).astype(np.float64)
    la = np.fromiter((len(s) for s in a), dtype=np.float64, count=len(a))
    lb = np.fromiter((len(s) for s in b), dtype=np.float64, count=len(b))
    denom = la[:, None] + lb[None, :]
    return np.divide(ed, denom, out=np.zeros_like(ed), where=denom > 0)


def dtw_matrix(cost: np.ndarray) -> np.ndarray:
    """Accumulated cost ``M [n+1, m+1]``: M[0, 0] = 0, M[0, ·] = M[·, 0] = ∞,
    M[i+1, j+1] = cost[i, j] + min(M[i, j+1], M[i+1, j], M[i, j]) — filled by anti-diagonals."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    c = np.asarray(cost, dtype=np.float64)
    for d in range(2, n + m + 1):                                             # d = I + J over M's indices
        lo, hi = max(1, d - m), min(n, d - 1)
        rows = np.arange(lo, hi + 1)
        cols = d - rows
        best = np.minimum(np.minimum(acc[rows - 1, cols], acc[rows, cols - 1]), acc[rows - 1, cols - 1])
        acc[rows, cols] = c[rows - 1, cols - 1] + best
    return acc


def weighted_dtw(cost: np.ndarray) -> tuple[list[tuple[int, int]], float]:
    """Dynamic time warping path and total cost.

    Args:
        cost: ``[n, m]`` non-negative pair costs (CDM: edit distance × w_T(i) × w_S(j)).

    Returns:
        ``(path, total)``: the (i, j) pairs from (0, 0) to (n−1, m−1) in order — every i and every j appears at
        least once (many-to-many) — and M[n, m]. The backtrack prefers diagonal, then up (i−1), then left (j−1) on
        ties. An empty side gives ``([], 0.0)``.
    """
    n, m = cost.shape
    if n == 0 or m == 0:
        return [], 0.0
    acc = dtw_matrix(cost)
    i, j = n, m
    path = [(n - 1, m - 1)]
    while (i, j) != (1, 1):
        diag, up, left = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        if diag <= up and diag <= left:
            i, j = i - 1, j - 1
        elif up <= left:
            i -= 1
        else:
            j -= 1
        path.append((i - 1, j - 1))
    path.reverse()
    return path, float(acc[n, m])
