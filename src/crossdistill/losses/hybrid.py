"""GOLD's hybrid cross-tokenizer loss (TRL ``_compute_hybrid_uld_loss``; docs/alignment.md), on aligned groups.

For every aligned group (:mod:`crossdistill.align.spans`), student and teacher rows are merged by the chain rule
(:mod:`crossdistill.align.merge`), then the vocabulary is split by the teacher -> student map
(:mod:`crossdistill.align.vocab_map`):

* **matched columns** (teacher tokens with a student token of the same text): generalized JSD(β)
  (:func:`crossdistill.losses.divergences.generalized_jsd`, TRL convention, β = teacher weight) between the student's
  and the teacher's merged log-probabilities restricted to those columns, NOT renormalized (as GOLD);
* **unmatched columns** (the rest of each vocabulary): ULD sorted-L1 (full sort, or top-k with the bound of
  :mod:`crossdistill.losses.uld`).

Weights: both ``matched_weight`` and ``unmatched_weight`` fixed, or neither (adaptive, GOLD's default):
w_m = |matched| / |V_t|, w_u = 1 − w_m. With identical tokenizers every column is matched, w_m = 1 and the loss is
exactly the generalized JSD over the whole vocabulary.

Returns SUMS over groups (divide by the global target count outside; docs/design.md, contract 2) and no
cross-entropy: the objective adds the student CE with weight 1 by default (docs/design.md, contract 10; GOLD's own
default of 0 can wreck a student).

A sparse teacher signal is expanded per chunk to a dense row: kept ids at their log-probs, the other ids at log 0
(``renormalize``, kept entries renormalized) or at an even share of the tail mass (``tail_bucket``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crossdistill.align.merge import MergeStrategy, check_strategy, free_flags
from crossdistill.align.spans import BatchAlignment
from crossdistill.align.vocab_map import VocabMap
from crossdistill.losses.divergences import generalized_jsd
from crossdistill.losses.signal import LOG_ZERO, TeacherSignal
from crossdistill.losses.uld import (
    _prepare_dense,
    _sparse_group_scale,
    _sparse_parts,
    row_chunk,
    sorted_l1_full,
    sorted_l1_topk,
)


@dataclass
class HybridOutput:
    """Result of :func:`gold_hybrid`."""

    loss: torch.Tensor
    """Scalar Σ_groups (w_m · matched_g + w_u · unmatched_g)."""
    matched: torch.Tensor
    """Scalar Σ_groups generalized JSD on matched columns (unweighted)."""
    unmatched: torch.Tensor
    """Scalar Σ_groups sorted-L1 on unmatched columns (unweighted)."""
    matched_weight: float
    unmatched_weight: float
    num_groups: int
    bound: torch.Tensor | None = None
    """``[G]`` top-k error bound of the unmatched sorted-L1 (None with a full sort)."""


def _map_tensor(vocab_map: VocabMap | torch.Tensor | np.ndarray, v_t: int, v_s: int, device) -> torch.Tensor:
    m = vocab_map.teacher_to_student if isinstance(vocab_map, VocabMap) else vocab_map
    m = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m, dtype=torch.long, device=device)
    if m.numel() > v_t:
        raise ValueError(f"vocab_map has {m.numel()} teacher entries but the teacher logits have {v_t} columns; "
                         "build the map from the teacher's tokenizer")
    if m.numel() < v_t:  # padded teacher head: columns past the tokenizer's vocabulary are unmatched
        m = torch.cat([m, m.new_full((v_t - m.numel(),), -1)])
    if int(m.max()) >= v_s:
        raise ValueError(f"vocab_map points at student id {int(m.max())} >= student vocabulary {v_s}")
    return m


def gold_hybrid(
    student_logits: torch.Tensor,
    teacher: torch.Tensor | TeacherSignal,
    alignment: BatchAlignment,
    vocab_map: VocabMap | torch.Tensor | np.ndarray,
    student_targets: torch.Tensor | None = None,
    teacher_targets: torch.Tensor | None = None,
    *,
    beta: float = 0.5,
    matched_weight: float | None = None,
    unmatched_weight: float | None = None,
    merge: MergeStrategy = "observed",
    top_k: int | None = None,
    student_temperature: float = 1.0,
    teacher_temperature: float = 1.0,
    teacher_vocab_size: int | None = None,
    chunk_groups: int = 256,
    unmatched: bool = True,
) -> HybridOutput:
    """GOLD hybrid loss summed over aligned groups (module docstring).

    Args:
        student_logits: ``[N_s, V_s]`` student logits at its target rows, with grad.
        teacher: ``[N_t, V_t]`` teacher logits at its target rows, or a sparse TeacherSignal over those rows.
        alignment: groups of rows.
        vocab_map: teacher -> student map (``[V_t]``, -1 = unmatched).
        student_targets, teacher_targets: ``[N_s]`` / ``[N_t]`` actual tokens (needed for multi-token groups).
        beta: JSD teacher weight (0 = forward KL, 1 = reverse KL, TRL convention).
        matched_weight, unmatched_weight: fixed weights (give both) or None/None for adaptive weights.
        merge: ``"observed"`` or ``"bayesian"``.
        top_k: sort only the top k of the unmatched columns (None = full sort).
        teacher_vocab_size: ``V_t`` for a sparse teacher (default: the map's length).
        chunk_groups: groups per chunk.
        unmatched: False leaves the unmatched sorted-L1 part out of ``loss`` (``w_u`` = 0; the matched weight is
            unchanged and ``unmatched`` is still reported). Used on the student's own samples, where a comparison
            without token identity only makes the student more confident in what it sampled.
    """
    check_strategy(merge)
    if (matched_weight is None) != (unmatched_weight is None):
        raise ValueError("set both matched_weight and unmatched_weight, or neither (adaptive weights); got "
                         f"matched_weight={matched_weight}, unmatched_weight={unmatched_weight}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta={beta} must be in [0, 1]")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be a positive int or None")
    sparse = isinstance(teacher, TeacherSignal) and teacher.is_sparse
    if isinstance(teacher, TeacherSignal) and not sparse:
        teacher = teacher.logits
    v_s = student_logits.shape[-1]
    if sparse:
        v_t = teacher_vocab_size or (vocab_map.teacher_to_student.size if isinstance(vocab_map, VocabMap)
                                     else len(vocab_map))
    else:
        v_t = teacher.shape[-1]
    device = student_logits.device
    m = _map_tensor(vocab_map, v_t, v_s, device)
    t_matched = torch.nonzero(m >= 0).squeeze(-1)
    s_matched = m[t_matched]
    t_unmatched = torch.nonzero(m < 0).squeeze(-1)
    s_is_matched = torch.zeros(v_s, dtype=torch.bool, device=device)
    s_is_matched[s_matched] = True
    s_unmatched = torch.nonzero(~s_is_matched).squeeze(-1)
    if matched_weight is None:
        w_m = t_matched.numel() / v_t
        w_u = 1.0 - w_m
    else:
        w_m, w_u = float(matched_weight), float(unmatched_weight)
    if not unmatched:
        w_u = 0.0

    G = alignment.num_groups
    zero = student_logits.sum() * 0.0
    if G == 0:
        return HybridOutput(zero, zero, zero, w_m, w_u, 0)

    student = _prepare_dense(student_logits, student_targets, alignment.student_rows, alignment.student_groups, G,
                             merge, student_temperature)
    with torch.no_grad():
        if sparse:
            ids, kept, tail = _sparse_parts(teacher, teacher_temperature, v_t)
            t_scale = _sparse_group_scale(teacher, teacher_temperature, ids, kept, tail, alignment, teacher_targets,
                                          merge)
            t_free = alignment.teacher_rows[free_flags(alignment.teacher_groups, merge)]
            n_rest = max(v_t - kept.shape[-1], 1)
            fill = (tail - float(np.log(n_rest))).clamp(min=LOG_ZERO)
            teacher_side = None
        else:
            teacher_side = _prepare_dense(teacher.detach(), teacher_targets, alignment.teacher_rows,
                                          alignment.teacher_groups, G, merge, teacher_temperature)

    jsd_parts, l1_parts, bounds = [], [], []
    chunk = row_chunk(max(1, chunk_groups), max(v_s, v_t))  # per-group terms: chunking bounds memory only
    for start in range(0, G, chunk):
        idx = slice(start, min(G, start + chunk))
        zs, cs = student.dense_rows(idx)
        ls = zs - cs[:, None]  # [c, V_s] merged student log-probs
        with torch.no_grad():
            if teacher_side is not None:
                zt, ct = teacher_side.dense_rows(idx)
                lt = zt - ct[:, None]
            else:
                rows = t_free[idx]
                lt = fill[rows, None].expand(-1, v_t).clone()
                lt.scatter_(-1, ids[rows], kept[rows])
                lt = lt + t_scale[idx, None]
            lt = lt.to(ls.dtype)
        jsd_parts.append(generalized_jsd(ls.index_select(-1, s_matched), lt.index_select(-1, t_matched), beta=beta)
                         if t_matched.numel() else ls.new_zeros(ls.shape[0]))
        if s_unmatched.numel() == 0 and t_unmatched.numel() == 0:
            l1_parts.append(ls.new_zeros(ls.shape[0]))
            continue
        ps_u = ls.index_select(-1, s_unmatched).exp()
        with torch.no_grad():
            pt_u = lt.index_select(-1, t_unmatched).exp_()
            del lt
        if top_k is None or top_k >= max(ps_u.shape[-1], pt_u.shape[-1]):
            l1_parts.append(sorted_l1_full(ps_u, pt_u))  # the teacher's side sorts values only (no grad)
            continue
        ks, kt = min(top_k, ps_u.shape[-1]), min(top_k, pt_u.shape[-1])
        s_top = ps_u.topk(ks, dim=-1).values
        t_top = pt_u.topk(kt, dim=-1).values
        # Unequal widths (a side with fewer than k unmatched columns): zero-pad the narrower top list.
        k = max(ks, kt)
        s_top = torch.nn.functional.pad(s_top, (0, k - ks))
        t_top = torch.nn.functional.pad(t_top, (0, k - kt))
        v, b = sorted_l1_topk(s_top, ps_u.sum(-1) - s_top.sum(-1), t_top, pt_u.sum(-1) - t_top.sum(-1))
        l1_parts.append(v)
        bounds.append(b)
    jsd = torch.cat(jsd_parts)
    l1 = torch.cat(l1_parts)
    loss = w_m * jsd.sum() + w_u * l1.sum()
    return HybridOutput(loss, jsd.sum(), l1.sum(), w_m, w_u, G, torch.cat(bounds) if bounds else None)


__all__ = ["HybridOutput", "gold_hybrid"]
