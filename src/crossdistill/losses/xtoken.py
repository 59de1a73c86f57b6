"""X-Token: distillation across vocabularies through a sparse student -> teacher projection W
(:mod:`crossdistill.align.projection`; docs/cross_tokenizer_methods.md, "X-Token").

**P-KL** (projection KL), per aligned group g (:mod:`crossdistill.align.spans`):

    q_g(t) = Σ_s p_S,g(s) · W[s, t]                    the student's distribution pushed into the teacher vocabulary
    P-KL_g = KL( p̃_T,g ‖ q̃_g ) = Σ_{t ∈ C} p̃_T,g(t) · (log p̃_T,g(t) − log q̃_g(t))

with both distributions at the distillation temperature T, taken at the group's FIRST row on each side (the rows
that predict the group's first token: W puts a student token's mass on the first teacher piece of its spelling,
and a chain-rule merge would only rescale a row by a per-group constant, which renormalization removes). ``C`` is
the set of teacher tokens W covers (some student token projects onto them); the teacher is renormalized over ``C``
(``p̃_T``) and the student's image over all of it (``q̃ = q / Σ q``: mass on student tokens W cannot place is
dropped). Teacher mass outside ``C`` is what the coverage audit (``crossdistill align-report``) reports; the
student has no way to put mass there, so it is left out instead of adding a constant ``∞``. With identical
tokenizers W = I, every group is one token on each side, C is the whole vocabulary and P-KL is exactly the forward
KL of :mod:`crossdistill.losses.divergences`.

A sparse teacher (:class:`~crossdistill.losses.signal.TeacherSignal`, top-k) keeps the project's two policies
(docs/design.md, contract 4): ``renormalize`` — the kept ids inside C renormalized, against the student's full image
q̃; ``tail_bucket`` — (k + 1)-way distributions, the kept ids inside C plus one bucket (the teacher's tail, taken to
lie inside C; the student's image outside the kept ids), kept ids outside C dropped as in the dense case.

**H-KL** (hybrid KL) is GOLD's hybrid loss (:mod:`crossdistill.losses.hybrid`) with W's relaxed matching
(:meth:`~crossdistill.align.projection.Projection.relaxed_map`: a student token matches its top teacher entry when
that weight is at least 0.6) instead of exact strings, forward KL (β = 0) on the matched columns, sorted L1 on the
rest, both weighted 1 (the reference implementation's sum).

Both return SUMS over groups (divide by the global target count outside; docs/design.md, contract 2) and no
cross-entropy. The student side of P-KL runs in row chunks from the hidden states (:mod:`crossdistill.losses.rowwise`):
no ``[N, V_s]`` logits, no dense ``[V_s, V_t]`` W — only ``[chunk, V_t]`` tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from crossdistill.align.merge import MergeStrategy, free_flags
from crossdistill.align.projection import RELAXED_THRESHOLD, Projection
from crossdistill.align.spans import BatchAlignment
from crossdistill.losses.hybrid import HybridOutput, gold_hybrid
from crossdistill.losses.rowwise import rowwise_from_hidden
from crossdistill.losses.signal import LOG_ZERO, POLICIES, TeacherSignal


@dataclass
class PKLOutput:
    """Result of :func:`projected_kl`."""

    loss: torch.Tensor
    """Scalar Σ_groups P-KL_g."""
    per_group: torch.Tensor
    """``[G]`` P-KL of every group (detached)."""
    num_groups: int


def _log_image(z: torch.Tensor, wt: torch.Tensor, temperature: float) -> torch.Tensor:
    """``[c, V_s] -> [c, V_t]`` log q̃: the student's tempered distribution pushed through W, renormalized."""
    p = torch.softmax(z / temperature if temperature != 1.0 else z, dim=-1)
    q = torch.sparse.mm(wt, p.T).T  # [c, V_t]
    tiny = torch.finfo(q.dtype).tiny
    return torch.log(q.clamp_min(tiny)) - torch.log(q.sum(-1, keepdim=True).clamp_min(tiny))


def pkl_rows(student_logits: torch.Tensor, teacher: torch.Tensor | TeacherSignal, projection: Projection,
             temperature: float = 1.0, covered: torch.Tensor | None = None) -> torch.Tensor:
    """P-KL of matching rows (module docstring). ``[c, V_s]`` student logits, ``[c, V_t]`` teacher logits (or a
    TeacherSignal of c rows) -> ``[c]``.

    Args:
        student_logits: raw student logits (the temperature is applied here), with grad.
        teacher: raw teacher logits, or a sparse signal (log-probs at temperature 1, tempered here).
        projection: W.
        temperature: distillation temperature T, both sides.
        covered: ``[V_t]`` bool, W's covered teacher tokens (computed from ``projection`` when None).
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    dtype = student_logits.dtype
    device = student_logits.device
    v_t = projection.teacher_size
    if student_logits.shape[-1] != projection.student_size:
        raise ValueError(f"student logits have {student_logits.shape[-1]} columns, the projection "
                         f"{projection.student_size} rows; slice the head to len(student_tokenizer)")
    if covered is None:
        covered = projection.covered_mask(device)
    _, wt = projection.matrices(device, dtype)
    log_q = _log_image(student_logits, wt, temperature)  # [c, V_t]
    if isinstance(teacher, TeacherSignal) and not teacher.is_sparse:
        teacher = teacher.logits
    if isinstance(teacher, torch.Tensor):
        if teacher.shape[-1] < v_t:
            raise ValueError(f"teacher logits have {teacher.shape[-1]} columns, the projection {v_t}")
        lt = torch.log_softmax(teacher[..., :v_t].detach().to(dtype) / temperature, dim=-1)
        if bool(covered.all()):
            return (lt.exp() * (lt - log_q)).sum(-1)
        if not bool(covered.any()):
            return student_logits.sum(-1) * 0.0
        cov = torch.nonzero(covered).squeeze(-1)
        ltc = lt[:, cov]
        ltc = ltc - torch.logsumexp(ltc, dim=-1, keepdim=True)
        return (ltc.exp() * (ltc - log_q[:, cov])).sum(-1)
    if teacher.policy not in POLICIES:
        raise ValueError(f"policy={teacher.policy!r} is not one of {POLICIES}")
    kept, tail = teacher.tempered_sparse(temperature, v_t)
    kept, tail = kept.to(dtype), tail.to(dtype)
    ids = teacher.ids
    in_c = covered[ids]  # [c, k]
    s_kept = log_q.gather(-1, ids)
    if teacher.policy == "renormalize":
        a = kept.masked_fill(~in_c, float("-inf"))
        has = in_c.any(-1)
        a = torch.where(has[:, None], a - torch.logsumexp(a, dim=-1, keepdim=True), torch.full_like(a, LOG_ZERO))
        a = a.clamp(min=LOG_ZERO)
        return torch.where(has, (a.exp() * (a - s_kept.clamp(min=LOG_ZERO))).sum(-1), s_kept.sum(-1) * 0.0)
    # tail_bucket: the kept ids inside C plus one bucket (the teacher's tail; the student's image outside the kept
    # ids), kept teacher ids outside C dropped and the rest renormalized, as in the dense case.
    t_all = torch.cat([kept.masked_fill(~in_c, float("-inf")), tail[:, None]], -1)
    t_tot = torch.logsumexp(t_all, dim=-1, keepdim=True)
    has = t_tot.squeeze(-1) > LOG_ZERO / 2
    t_all = torch.where(has[:, None], t_all - t_tot, torch.full_like(t_all, LOG_ZERO)).clamp(min=LOG_ZERO)
    s_in = s_kept.masked_fill(~in_c, LOG_ZERO)
    inside = torch.zeros_like(log_q, dtype=torch.bool).scatter_(-1, ids, in_c)
    s_out = torch.logsumexp(log_q.masked_fill(inside, LOG_ZERO), dim=-1)  # summed directly: no 1 − Σ cancellation
    s_all = torch.cat([s_in, s_out[:, None]], -1).clamp(min=LOG_ZERO)
    return torch.where(has, (t_all.exp() * (t_all - s_all)).sum(-1), s_kept.sum(-1) * 0.0)


def group_first_rows(alignment: BatchAlignment, strategy: MergeStrategy = "observed") -> tuple[torch.Tensor,
                                                                                             torch.Tensor]:
    """``(student_rows [G], teacher_rows [G])``: the free row of every group (``observed``: its first row)."""
    return (alignment.student_rows[free_flags(alignment.student_groups, strategy)],
            alignment.teacher_rows[free_flags(alignment.teacher_groups, strategy)])


def projected_kl(student_hidden: torch.Tensor, student_weight: torch.Tensor, teacher: torch.Tensor | TeacherSignal,
                 alignment: BatchAlignment, projection: Projection, *, temperature: float = 1.0,
                 student_bias: torch.Tensor | None = None, logit_scale: float = 1.0, vocab_size: int | None = None,
                 chunk_rows: int = 256) -> PKLOutput:
    """P-KL summed over the aligned groups, the student side from hidden states in row chunks.

    Args:
        student_hidden: ``[N_s, H]`` hidden states of the student's TARGET rows (``mask`` order), with grad.
        student_weight: ``[V_pad, H]`` lm_head weight (``student_bias``: optional ``[V_pad]``).
        teacher: ``[N_t, V_t]`` teacher logits of its target rows, or a TeacherSignal over those rows.
        alignment: groups of rows (:class:`~crossdistill.align.spans.BatchAlignment`).
        projection: W (``vocab_size`` must equal its student size).
        temperature: distillation temperature.
        chunk_rows: groups per chunk (bounds the ``[chunk, V]`` tiles).
    """
    G = alignment.num_groups
    if G == 0:
        zero = student_hidden.sum() * 0.0
        return PKLOutput(zero, zero.new_zeros(0), 0)
    s_rows, t_rows = group_first_rows(alignment)
    covered = projection.covered_mask(student_hidden.device)
    t_sel = teacher.select(t_rows) if isinstance(teacher, TeacherSignal) else None

    def fn(z: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        t = t_sel.select(torch.arange(lo, hi, device=t_rows.device)) if t_sel is not None else teacher[t_rows[lo:hi]]
        return pkl_rows(z, t, projection, temperature, covered)

    per = rowwise_from_hidden(student_hidden[s_rows], student_weight, fn, bias=student_bias, logit_scale=logit_scale,
                              vocab_size=vocab_size, chunk_rows=chunk_rows)
    return PKLOutput(per.sum(), per.detach(), G)


def hybrid_kl(student_logits: torch.Tensor, teacher: torch.Tensor | TeacherSignal, alignment: BatchAlignment,
              projection: Projection, student_targets: torch.Tensor | None = None,
              teacher_targets: torch.Tensor | None = None, *, threshold: float = RELAXED_THRESHOLD,
              beta: float = 0.0, matched_weight: float = 1.0, unmatched_weight: float = 1.0,
              top_k: int | None = 256, merge: MergeStrategy = "observed", temperature: float = 1.0,
              teacher_vocab_size: int | None = None, chunk_groups: int = 256,
              relaxed_map: np.ndarray | None = None) -> HybridOutput:
    """H-KL: :func:`crossdistill.losses.hybrid.gold_hybrid` on W's relaxed matching (module docstring).

    ``relaxed_map``: ``projection.relaxed_map(threshold)`` if already computed. The other arguments are
    :func:`~crossdistill.losses.hybrid.gold_hybrid`'s.
    """
    m = projection.relaxed_map(threshold) if relaxed_map is None else relaxed_map
    return gold_hybrid(student_logits, teacher, alignment, m, student_targets, teacher_targets, beta=beta,
                       matched_weight=matched_weight, unmatched_weight=unmatched_weight, merge=merge, top_k=top_k,
                       student_temperature=temperature, teacher_temperature=temperature,
                       teacher_vocab_size=teacher_vocab_size or projection.teacher_size, chunk_groups=chunk_groups)


__all__ = ["PKLOutput", "group_first_rows", "hybrid_kl", "pkl_rows", "projected_kl"]
