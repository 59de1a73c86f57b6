"""The position contract (docs/design.md, contract 1), owned by exactly one function.

Logits at position j predict token j+1. Every loss in crossdistill receives *targets* that are already shifted, so
``logits[:, j]`` is scored against ``targets[:, j]`` with no further slicing anywhere else.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


def shift_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift labels so that row j of the logits pairs with token j+1.

    Args:
        labels: ``[B, T]`` token ids, ``ignore_index`` on prompt and padding.
        ignore_index: the id that marks non-target positions.

    Returns:
        ``(targets, mask)``: ``targets[:, j] = labels[:, j + 1]`` (last column ``ignore_index``), shape ``[B, T]``,
        and ``mask = targets != ignore_index`` (bool ``[B, T]``), the target positions.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be [batch, length], got shape {tuple(labels.shape)}")
    targets = torch.full_like(labels, ignore_index)
    targets[:, :-1] = labels[:, 1:]
    return targets, targets != ignore_index


def count_targets(labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> int:
    """Number of target positions in an *unshifted* ``[B, T]`` label tensor (what the global count sums)."""
    return int((labels[:, 1:] != ignore_index).sum())
