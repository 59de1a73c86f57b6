"""X-Token's student -> teacher projection W: a sparse ``[V_s, V_t]`` matrix built once from the two vocabularies.

Row ``s`` of W says where the student's probability of token ``s`` goes in the teacher's vocabulary
(docs/cross_tokenizer_methods.md, "X-Token"):

1. **Exact matches** (the vocabulary map of :mod:`crossdistill.align.vocab_map`: identical token strings, then
   identical canonical bytes) get the one-hot row ``W[s, t] = 1``.
2. **Multi-token re-tokenizations.** Every other student token's bytes are tokenized by the teacher's tokenizer; the
   ``n`` pieces (at most ``max_pieces``) get decayed weights ``w_i ∝ 0.9 · 0.1^i`` (normalized to sum 1), so almost
   all the mass goes to the FIRST piece — the token the teacher's next-token distribution actually predicts at the
   start of that text. ``201`` -> ``2`` (0.9009), ``0`` (0.0901), ``1`` (0.0090).
3. **Reverse pass** (``reverse=True``): every teacher token is tokenized by the student's tokenizer and its pieces'
   rows get the same decayed weights on that teacher token (``Hundreds`` -> ``Hund`` +0.909, ``reds`` +0.091).
4. **End of sequence**: the student's EOS maps onto the teacher's EOS (weight 1) when they are not an exact match,
   so the group that closes every completion keeps its signal.
5. Rows are normalized to sum 1, cut to their ``top_k`` largest entries (ties: lower teacher id) and normalized
   again. Exact-match rows stay one-hot. Special tokens take part only through rules 1 and 4.

A re-tokenization is kept only if its pieces spell exactly the same bytes (canonical keys of
:func:`crossdistill.align.vocab_map.token_keys`): tokenizers that prepend a space (SentencePiece ``prepend_scheme``)
are retried on their model alone, WordPiece (which drops whitespace and may lowercase) must spell the text as its
own normalizer leaves it (``" The"`` -> ``the``), and tokens
that are not valid UTF-8 on their own (byte-level pieces of one character) go through the other side's byte tokens
when it has them. Nothing is ever dense: W is stored as ``indices [V_s, top_k]`` (-1 padding) and ``weights``, and
turned into two CSR matrices (``W`` and ``Wᵀ``) on the device that uses it.

Built once per (teacher tokenizer, student tokenizer, settings) and cached, like the vocabulary map, as
``<cache_root>/projections/v<version>-<teacher hash>-<student hash>-k<top_k>-p<max_pieces>-r<reverse>.npz``
(written atomically).
"""

from __future__ import annotations

import json
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossdistill.align.vocab_map import _byte_decoder, build_vocab_map, token_keys, tokenizer_family, tokenizer_hash
from crossdistill.io import atomic_file

PROJECTION_VERSION = 1
"""Bumped whenever :func:`compute_projection` changes, so projections cached by an older version are not reused."""
FIRST_WEIGHT = 0.9
DECAY = 0.1
RELAXED_THRESHOLD = 0.6
"""H-KL's relaxed matching: a student token is matched to its top teacher entry when that entry's weight is at least
this (the reference implementation's threshold)."""


def piece_weights(n: int) -> list[float]:
    """Decayed weights of an ``n``-piece re-tokenization: ``w_i ∝ 0.9 · 0.1^i``, summing to 1.

    >>> [round(w, 4) for w in piece_weights(3)]
    [0.9009, 0.0901, 0.009]
    """
    raw = [FIRST_WEIGHT * DECAY**i for i in range(n)]
    total = sum(raw)
    return [w / total for w in raw]


def special_ids(tokenizer: Any) -> set[int]:
    """Ids of the tokenizer's special tokens (added tokens flagged special, and ``all_special_ids``)."""
    out = {int(i) for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)}
    out.update(int(i) for i in (tokenizer.all_special_ids or []) if i is not None)
    return {i for i in out if 0 <= i < len(tokenizer)}


@lru_cache(maxsize=1)
def _byte_encoder() -> dict[int, str]:
    return {b: c for c, b in _byte_decoder().items()}


class Retokenizer:
    """Tokenizes raw bytes with one tokenizer and keeps only exact spellings (module docstring)."""

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer
        self.family = tokenizer_family(tokenizer)
        self.keys = token_keys(tokenizer)
        self.specials = special_ids(tokenizer)
        self.model = tokenizer.backend_tokenizer.model
        self.byte_token: dict[int, int] = {}
        for i, k in enumerate(self.keys):
            if k is not None and len(k) == 1 and i not in self.specials:
                self.byte_token.setdefault(k[0], i)

    def _spells(self, ids: list[int], data: bytes) -> bool:
        if not ids or any(i in self.specials or i >= len(self.keys) or self.keys[i] is None for i in ids):
            return False
        return b"".join(self.keys[i] for i in ids) == data

    def _target(self, data: bytes, text: str) -> bytes:
        """What the pieces must spell: the bytes themselves, or for WordPiece (which drops whitespace and
        normalizes, e.g. lowercases) the normalized text without whitespace."""
        if self.family != "wordpiece":
            return data
        norm = self.tokenizer.backend_tokenizer.normalizer
        text = norm.normalize_str(text) if norm is not None else text
        return "".join(text.split()).encode("utf-8")

    def _from_bytes(self, data: bytes) -> list[int] | None:
        if self.family == "bytelevel":
            enc = _byte_encoder()
            ids = [t.id for t in self.model.tokenize("".join(enc[b] for b in data))]
            if self._spells(ids, data):
                return ids
        if all(b in self.byte_token for b in data):
            return [self.byte_token[b] for b in data]
        return None

    def pieces(self, items: list[bytes | None]) -> list[list[int] | None]:
        """The token ids spelling each byte string exactly, or None where this tokenizer cannot."""
        out: list[list[int] | None] = [None] * len(items)
        texts, where = [], []
        for n, data in enumerate(items):
            if not data:
                continue
            try:
                texts.append(data.decode("utf-8"))
                where.append(n)
            except UnicodeDecodeError:
                out[n] = self._from_bytes(data)
        if texts:
            encoded = self.tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
            for n, text, ids in zip(where, texts, encoded):
                data = self._target(items[n], text)
                if self._spells(ids, data):
                    out[n] = list(ids)
                elif self.family == "metaspace":  # a prepended "▁": tokenize with the model alone
                    ids = [t.id for t in self.model.tokenize(text.replace(" ", "\u2581"))]
                    if self._spells(ids, data):
                        out[n] = ids
        return out


@dataclass(frozen=True)
class Projection:
    """The sparse student -> teacher projection (rows: student ids, columns: teacher ids)."""

    indices: np.ndarray
    """``[V_s, K]`` int64 teacher ids of each student row, sorted by weight (descending), ``-1`` padding."""
    weights: np.ndarray
    """``[V_s, K]`` float32 weights, each non-empty row summing to 1 (0 on padding)."""
    teacher_size: int
    """``V_t`` (``len(teacher_tokenizer)``)."""
    teacher_hash: str = "?"
    student_hash: str = "?"
    stats: dict[str, int] = field(default_factory=dict, compare=False)
    """How each row was built (``exact``, ``multi_token``, ``eos``, ``empty`` rows; ``rejected`` re-tokenizations)."""
    _matrices: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def student_size(self) -> int:
        return int(self.indices.shape[0])

    @property
    def top_k(self) -> int:
        return int(self.indices.shape[1])

    def entries(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(student ids, teacher ids, weights)`` of the non-zero entries (COO)."""
        keep = self.indices >= 0
        rows = np.broadcast_to(np.arange(self.student_size)[:, None], self.indices.shape)[keep]
        return rows.astype(np.int64), self.indices[keep].astype(np.int64), self.weights[keep].astype(np.float32)

    def covered_teacher(self) -> np.ndarray:
        """``[V_t]`` bool: teacher tokens that some student token projects onto (W's non-empty columns)."""
        out = np.zeros(self.teacher_size, dtype=bool)
        out[self.indices[self.indices >= 0]] = True
        return out

    def covered_mask(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """:meth:`covered_teacher` as a bool tensor on ``device`` (built once per device)."""
        key = ("covered", str(device))
        if key not in self._matrices:
            self._matrices[key] = torch.as_tensor(self.covered_teacher(), device=device)
        return self._matrices[key]

    def mapped_student(self) -> np.ndarray:
        """``[V_s]`` bool: student tokens with a non-empty row (their mass lands somewhere in the teacher vocab)."""
        return self.indices[:, 0] >= 0

    def to_dense(self) -> torch.Tensor:
        """``[V_s, V_t]`` float64 dense W — for tests on tiny vocabularies only (refuses more than 10^7 entries)."""
        if self.student_size * self.teacher_size > 10**7:
            raise ValueError(f"to_dense() on a {self.student_size} x {self.teacher_size} projection: never build a "
                             "dense W for real vocabularies (use matrices())")
        out = torch.zeros(self.student_size, self.teacher_size, dtype=torch.float64)
        r, c, v = self.entries()
        out[torch.as_tensor(r), torch.as_tensor(c)] = torch.as_tensor(v, dtype=torch.float64)
        return out

    def matrices(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(W [V_s, V_t], Wᵀ [V_t, V_s])`` as CSR tensors on ``device`` (built once per device and dtype)."""
        key = (str(device), dtype)
        if key not in self._matrices:
            r, c, v = self.entries()
            idx = torch.as_tensor(np.stack([r, c]))
            with warnings.catch_warnings():  # "sparse CSR support is in beta" / invariant-check notices
                warnings.simplefilter("ignore", UserWarning)
                coo = torch.sparse_coo_tensor(idx, torch.as_tensor(v, dtype=dtype),
                                              (self.student_size, self.teacher_size)).coalesce()
                w = coo.to_sparse_csr().to(device)
                wt = coo.t().coalesce().to_sparse_csr().to(device)
            self._matrices[key] = (w, wt)
        return self._matrices[key]

    def relaxed_map(self, threshold: float = RELAXED_THRESHOLD) -> np.ndarray:
        """H-KL's matching as a ``[V_t]`` teacher -> student map (``-1``: unmatched), injective.

        A student token is a candidate for its top-weighted teacher token when that weight is ``>= threshold``
        (exact matches have weight 1); when several students want one teacher token, the highest weight wins, then
        the lowest student id.
        """
        top_t, top_w = self.indices[:, 0], self.weights[:, 0]
        cand = np.nonzero((top_t >= 0) & (top_w >= threshold))[0]
        out = np.full(self.teacher_size, -1, dtype=np.int64)
        # highest weight first, then the lowest student id: the first writer per teacher id wins
        order = cand[np.lexsort((cand, -top_w[cand].astype(np.float64)))]
        for s in order.tolist():
            t = int(top_t[s])
            if out[t] < 0:
                out[t] = s
        return out

    @classmethod
    def identity(cls, vocab_size: int) -> Projection:
        """W = I: a tokenizer projected onto itself (every row an exact match)."""
        return cls(np.arange(vocab_size, dtype=np.int64)[:, None], np.ones((vocab_size, 1), np.float32), vocab_size,
                   "identity", "identity", {"exact": vocab_size})

    @classmethod
    def from_rows(cls, rows: dict[int, dict[int, float]], student_size: int, teacher_size: int, top_k: int,
                  **meta: Any) -> Projection:
        """From ``{student id: {teacher id: weight}}``: rows normalized, cut to ``top_k``, normalized again."""
        idx = np.full((student_size, top_k), -1, dtype=np.int64)
        val = np.zeros((student_size, top_k), dtype=np.float32)
        for s, row in rows.items():
            items = sorted(((w, t) for t, w in row.items() if w > 0), key=lambda x: (-x[0], x[1]))[:top_k]
            total = sum(w for w, _ in items)
            for j, (w, t) in enumerate(items):
                idx[s, j] = t
                val[s, j] = w / total
        return cls(idx, val, teacher_size, **meta)


def compute_projection(teacher_tokenizer: Any, student_tokenizer: Any, top_k: int = 4, max_pieces: int = 4,
                       reverse: bool = True, vocab_map: Any = None) -> Projection:
    """W for a tokenizer pair, no cache (module docstring). ``vocab_map``: the pair's exact map, if already built."""
    if top_k < 1 or max_pieces < 1:
        raise ValueError(f"top_k={top_k} and max_pieces={max_pieces} must be >= 1")
    v_s, v_t = len(student_tokenizer), len(teacher_tokenizer)
    vm = vocab_map if vocab_map is not None else build_vocab_map(teacher_tokenizer, student_tokenizer)
    t2s = np.asarray(vm.teacher_to_student)
    exact = {int(s): int(t) for t, s in enumerate(t2s.tolist()) if s >= 0}
    s_retok, t_retok = Retokenizer(student_tokenizer), Retokenizer(teacher_tokenizer)
    rows: dict[int, dict[int, float]] = defaultdict(lambda: defaultdict(float))
    stats = {"exact": len(exact), "multi_token": 0, "eos": 0, "empty": 0, "rejected": 0}

    todo = [s for s in range(v_s) if s not in exact and s not in s_retok.specials and s_retok.keys[s]]
    for s, pieces in zip(todo, t_retok.pieces([s_retok.keys[s] for s in todo])):
        if pieces is None:
            stats["rejected"] += 1
            continue
        pieces = pieces[:max_pieces]
        for t, w in zip(pieces, piece_weights(len(pieces))):
            rows[s][t] += w
    if reverse:
        todo_t = [t for t in range(v_t) if t not in t_retok.specials and t_retok.keys[t]]
        for t, pieces in zip(todo_t, s_retok.pieces([t_retok.keys[t] for t in todo_t])):
            if pieces is None:
                stats["rejected"] += 1
                continue
            pieces = pieces[:max_pieces]
            for s, w in zip(pieces, piece_weights(len(pieces))):
                if s not in exact:
                    rows[s][t] += w
    for s, t in exact.items():
        rows[s] = {t: 1.0}
    s_eos, t_eos = student_tokenizer.eos_token_id, teacher_tokenizer.eos_token_id
    if s_eos is not None and t_eos is not None and exact.get(int(s_eos)) != int(t_eos):
        rows[int(s_eos)] = {int(t_eos): 1.0}
        stats["eos"] = 1
    stats["multi_token"] = sum(1 for s in rows if s not in exact and s != s_eos)
    proj = Projection.from_rows(rows, v_s, v_t, top_k, teacher_hash=tokenizer_hash(teacher_tokenizer),
                                student_hash=tokenizer_hash(student_tokenizer), stats=stats)
    stats["empty"] = int((~proj.mapped_student()).sum())
    return proj


def build_projection(teacher_tokenizer: Any, student_tokenizer: Any, top_k: int = 4, max_pieces: int = 4,
                     reverse: bool = True, cache_dir: str | Path | None = None, use_cache: bool = True) -> Projection:
    """W for a tokenizer pair, from the on-disk cache when present (module docstring).

    Args:
        top_k: teacher entries kept per student row.
        max_pieces: pieces of a re-tokenization that get a weight (the rest is dropped).
        reverse: also run the teacher -> student pass.
        cache_dir: directory for cached projections; default ``<cache_root>/projections``.
        use_cache: False computes without reading or writing the cache.
    """
    th, sh = tokenizer_hash(teacher_tokenizer), tokenizer_hash(student_tokenizer)
    if not use_cache:
        return compute_projection(teacher_tokenizer, student_tokenizer, top_k, max_pieces, reverse)
    if cache_dir is None:
        from crossdistill.assets import cache_root

        cache_dir = cache_root() / "projections"
    path = Path(cache_dir) / f"v{PROJECTION_VERSION}-{th[:24]}-{sh[:24]}-k{top_k}-p{max_pieces}-r{int(reverse)}.npz"
    v_s, v_t = len(student_tokenizer), len(teacher_tokenizer)
    if path.exists():
        try:
            with np.load(path) as z:
                idx, val, meta = z["indices"], z["weights"], json.loads(str(z["meta"]))
            if idx.shape == (v_s, top_k) == val.shape and meta.get("teacher_size") == v_t:
                return Projection(idx.astype(np.int64), val.astype(np.float32), v_t, th, sh, meta.get("stats", {}))
        except (OSError, ValueError, KeyError):
            pass  # corrupt or foreign file: rebuild and overwrite
    proj = compute_projection(teacher_tokenizer, student_tokenizer, top_k, max_pieces, reverse)
    with atomic_file(path) as handle:  # a concurrent reader sees the old file or the whole new one
        np.savez(handle, indices=proj.indices, weights=proj.weights,
                 meta=np.array(json.dumps({"teacher_size": v_t, "stats": proj.stats})))
    return proj


__all__ = ["PROJECTION_VERSION", "Projection", "RELAXED_THRESHOLD", "Retokenizer", "build_projection",
           "compute_projection", "piece_weights", "special_ids"]
