"""Merging a multi-token group into one distribution by the chain rule, in log space (docs/alignment.md §3).

A group covers tokens ``y_i .. y_{i+k}``, each predicted by one target row (row ``r_j`` predicts ``y_j``, the
contract of :func:`crossdistill.positions.shift_targets`). One row keeps its full distribution (the *free* row);
every other row contributes the scalar probability of the token that actually followed:

* ``observed`` (GOLD default): free row = FIRST,  ``log P(v) = log p_{r_i}(v) + Σ_{j>i} log p_{r_j}(y_j)``.
  The later factors are conditioned on the actual first token, not on ``v``: an approximation.
* ``bayesian``: free row = LAST, ``log P(v) = log p_{r_{i+k}}(v) + Σ_{j<i+k} log p_{r_j}(y_j)``: the exact
  probability of the group's string with its last token replaced by ``v`` (the chain rule).

Each scalar probability is clamped at ``1e-8`` (GOLD's floor) before the log. Single-token groups pass through.
The merged vector is deliberately unnormalized (it sums to the product of the scalars): sorted-L1 and the hybrid's
matched JSD compare it as is. Worked example: (0.6, 0.3, 0.1) with a continuation of 0.9 gives (0.54, 0.27, 0.09).

Because the merge adds ONE constant per group to the free row's log-probs, the losses never materialize merged
``[G, V]`` tensors: they take the free rows' logits plus a per-group log scale (:func:`group_log_scale`), and the top
entries of a merged row are the top entries of its free row.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

MergeStrategy = Literal["observed", "bayesian"]
STRATEGIES = ("observed", "bayesian")
PROB_FLOOR = 1e-8
LOG_FLOOR = math.log(PROB_FLOOR)


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise ValueError(f"merge strategy {strategy!r} is not one of {STRATEGIES}; 'observed' keeps the first row's "
                         "distribution (GOLD default), 'bayesian' the last row's (exact chain rule)")
    return strategy


def free_flags(groups: torch.Tensor, strategy: MergeStrategy) -> torch.Tensor:
    """``[n] bool``: which entries of a side's (row, group) list hold the free row of their group.

    Args:
        groups: ``[n]`` int64 group id per token, non-decreasing (tokens of a group contiguous, in order).
    """
    check_strategy(strategy)
    n = groups.numel()
    flag = torch.ones(n, dtype=torch.bool, device=groups.device)
    if n > 1:
        change = groups[1:] != groups[:-1]
        if strategy == "observed":
            flag[1:] = change
        else:
            flag[:-1] = change
    return flag


def group_log_scale(target_logp: torch.Tensor, groups: torch.Tensor, num_groups: int,
                    strategy: MergeStrategy) -> torch.Tensor:
    """Per-group log of the product of the non-free rows' actual-token probabilities.

    Args:
        target_logp: ``[n]`` log p_{r_j}(y_j) of every token of the side, in the layout of ``groups``.
        groups: ``[n]`` int64 group ids, non-decreasing.
        num_groups: G.
        strategy: ``"observed"`` or ``"bayesian"``.

    Returns:
        ``[G]`` log scale (0 for single-token groups), differentiable w.r.t. ``target_logp``.
    """
    free = free_flags(groups, strategy)
    contrib = torch.where(free, torch.zeros_like(target_logp), target_logp.clamp(min=LOG_FLOOR))
    out = torch.zeros(num_groups, dtype=target_logp.dtype, device=target_logp.device)
    return out.index_add(0, groups, contrib)


def free_rows(rows: torch.Tensor, groups: torch.Tensor, strategy: MergeStrategy) -> torch.Tensor:
    """``[G]`` the free row of every group (rows of a side listed with non-decreasing ``groups``)."""
    return rows[free_flags(groups, strategy)]


def merge_logprobs(logp: torch.Tensor, targets: torch.Tensor, rows: torch.Tensor, groups: torch.Tensor,
                   num_groups: int, strategy: MergeStrategy = "observed") -> torch.Tensor:
    """Merged (unnormalized) log-probabilities of every group, materialized. Reference path and small inputs.

    Args:
        logp: ``[N, V]`` log-probabilities of the side's target rows.
        targets: ``[N]`` int64 actual token of each target row.
        rows: ``[n]`` int64 rows of the aligned tokens (grouped, in order); ``groups``: ``[n]`` their group ids.
        num_groups: G.

    Returns:
        ``[G, V]`` merged log-probabilities.
    """
    tl = logp.gather(-1, targets[rows, None]).squeeze(-1)
    scale = group_log_scale(tl, groups, num_groups, strategy)
    return logp[free_rows(rows, groups, strategy)] + scale[:, None]


def merge_probs(probs: torch.Tensor, actual: torch.Tensor, strategy: MergeStrategy = "observed") -> torch.Tensor:
    """Merge ONE group from its rows' distributions, in probability space (the textbook form; for tests and docs).

    Args:
        probs: ``[k, V]`` distribution of each row of the group, in order.
        actual: ``[k]`` int64 token that actually followed at each row.

    Returns:
        ``[V]`` merged vector, e.g. ``merge_probs([[.6,.3,.1],[.05,.9,.05]], [0, 1])`` -> ``(0.54, 0.27, 0.09)``.
    """
    check_strategy(strategy)
    k = probs.shape[0]
    scal = probs.gather(-1, actual[:, None]).squeeze(-1).clamp(min=PROB_FLOOR)
    if strategy == "observed":
        return probs[0] * scal[1:].prod() if k > 1 else probs[0]
    return probs[-1] * scal[:-1].prod() if k > 1 else probs[-1]
