"""Plain-Python reference implementations that the vectorized code is tested against (slow on purpose: one cell at a
time, the textbook recurrence, nothing clever to get wrong)."""

from __future__ import annotations


def levenshtein(a: str, b: str) -> int:
    """Unit-cost edit distance (insert, delete, substitute) by the textbook row-by-row DP."""
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[-1]
