"""Render one example for one tokenizer: chat template, tokenization, labels and completion character spans.

This is the first step of the data flow (docs/design.md, "One training step"): every model renders the prompt
with ITS OWN chat template, the completion is one text shared by both models, and every completion token records
which characters of that text it covers, so :mod:`crossdistill.align` can pair student and teacher tokens by text.

API::

    from crossdistill.data.render import render, render_batch, collate_rendered

    r = render(tokenizer, prompt, completion, max_length=1024)
    #   prompt:     list of chat messages [{"role": ..., "content": ...}, ...] rendered with the tokenizer's own
    #               template (apply_chat_template, add_generation_prompt=True), or a plain string used verbatim.
    #   completion: the answer text, identical for student and teacher.
    r.input_ids            # list[int]  prompt ids + completion ids (+ EOS unless truncated)
    r.labels               # list[int]  -100 on the prompt, the token id on every completion token (EOS included)
    r.completion_start     # int        index in input_ids of the first completion token
    r.spans                # list[(start, end)] one per completion token (EOS included), character offsets into
                           #            `completion`; they PARTITION completion[:r.covered] (see "Span rule")
    r.flags                # frozenset of strings, see FLAGS below
    batch = collate_rendered([r1, r2, ...], pad_id=tok.pad_token_id)   # dict of padded torch tensors

Labels are NOT shifted here: ``crossdistill.positions.shift_targets`` owns the shift (docs/design.md, contract 1).
Completion token ``c`` (0-based, EOS is the last one) sits at ``input_ids[completion_start + c]`` and is predicted by
logit row ``completion_start + c - 1``.

Tokenization rules
------------------
* ``add_special_tokens`` is never passed to the tokenizer for the whole sequence. Instead the tokenizer's own prefix
  specials (what its post-processor puts before a text, e.g. ``<bos>`` or ``[CLS]``) are detected once and prepended
  unless the rendered prompt already starts with them — chat templates that write ``{{ bos_token }}`` therefore do
  not get a duplicate BOS. Suffix specials of the post-processor (``[SEP]``, ``</s>``) are not added; EOS is explicit.
* EOS (``eos_token`` argument, default ``tokenizer.eos_token``) is appended as the last completion token with the
  zero-width span ``(len(completion), len(completion))``. A tokenizer without an EOS token gets flag ``no_eos``.
* Prompt and completion are tokenized JOINTLY (so SentencePiece does not add a dummy-prefix ``▁`` to the start of the
  completion, and the ids are the ones the model sees at inference). If a token straddles the prompt/completion
  boundary the completion is tokenized on its own instead and flag ``boundary_merge`` is set.
* ``max_length`` truncates the completion from the right (no EOS is appended to a truncated completion: the text did
  not end); flag ``truncated``. If the prompt alone does not fit, the prompt keeps its first ``max_length`` tokens,
  the completion is empty and flag ``prompt_truncated`` is set (callers usually drop such examples).
* A tokenizer with no chat template renders messages by plain concatenation (``content`` of every message, one per
  line, followed by a newline) and gets flag ``no_chat_template``; record it in manifests and logs.

Span rule (why spans partition the text)
----------------------------------------
Raw offsets of fast tokenizers overlap (byte-level BPE and byte fallback split one multi-byte character over several
tokens, all reporting that character) and leave gaps (WordPiece drops whitespace; offsets of a lowercasing
normalizer still point into the original text). We turn them into a partition of ``completion[:covered]``:

* **A character belongs to the token that completes it.** A token ends where the next token starts if they overlap:
  ``end_i = min(raw_end_i, raw_start_{i+1})``, made non-decreasing. Tokens that only carry the first bytes of a
  character get a zero-width span.
* **Gaps go to the following token**: ``start_i = end_{i-1}`` (``start_0 = 0``), so dropped whitespace belongs to
  the next word piece; trailing uncovered text belongs to the last non-EOS token (``end = len(completion)``).
* ``covered = len(completion)`` unless the completion was truncated (then it is the last kept token's end). If no
  regular token survives (empty completion, or text a WordPiece tokenizer drops entirely), EOS spans
  ``(0, covered)``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

IGNORE_INDEX = -100

FLAGS = {
    "no_chat_template": "messages rendered by plain concatenation (the tokenizer has no chat template)",
    "no_eos": "the tokenizer has no EOS token; nothing was appended",
    "truncated": "completion cut at max_length; no EOS appended",
    "prompt_truncated": "the prompt alone exceeds max_length; completion dropped",
    "boundary_merge": "a token straddled the prompt/completion boundary; completion tokenized on its own",
}

Prompt = str | Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class Rendered:
    """One example rendered and tokenized for one tokenizer."""

    input_ids: list[int]
    """Prompt ids followed by completion ids (EOS last unless truncated)."""
    labels: list[int]
    """Same length as ``input_ids``: ``-100`` on the prompt, the token id on each completion token (unshifted)."""
    completion_start: int
    """Index in ``input_ids`` of the first completion token (== number of prompt tokens)."""
    spans: list[tuple[int, int]]
    """Character span ``(start, end)`` in the completion text of every completion token, EOS included."""
    covered: int
    """Number of completion characters the spans cover (``len(completion)`` unless truncated)."""
    prompt_text: str
    """The rendered prompt string (chat template output or the plain prompt)."""
    completion: str
    """The shared completion text."""
    flags: frozenset[str] = field(default_factory=frozenset)
    """Subset of :data:`FLAGS` keys describing fallbacks taken for this example."""

    @property
    def num_completion_tokens(self) -> int:
        return len(self.input_ids) - self.completion_start

    @property
    def has_eos(self) -> bool:
        return "no_eos" not in self.flags and not ({"truncated", "prompt_truncated"} & self.flags)


def render_prompt(tokenizer: Any, prompt: Prompt) -> tuple[str, bool]:
    """Render ``prompt`` to text with ``tokenizer``'s own chat template.

    Returns ``(text, used_template)``. A string prompt is returned verbatim (``used_template=True``: nothing to
    render). Messages with no template fall back to plain concatenation (``used_template=False``).
    """
    if isinstance(prompt, str):
        return prompt, True
    messages = list(prompt)
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "content" not in m or "role" not in m:
            raise ValueError(
                f"prompt[{i}] must be a chat message dict with 'role' and 'content'; got {m!r}. "
                "Pass messages like [{'role': 'user', 'content': '...'}] or a plain prompt string."
            )
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return str(text), True
    return "".join(f"{m['content']}\n" for m in messages), False


def _prefix_specials(tokenizer: Any) -> list[int]:
    """Ids the tokenizer's post-processor puts BEFORE a text (BOS, [CLS]); cached on the tokenizer object."""
    cached = getattr(tokenizer, "_crossdistill_prefix_specials", None)
    if cached is not None:
        return cached
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    prefix: list[int] = []
    if plain and plain[0] in full:
        prefix = list(full[: full.index(plain[0])])
    try:
        tokenizer._crossdistill_prefix_specials = prefix
    except AttributeError:  # objects with __slots__: just recompute next time
        pass
    return prefix


def add_prefix_specials(tokenizer: Any, ids: Sequence[int]) -> tuple[list[int], int]:
    """``(ids, n_added)``: the tokenizer's prefix specials put in front of ``ids`` unless ``ids`` already start with
    them (a chat template that writes ``{{ bos_token }}`` must not get a second BOS).

    This is the one rule for prompt prefixes: :func:`render` (training, scoring) and generation both use it, so a
    model generates from exactly the prompt ids it was trained and scored on.
    """
    ids = list(ids)
    prefix = _prefix_specials(tokenizer)
    if prefix and ids[: len(prefix)] != prefix:
        return prefix + ids, len(prefix)
    return ids, 0


def prompt_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """Token ids of ``prompt`` exactly as :func:`render` puts them before a completion (chat template, then the
    prefix specials), without any ``max_length`` truncation."""
    text, _ = render_prompt(tokenizer, prompt)
    ids = _encode(tokenizer, text)[0] if text else []
    return add_prefix_specials(tokenizer, ids)[0]


def partition_spans(raw: Sequence[tuple[int, int]], length: int) -> list[tuple[int, int]]:
    """Turn raw (possibly overlapping, gapped) offsets into spans partitioning ``[0, length)`` (Span rule above).

    Args:
        raw: ``[(start, end)] * n`` offsets relative to the text, in token order.
        length: the text length the last span must reach.

    Returns:
        ``n`` spans ``(s_i, e_i)`` with ``s_0 = 0``, ``s_i = e_{i-1}``, ``e_i`` non-decreasing, ``e_{n-1} = length``.
    """
    n = len(raw)
    spans: list[tuple[int, int]] = []
    prev = 0
    for i, (_, end) in enumerate(raw):
        e = min(end, raw[i + 1][0]) if i + 1 < n else length
        e = min(max(e, prev), length)
        spans.append((prev, e))
        prev = e
    return spans


# Characters every tokenizer must account for (letters, numbers, punctuation, symbols). Whitespace, control/format
# characters and combining marks may legitimately vanish in a normalizer (WordPiece drops them).
_MUST_KEEP = ("L", "N", "P", "S")

# Multilingual probe for :func:`lost_characters`; a correctly loaded tokenizer covers all of it (as pieces, bytes or
# an unknown token with offsets).
PROBE_TEXT = "Hello, world 42! Ærøskøbing café 日本語 中文 한국어 ∑√π≈ 🙂🚀 <tag> a_b-c."


def reloads_identically(tokenizer: Any, directory: Any, text: str = PROBE_TEXT) -> bool:
    """Whether the tokenizer ``AutoTokenizer`` loads back from ``directory`` tokenizes ``text`` like ``tokenizer``.

    Why: Transformers 5 picks the tokenizer class from the model type in ``config.json`` and may rebuild another
    pipeline than ``tokenizer.json`` describes, so a tokenizer saved beside a model can come back different.
    """
    from transformers import AutoTokenizer

    back = AutoTokenizer.from_pretrained(directory)
    return back(text, add_special_tokens=False).input_ids == tokenizer(text, add_special_tokens=False).input_ids


def lost_characters(text: str, offsets: Sequence[tuple[int, int]]) -> list[str]:
    """Characters of ``text`` (letters, numbers, punctuation, symbols) that no token's raw offset span covers, i.e.
    the tokenizer silently dropped them; distinct, in order of appearance. An unknown-token piece with offsets
    counts as covering its text."""
    covered = bytearray(len(text))
    for start, end in offsets:
        start, end = max(start, 0), min(end, len(text))
        if end > start:
            covered[start:end] = b"\x01" * (end - start)
    lost: dict[str, None] = {}
    for ch, ok in zip(text, covered):
        if not ok and unicodedata.category(ch)[0] in _MUST_KEEP:
            lost[ch] = None
    return list(lost)


def _encode(tokenizer: Any, text: str) -> tuple[list[int], list[tuple[int, int]]]:
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]


def _eos_id(tokenizer: Any, eos_token: str | None) -> int | None:
    if eos_token is None:
        return tokenizer.eos_token_id
    eid = tokenizer.convert_tokens_to_ids(eos_token)
    if eid is None or eid == tokenizer.unk_token_id:
        raise ValueError(
            f"eos_token={eos_token!r} is not a token of this tokenizer; pass one of its tokens "
            f"(its own EOS is {tokenizer.eos_token!r}) or None"
        )
    return eid


def render(
    tokenizer: Any,
    prompt: Prompt,
    completion: str,
    *,
    max_length: int | None = None,
    eos_token: str | None = None,
) -> Rendered:
    """Render and tokenize one example for one (fast) tokenizer. See the module docstring for every rule.

    Args:
        tokenizer: a transformers fast tokenizer (offsets are required).
        prompt: chat messages (rendered with the tokenizer's template) or a plain prompt string.
        completion: the shared completion text.
        max_length: maximum total number of tokens, or None for no limit.
        eos_token: the token appended after the completion; default the tokenizer's EOS token.
    """
    if not isinstance(completion, str):
        raise TypeError(f"completion must be a str; got {type(completion).__name__}")
    if max_length is not None and max_length < 1:
        raise ValueError(f"max_length must be a positive int or None; got {max_length}")
    if not getattr(tokenizer, "is_fast", True):
        raise ValueError(f"{type(tokenizer).__name__} is a slow tokenizer; character offsets need a fast tokenizer")
    flags: set[str] = set()
    prompt_text, used_template = render_prompt(tokenizer, prompt)
    if not used_template:
        flags.add("no_chat_template")

    p_ids, _ = _encode(tokenizer, prompt_text) if prompt_text else ([], [])
    p_ids, n_prefix = add_prefix_specials(tokenizer, p_ids)

    # Joint tokenization keeps SentencePiece from adding a dummy prefix to the completion.
    c_ids: list[int] = []
    c_raw: list[tuple[int, int]] = []
    if completion:
        j_ids, j_off = _encode(tokenizer, prompt_text + completion)
        n_prompt = len(p_ids) - n_prefix
        cut = len(prompt_text)
        joint_ok = j_ids[:n_prompt] == p_ids[n_prefix:] and all(o[1] <= cut for o in j_off[:n_prompt]) and all(
            o[0] >= cut or o[1] == o[0] for o in j_off[n_prompt:]
        )
        if joint_ok:
            c_ids = j_ids[n_prompt:]
            c_raw = [(max(s - cut, 0), max(e - cut, 0)) for s, e in j_off[n_prompt:]]
        else:
            flags.add("boundary_merge")
            c_ids, c_raw = _encode(tokenizer, completion)

    eos = _eos_id(tokenizer, eos_token)
    if eos is None:
        flags.add("no_eos")

    # Partition over the WHOLE completion first, so a truncated last token ends where the next one would start.
    spans = partition_spans(c_raw, len(completion))
    covered = len(completion)
    if max_length is not None and len(p_ids) + len(c_ids) + (eos is not None) > max_length:
        if len(p_ids) >= max_length:
            flags.add("prompt_truncated")
            p_ids, c_ids, spans = p_ids[:max_length], [], []
        else:
            flags.add("truncated")
            keep = max_length - len(p_ids)
            c_ids, spans = c_ids[:keep], spans[:keep]
        covered = spans[-1][1] if spans else 0
    if eos is not None and not ({"truncated", "prompt_truncated"} & flags):
        c_ids = c_ids + [eos]
        spans = spans + ([(covered, covered)] if spans else [(0, covered)])
    input_ids = p_ids + c_ids
    labels = [IGNORE_INDEX] * len(p_ids) + c_ids
    return Rendered(
        input_ids=input_ids,
        labels=labels,
        completion_start=len(p_ids),
        spans=spans,
        covered=covered,
        prompt_text=prompt_text,
        completion=completion,
        flags=frozenset(flags),
    )


def render_batch(
    tokenizer: Any,
    prompts: Sequence[Prompt],
    completions: Sequence[str],
    *,
    max_length: int | None = None,
    eos_token: str | None = None,
) -> list[Rendered]:
    """:func:`render` over a list of examples (same arguments, one result per example)."""
    if len(prompts) != len(completions):
        raise ValueError(f"prompts and completions must have the same length; got {len(prompts)} and "
                         f"{len(completions)}")
    return [render(tokenizer, p, c, max_length=max_length, eos_token=eos_token) for p, c in zip(prompts, completions)]


def collate_rendered(items: Sequence[Rendered], pad_id: int, pad_to: int | None = None) -> dict[str, Any]:
    """Right-pad a list of :class:`Rendered` into tensors.

    Returns a dict of torch tensors:
        ``input_ids [B, T]`` (``pad_id``), ``attention_mask [B, T]``, ``labels [B, T]`` (``-100`` on padding),
        ``completion_start [B]``, ``num_completion [B]`` (completion tokens incl. EOS),
        ``spans [B, N, 2]`` (``-1`` beyond ``num_completion``), ``N = max num_completion``.
    """
    import torch

    if not items:
        raise ValueError("collate_rendered needs at least one item")
    if pad_id is None:
        raise ValueError("pad_id is None: the tokenizer has no pad token; pass pad_id=tokenizer.eos_token_id")
    T = max(len(r.input_ids) for r in items)
    if pad_to is not None:
        T = max(T, pad_to)
    N = max(max(len(r.spans) for r in items), 1)
    B = len(items)
    ids = torch.full((B, T), pad_id, dtype=torch.long)
    labels = torch.full((B, T), IGNORE_INDEX, dtype=torch.long)
    attn = torch.zeros((B, T), dtype=torch.long)
    spans = torch.full((B, N, 2), -1, dtype=torch.long)
    for b, r in enumerate(items):
        n = len(r.input_ids)
        ids[b, :n] = torch.tensor(r.input_ids, dtype=torch.long)
        labels[b, :n] = torch.tensor(r.labels, dtype=torch.long)
        attn[b, :n] = 1
        if r.spans:
            spans[b, : len(r.spans)] = torch.tensor(r.spans, dtype=torch.long)
    return {
        "input_ids": ids,
        "attention_mask": attn,
        "labels": labels,
        "completion_start": torch.tensor([r.completion_start for r in items], dtype=torch.long),
        "num_completion": torch.tensor([len(r.spans) for r in items], dtype=torch.long),
        "spans": spans,
    }
