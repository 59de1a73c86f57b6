"""CDM's contextual dynamic vocabulary map (docs/cross_tokenizer_methods.md, CDM step 4), on an exact-match map.

The map starts from a static teacher → student id map (:func:`crossdistill.align.vocab_map.build_vocab_map`: same
token bytes; -1 = unmapped). At every aligned position, each *unmapped* teacher id among the teacher's top-k is
compared with the student's top-k ids **at that same position**; the candidate with the smallest normalized edit
distance d(a, b) = ed(a, b) / (|a| + |b|) is added to the map if d < threshold (0.3). Added pairs persist: a teacher
id mapped once is never reconsidered, and exact-match entries are never changed.

Vectorized: all (position, unmapped teacher id, candidate) triples of a batch are scored at once with
:func:`crossdistill.align.dtw.paired_edit_distance`, after two cheap exact filters (a pair whose length difference
alone gives d ≥ threshold cannot pass; pairs are deduplicated). Processing positions in order, the sequential rule
"a is still unmapped at position p" is equivalent to "a is added at the FIRST position where its best candidate
passes", which is how the batch result is resolved.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crossdistill.align.dtw import encode_strings, paired_edit_distance_codes


def vocab_strings(tokenizer) -> list[str]:
    """Text of every id in ``range(len(tokenizer))``: token bytes decoded as UTF-8 (invalid bytes → U+FFFD), special
    tokens as their literal string. Uses the alignment layer's canonical keys (``▁`` / ``Ġ`` are spaces)."""
    from crossdistill.align.vocab_map import token_keys

    out = []
    for key in token_keys(tokenizer):
        if key is None:
            out.append("")
        elif key.startswith(b"\x00special:"):
            out.append(key[len(b"\x00special:"):].decode("utf-8", errors="replace"))
        else:
            out.append(key.decode("utf-8", errors="replace"))
    return out


class DynamicVocabMap:
    """Teacher → student id map that grows with context (CDM). Keep one per run (the map persists across steps).

    Args:
        base: ``[V_t]`` int64 exact-match map (-1 = unmapped); copied.
        teacher_strings: text of every teacher id (``[V_t]``), compared without spaces.
        student_strings: text of every student id (``[V_s]``).
        threshold: add a pair only if its normalized edit distance is strictly below this (CDM: 0.3).
    """

    def __init__(self, base: np.ndarray, teacher_strings: Sequence[str], student_strings: Sequence[str],
                 threshold: float = 0.3) -> None:
        base = np.asarray(base, dtype=np.int64)
        if base.ndim != 1 or base.size != len(teacher_strings):
            raise ValueError(f"base map has shape {base.shape}; it must be [V_t] = [{len(teacher_strings)}] "
                             "(one entry per teacher id)")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"threshold={threshold} must be in (0, 1] (CDM uses 0.3)")
        self.base = base.copy()
        self.mapping = base.copy()
        self.threshold = float(threshold)
        self.t_text = np.array([s.replace(" ", "").replace("\u2581", "") for s in teacher_strings], dtype=object)
        self.s_text = np.array([s.replace(" ", "").replace("\u2581", "") for s in student_strings], dtype=object)
        self.t_codes, self.t_len = encode_strings(list(self.t_text))       # encoded once per run
        self.s_codes, self.s_len = encode_strings(list(self.s_text))
        self._inverse: np.ndarray | None = None

    @property
    def student_size(self) -> int:
        return len(self.s_text)

    @property
    def added(self) -> np.ndarray:
        """``[A, 2]`` (teacher id, student id) pairs added in context so far."""
        ids = np.nonzero((self.mapping >= 0) & (self.base < 0))[0]
        return np.stack([ids, self.mapping[ids]], axis=1)

    def inverse(self) -> np.ndarray:
        """``[V_s]`` student → teacher map: the exact-match teacher id when there is one, else the lowest teacher
        id added for that student id, else -1."""
        if self._inverse is None:
            inv = np.full(self.student_size, -1, dtype=np.int64)
            for m in (self.mapping, self.base):                               # base last: exact matches win
                ids = np.nonzero(m >= 0)[0][::-1]                             # reversed: lowest id written last
                inv[m[ids]] = ids
            self._inverse = inv
        return self._inverse

    def update(self, teacher_topk: np.ndarray, student_topk: np.ndarray) -> int:
        """Add context pairs from P positions, in order. Returns the number of pairs added.

        Args:
            teacher_topk: ``[P, k]`` teacher top-k ids per position.
            student_topk: ``[P, k_s]`` student top-k ids at the same positions (the candidates).
        """
        teacher_topk = np.asarray(teacher_topk, dtype=np.int64)
        student_topk = np.asarray(student_topk, dtype=np.int64)
        if teacher_topk.ndim != 2 or student_topk.ndim != 2 or teacher_topk.shape[0] != student_topk.shape[0]:
            raise ValueError(f"teacher_topk {teacher_topk.shape} and student_topk {student_topk.shape} must be "
                             "[P, k] over the same P positions")
        pos, col = np.nonzero(self.mapping[teacher_topk] < 0)
        if pos.size == 0:
            return 0
        a = teacher_topk[pos, col]                                            # [Q] unmapped teacher ids
        k_s = student_topk.shape[1]
        q_idx = np.repeat(np.arange(a.size), k_s)                             # [Q * k_s]
        b = student_topk[pos].reshape(-1)
        a_rep = a[q_idx]
        la, lb = self.t_len[a_rep], self.s_len[b]
        denom = la + lb
        # |la - lb| <= ed, so d >= |la - lb| / (la + lb): a pair failing that bound cannot pass the threshold.
        keep = (denom > 0) & (np.abs(la - lb) < self.threshold * denom)
        d = np.full(a_rep.size, np.inf)
        if keep.any():
            pair_key = a_rep[keep] * self.student_size + b[keep]
            uniq, inv = np.unique(pair_key, return_inverse=True)
            ua, ub = uniq // self.student_size, uniq % self.student_size
            ed = paired_edit_distance_codes(self.t_codes[ua], self.t_len[ua], self.s_codes[ub],
                                            self.s_len[ub]).astype(np.float64)
            d[keep] = (ed / (self.t_len[ua] + self.s_len[ub]))[inv]
        d = d.reshape(a.size, k_s)
        best = d.argmin(axis=1)                                               # first candidate on ties
        best_d = d[np.arange(a.size), best]
        ok = best_d < self.threshold
        if not ok.any():
            return 0
        a_ok, b_ok, p_ok = a[ok], student_topk[pos[ok], best[ok]], pos[ok]
        order = np.lexsort((col[ok], p_ok))                                   # position order, then rank
        first = np.unique(a_ok[order], return_index=True)[1]
        chosen = order[first]
        self.mapping[a_ok[chosen]] = b_ok[chosen]
        self._inverse = None
        return int(chosen.size)
