"""ALM's chunks: runs of aligned groups that cover the same text on both sides, and the token masks they use.

ALM (docs/cross_tokenizer_methods.md, "ALM") compares the likelihood the two models give to the same piece of text.
Its smallest pieces are the groups of :mod:`crossdistill.align.spans` — every boundary the two tokenizations share
(the *unconstrained* chunks; identical tokenizers give one chunk per token). Coarser chunks are unions of
consecutive groups of one example, described by one flag per unit (group or chunk): "a chunk closes after this
unit". :func:`ids_from_closures` turns the flags into chunk ids. The flag is always set on the last unit of an
example, so a chunk never spans two examples.

* :func:`space_closures` (the *space* variant): close where the NEXT tokens on both sides start with a space, after
  a special token on either side, and at the end of the example.
* merging by boundary probability (``merge_by_space_prob``) closes after a chunk when the teacher's probability that
  the next token starts with a boundary byte exceeds a threshold (computed in :mod:`crossdistill.losses.alm`).

:func:`boundary_masks` gives, per vocabulary, the tokens that start with a space (the *space* variant), the tokens
that start with a boundary byte — space, tab, newline — or are special (the debiasing mask), and the special tokens.
WordPiece tokens carry no spaces: a word-start token (no ``##``) counts as starting with a space there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from crossdistill.align.projection import special_ids
from crossdistill.align.spans import BatchAlignment
from crossdistill.align.vocab_map import token_keys, tokenizer_family

BOUNDARY_BYTES = (0x20, 0x09, 0x0A)
"""Bytes that do not occur inside a token of the debiasing mask's tokens: space, tab, newline."""


@dataclass(frozen=True)
class BoundaryMasks:
    """Per-token flags of one vocabulary (``[V]`` bool each)."""

    space: np.ndarray
    """Starts with a space (WordPiece: a word-start token)."""
    boundary: np.ndarray
    """Starts with a space, tab or newline, or is a special token (ALM's debiasing mask)."""
    special: np.ndarray
    """Special tokens."""


def boundary_masks(tokenizer: Any) -> BoundaryMasks:
    """The :class:`BoundaryMasks` of ``tokenizer`` (module docstring)."""
    keys = token_keys(tokenizer)
    n = len(keys)
    specials = special_ids(tokenizer)
    space = np.zeros(n, dtype=bool)
    boundary = np.zeros(n, dtype=bool)
    special = np.zeros(n, dtype=bool)
    special[list(specials)] = True
    if tokenizer_family(tokenizer) == "wordpiece":
        raw = tokenizer.convert_ids_to_tokens(list(range(n)))
        for i, tok in enumerate(raw):
            if tok is not None and i not in specials and not tok.startswith("##"):
                space[i] = True
    for i, k in enumerate(keys):
        if k and not special[i]:
            if k[0] == 0x20:
                space[i] = True
            if k[0] in BOUNDARY_BYTES:
                boundary[i] = True
    boundary |= special | space
    return BoundaryMasks(space, boundary, special)


def ids_from_closures(close: torch.Tensor) -> tuple[torch.Tensor, int]:
    """``[U]`` bool "a chunk closes after this unit" -> ``([U]`` int64 chunk id of each unit, number of chunks``)``.

    >>> ids_from_closures(torch.tensor([False, True, True, False, True]))
    (tensor([0, 0, 1, 2, 2]), 3)
    """
    c = close.long()
    ids = torch.cumsum(c, 0) - c
    n = int(c.sum()) if close.numel() else 0
    if close.numel() and not bool(close[-1]):
        n += 1  # an open run at the end is a chunk too
    return ids, n


def last_of_example(group_example: torch.Tensor) -> torch.Tensor:
    """``[G]`` bool: the last group of each example (groups of an example are contiguous)."""
    out = torch.ones_like(group_example, dtype=torch.bool)
    if group_example.numel() > 1:
        out[:-1] = group_example[1:] != group_example[:-1]
    return out


def space_closures(alignment: BatchAlignment, student_ids: torch.Tensor, teacher_ids: torch.Tensor,
                   student_masks: BoundaryMasks, teacher_masks: BoundaryMasks) -> torch.Tensor:
    """The *space* variant's closing flags over the groups (module docstring).

    Args:
        alignment: the groups.
        student_ids, teacher_ids: ``[N_s]`` / ``[N_t]`` the token each target row predicts (the actual tokens).
        student_masks, teacher_masks: :func:`boundary_masks` of each side's vocabulary.

    Returns:
        ``[G]`` bool.
    """
    G = alignment.num_groups
    dev = alignment.student_rows.device
    if G == 0:
        return torch.zeros(0, dtype=torch.bool, device=dev)
    s_space = torch.as_tensor(student_masks.space, device=dev)
    t_space = torch.as_tensor(teacher_masks.space, device=dev)
    s_special = torch.as_tensor(student_masks.special, device=dev)
    t_special = torch.as_tensor(teacher_masks.special, device=dev)
    s_first, s_last = alignment.first_last("student")
    t_first, t_last = alignment.first_last("teacher")
    close = last_of_example(alignment.group_example)
    nxt = torch.zeros(G, dtype=torch.bool, device=dev)
    nxt[:-1] = s_space[student_ids[s_first[1:]]] & t_space[teacher_ids[t_first[1:]]]
    return close | nxt | s_special[student_ids[s_last]] | t_special[teacher_ids[t_last]]


__all__ = ["BOUNDARY_BYTES", "BoundaryMasks", "boundary_masks", "ids_from_closures", "last_of_example",
           "space_closures"]
