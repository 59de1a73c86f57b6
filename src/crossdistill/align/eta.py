"""DSKDv2 exact token alignment (ETA): a greedy two-pointer walk over both token strings.

Only tokens with **identical strings that start at the same character offset** are paired. The walk keeps the text
consumed so far on each side (``hist_t``, ``hist_s``) and advances the side that is behind; when both histories are
equal and the next tokens are equal (or both are EOS), the pair is recorded. O(n + m) steps, no O(n·m) table.

Token strings: the official code strips the ``▁`` / ``Ġ`` markers from ``convert_ids_to_tokens``. Across tokenizer
families that breaks on non-ASCII text (byte-level BPE spells ``é`` as ``Ã©``), so :func:`eta_token_strings` uses
the alignment layer's canonical token BYTES instead (one character per byte, spaces removed): equal strings then
mean equal bytes in every family.
"""

from __future__ import annotations

from collections.abc import Sequence

MARKERS = ("\u2581", "\u0120")  # "▁" (SentencePiece) and "Ġ" (byte-level BPE)


def strip_markers(token: str) -> str:
    """The token string with ``▁`` and ``Ġ`` removed (the official normalization)."""
    for mark in MARKERS:
        token = token.replace(mark, "")
    return token


def eta_align(teacher_tokens: Sequence[str], student_tokens: Sequence[str], *, teacher_eos: str | None = None,
              student_eos: str | None = None, strip: bool = True) -> list[tuple[int, int]]:
    """Greedy two-pointer exact alignment.

    Args:
        teacher_tokens: m teacher token strings, in order.
        student_tokens: n student token strings.
        teacher_eos / student_eos: the two EOS strings, which pair with each other although they differ.
        strip: remove ``▁`` / ``Ġ`` first (the official normalization; pass False for pre-normalized strings).

    Returns:
        ``[(i, j), ...]`` teacher index i paired with student index j, increasing in both.
    """
    t = [strip_markers(x) for x in teacher_tokens] if strip else list(teacher_tokens)
    s = [strip_markers(x) for x in student_tokens] if strip else list(student_tokens)
    t_eos = strip_markers(teacher_eos) if (strip and teacher_eos is not None) else teacher_eos
    s_eos = strip_markers(student_eos) if (strip and student_eos is not None) else student_eos
    i = j = 0
    hist_t: list[str] = []
    hist_s: list[str] = []
    len_t = len_s = 0
    pairs: list[tuple[int, int]] = []
    while i < len(t) and j < len(s):
        # Equal lengths with equal text: compare the joined histories only then (cheap, and rare to differ).
        same = len_t == len_s and "".join(hist_t) == "".join(hist_s)
        if same and (t[i] == s[j] or (t_eos is not None and t[i] == t_eos and s[j] == s_eos)):
            pairs.append((i, j))
            hist_t.append(t[i])
            hist_s.append(s[j])
            len_t += len(t[i])
            len_s += len(s[j])
            i += 1
            j += 1
        elif len_t > len_s:
            hist_s.append(s[j])
            len_s += len(s[j])
            j += 1
        elif len_t < len_s:
            hist_t.append(t[i])
            len_t += len(t[i])
            i += 1
        else:
            hist_t.append(t[i])
            hist_s.append(s[j])
            len_t += len(t[i])
            len_s += len(s[j])
            i += 1
            j += 1
    return pairs


def eta_token_strings(tokenizer, ids: Sequence[int], keys: Sequence[bytes | None] | None = None) -> list[str]:
    """Canonical ETA strings of ``ids``: token bytes as latin-1 text (one char per byte) with spaces removed;
    special tokens as their literal text.

    Args:
        keys: precomputed :func:`crossdistill.align.vocab_map.token_keys` of the tokenizer (compute once per run).
    """
    if keys is None:
        from crossdistill.align.vocab_map import token_keys

        keys = token_keys(tokenizer)
    out = []
    for i in ids:
        key = keys[int(i)] if 0 <= int(i) < len(keys) else None
        if key is None:
            out.append("")
        elif key.startswith(b"\x00special:"):
            out.append(key[len(b"\x00special:"):].decode("utf-8", errors="replace"))
        else:
            out.append(key.replace(b" ", b"").decode("latin-1"))
    return out
