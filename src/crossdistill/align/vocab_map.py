"""Vocabulary map between two tokenizers: teacher id -> student id of the token with the same text, or -1.

Tokens are compared by their BYTES after undoing each family's encoding (like GOLD's vocabulary map, but across
families, where GOLD compares raw token strings):

* byte-level BPE (GPT-2 / Llama-3 / Qwen / SmolLM): every character is a stand-in for one byte (``Ġ`` = space);
* SentencePiece / Metaspace: ``▁`` is a space; byte-fallback pieces ``<0xNN>`` are the byte NN (in every family);
* WordPiece: ``##x`` (continuation) and ``x`` (word start) are both the bytes of ``x`` — WordPiece does not say
  whether a space precedes a word; the normalizer's lowercasing is not undone;
* special tokens match only an identical special token of the other side (``<|im_end|>`` == ``<|im_end|>``).

Identical token strings are matched first (a tokenizer maps onto itself as the identity); the remaining tokens are
matched by bytes. The map is injective: when several tokens have the same bytes, the lowest id wins, so no student
column is used twice by the hybrid loss. Built once and cached as
``<cache_root>/vocab_maps/<teacher hash>-<student hash>.npy``
(``$CROSSDISTILL_CACHE`` or ``~/.cache/crossdistill``), keyed by a SHA-256 of each tokenizer's full serialization,
written atomically.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from crossdistill.io import atomic_file

_BYTE_FALLBACK = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
MAP_VERSION = 2
"""Bumped whenever :func:`compute_vocab_map` changes, so maps cached by an older version are not reused."""


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode table (printable bytes map to themselves, the rest to U+0100...)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    chars = list(keep)
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(keep, chars)}


def tokenizer_family(tokenizer: Any) -> str:
    """``"bytelevel"``, ``"metaspace"``, ``"wordpiece"`` or ``"other"``, from the backend's model and decoder."""
    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = (spec.get("model") or {}).get("type")
    text = json.dumps(spec.get("decoder")) + json.dumps(spec.get("pre_tokenizer"))
    if "ByteLevel" in text:
        return "bytelevel"
    if model == "WordPiece" or '"WordPiece"' in text:
        return "wordpiece"
    return "metaspace" if ("Metaspace" in text or "\u2581" in text or "\\u2581" in text) else "other"


def tokenizer_hash(tokenizer: Any) -> str:
    """SHA-256 of the tokenizer's full serialization (model, vocab, merges, normalizers, added tokens)."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode("utf-8")).hexdigest()


def token_keys(tokenizer: Any) -> list[bytes | None]:
    """Canonical key of every id in ``range(len(tokenizer))`` (module docstring); None for ids with no token."""
    family = tokenizer_family(tokenizer)
    n = len(tokenizer)
    tokens = tokenizer.convert_ids_to_tokens(list(range(n)))
    specials = {str(t) for i, t in tokenizer.added_tokens_decoder.items() if getattr(t, "special", False)}
    dec = _byte_decoder()
    keys: list[bytes | None] = []
    for tok in tokens:
        if tok is None:
            keys.append(None)
            continue
        m = _BYTE_FALLBACK.match(tok)
        if m:
            keys.append(bytes([int(m.group(1), 16)]))
        elif tok in specials:
            keys.append(b"\x00special:" + tok.encode("utf-8"))
        elif family == "bytelevel":
            keys.append(bytes(dec[c] for c in tok) if all(c in dec for c in tok) else tok.encode("utf-8"))
        elif family == "wordpiece":
            keys.append((tok[2:] if tok.startswith("##") and len(tok) > 2 else tok).encode("utf-8"))
        else:
            keys.append(tok.replace("\u2581", " ").encode("utf-8"))
    return keys


@dataclass(frozen=True)
class VocabMap:
    """Teacher id -> student id map and its summary."""

    teacher_to_student: np.ndarray
    """``[V_t]`` int64, the student id with the same bytes, or -1."""
    student_size: int
    """``len(student_tokenizer)``."""
    teacher_hash: str
    student_hash: str

    @property
    def matched_teacher(self) -> np.ndarray:
        """Teacher ids that have a student counterpart."""
        return np.nonzero(self.teacher_to_student >= 0)[0]

    @property
    def matched_student(self) -> np.ndarray:
        """Student ids of those counterparts (same order as :attr:`matched_teacher`)."""
        return self.teacher_to_student[self.teacher_to_student >= 0]

    @property
    def num_matched(self) -> int:
        return int((self.teacher_to_student >= 0).sum())

    def overlap(self) -> dict[str, float]:
        """Matched count and fractions of each vocabulary."""
        m = self.num_matched
        return {"matched": m, "teacher_vocab": int(self.teacher_to_student.size), "student_vocab": self.student_size,
                "frac_teacher": m / max(1, self.teacher_to_student.size), "frac_student": m / max(1, self.student_size)}


def compute_vocab_map(teacher_tokenizer: Any, student_tokenizer: Any) -> np.ndarray:
    """``[V_t]`` int64 teacher -> student map (no cache).

    Pass 1 matches identical token strings (so a tokenizer maps onto itself as the identity, and same-family pairs
    match as GOLD does); pass 2 matches the remaining tokens by canonical bytes, lowest id first.
    """
    t_tok = teacher_tokenizer.convert_ids_to_tokens(list(range(len(teacher_tokenizer))))
    s_tok = student_tokenizer.convert_ids_to_tokens(list(range(len(student_tokenizer))))
    out = np.full(len(t_tok), -1, dtype=np.int64)
    s_by_str: dict[str, int] = {}
    for i, tok in enumerate(s_tok):
        if tok is not None:
            s_by_str.setdefault(tok, i)
    used: set[int] = set()
    for i, tok in enumerate(t_tok):
        j = s_by_str.get(tok) if tok is not None else None
        if j is not None and j not in used:
            out[i] = j
            used.add(j)
    # When several student pieces spell the same bytes, prefer the one the tokenizer emits: a byte-fallback piece
    # (`<0x20>`) is never produced for a character the vocabulary covers (` ` becomes `▁`), so mapping the teacher's
    # `Ġ` onto it would teach the student to put mass on a token it never writes.
    s_by_key: dict[bytes, int] = {}
    keys = token_keys(student_tokenizer)
    for fallback_pass in (False, True):
        for i, k in enumerate(keys):
            if (k is not None and i not in used
                    and (s_tok[i] is not None and bool(_BYTE_FALLBACK.match(s_tok[i]))) == fallback_pass):
                s_by_key.setdefault(k, i)
    for i, k in enumerate(token_keys(teacher_tokenizer)):
        if out[i] >= 0 or k is None:
            continue
        j = s_by_key.get(k)
        if j is not None and j not in used:
            out[i] = j
            used.add(j)
    return out


def build_vocab_map(teacher_tokenizer: Any, student_tokenizer: Any, cache_dir: str | Path | None = None,
                    use_cache: bool = True) -> VocabMap:
    """The teacher -> student map, from the on-disk cache when present (see the module docstring).

    Args:
        cache_dir: directory for cached maps; default ``<cache_root>/vocab_maps``.
        use_cache: False computes without reading or writing the cache.
    """
    th, sh = tokenizer_hash(teacher_tokenizer), tokenizer_hash(student_tokenizer)
    if use_cache:
        if cache_dir is None:
            from crossdistill.assets import cache_root

            cache_dir = cache_root() / "vocab_maps"
        path = Path(cache_dir) / f"v{MAP_VERSION}-{th[:24]}-{sh[:24]}.npy"
        if path.exists():
            try:
                arr = np.load(path)
                if arr.shape == (len(teacher_tokenizer),) and arr.dtype == np.int64:
                    return VocabMap(arr, len(student_tokenizer), th, sh)
            except (OSError, ValueError):
                pass  # corrupt or foreign file: rebuild and overwrite
        arr = compute_vocab_map(teacher_tokenizer, student_tokenizer)
        with atomic_file(path) as handle:  # a concurrent reader sees the old map or the whole new one
            np.save(handle, arr)
    else:
        arr = compute_vocab_map(teacher_tokenizer, student_tokenizer)
    return VocabMap(arr, len(student_tokenizer), th, sh)


def identity_map(vocab_size: int) -> VocabMap:
    """Map of a tokenizer onto itself (every id matched) — same-tokenizer checks and tests."""
    return VocabMap(np.arange(vocab_size, dtype=np.int64), vocab_size, "identity", "identity")
