"""Training-objective adapters for the cross-tokenizer losses: ``uld`` and ``gold_hybrid``.

Registered in :mod:`crossdistill.train.objectives` (imported by ``load_builtin_objectives``). Both return term SUMS
and the student's target count; the trainer divides by the global count (contract 2). Both include the student's
cross-entropy on the completion with weight 1 by default (contract 10: sorted-probability objectives carry no token
identity; without CE they can wreck a student — GOLD's own default of CE weight 0 does).

What the trainer must put in the :class:`~crossdistill.train.objectives.StepContext` (cross-tokenizer pairs):

* ``teacher_logits [B, T_t, V_t]`` over the teacher's own rendering (or ``teacher_signal``: a TeacherSignal over the
  teacher's target rows in ``teacher_mask.nonzero()`` order), ``teacher_targets`` and ``teacher_mask`` from
  ``shift_targets`` of the teacher labels;
* ``alignment``: a :class:`~crossdistill.align.spans.BatchAlignment` — or ``None``, and then ``batch`` and
  ``teacher_batch`` must be :func:`crossdistill.data.render.collate_rendered` dicts (``spans``, ``completion_start``,
  ``num_completion``) and it is built here;
* ``gold_hybrid`` also needs a vocabulary map: ``extras["vocab_map"]`` or both tokenizers (built once and cached on
  disk, see :mod:`crossdistill.align.vocab_map`).

Temperatures: both sides use ``ctx.temperature`` unless ``student_temperature`` / ``teacher_temperature`` are set.
Objectives never apply T²: the trainer does, on the soft terms declared here (``uld``; ``gold`` and its two logged
parts), when ``loss.t2_scale`` (a no-op at ULD's default T = 1; the official ULD code has no T²).
"""

from __future__ import annotations

from typing import Any

import torch

from crossdistill.align.spans import BatchAlignment
from crossdistill.losses.hybrid import gold_hybrid
from crossdistill.losses.uld import uld_from_alignment, uld_positional
from crossdistill.train.objectives import ObjectiveOutput, StepContext, ce_sum, register_objective


def batch_alignment(ctx: StepContext) -> BatchAlignment:
    """The step's :class:`BatchAlignment` (given, or built from the two collated batches)."""
    if isinstance(ctx.alignment, BatchAlignment):
        return ctx.alignment
    if ctx.alignment is not None:
        raise TypeError(f"ctx.alignment must be a crossdistill.align.spans.BatchAlignment; got "
                        f"{type(ctx.alignment).__name__}")
    if not ctx.batch or not ctx.teacher_batch or "spans" not in ctx.batch or "spans" not in ctx.teacher_batch:
        raise ValueError("cross-tokenizer objectives need ctx.alignment, or ctx.batch and ctx.teacher_batch from "
                         "crossdistill.data.render.collate_rendered (keys spans, completion_start, num_completion)")
    al = BatchAlignment.from_collated(ctx.batch, ctx.teacher_batch, ctx.mask, ctx.teacher_mask).to(ctx.mask.device)
    ctx.alignment = al
    return al


def _teacher(ctx: StepContext):
    if ctx.teacher_logits is not None:
        if ctx.teacher_mask is None:
            raise ValueError("ctx.teacher_mask is required with ctx.teacher_logits")
        z = ctx.teacher_logits[ctx.teacher_mask]
        return z[..., : ctx.teacher_vocab_size] if ctx.teacher_vocab_size else z
    if ctx.teacher_signal is not None:
        return ctx.teacher_signal
    raise ValueError("cross-tokenizer objectives need ctx.teacher_logits (or a teacher_signal over the teacher's "
                     "target rows)")


def _temps(ctx: StepContext, student_temperature: float | None, teacher_temperature: float | None):
    ts = ctx.temperature if student_temperature is None else float(student_temperature)
    tt = ctx.temperature if teacher_temperature is None else float(teacher_temperature)
    return ts, tt


def _teacher_targets(ctx: StepContext) -> torch.Tensor | None:
    return None if ctx.teacher_targets is None else ctx.teacher_targets[ctx.teacher_mask]


@register_objective(
    "uld", needs_teacher=True, cross_tokenizer=True, teacher_input="logits", sparse_teacher=True,
    default_weights={"ce": 1.0, "uld": 1.5}, soft_terms=("uld",),
    params={"variant": "aligned", "top_k": 256, "merge": "observed", "student_temperature": None,
            "teacher_temperature": None, "chunk_groups": 512, "skip_student_eos": True, "skip_teacher_eos": False},
    description="ULD sorted-L1 across tokenizers (aligned groups, or the original positional pairing) + student CE")
def uld_objective(ctx: StepContext, variant: str = "aligned", top_k: int | None = 256, merge: str = "observed",
                  student_temperature: float | None = None, teacher_temperature: float | None = None,
                  chunk_groups: int = 512, skip_student_eos: bool = True, skip_teacher_eos: bool = False
                  ) -> ObjectiveOutput:
    """``uld`` objective; weights default to the official recipe (CE 1, distillation 1.5)."""
    ts, tt = _temps(ctx, student_temperature, teacher_temperature)
    if variant == "aligned":
        out = uld_from_alignment(ctx.target_logits(), _teacher(ctx), batch_alignment(ctx), ctx.targets[ctx.mask],
                                 _teacher_targets(ctx), top_k=top_k, merge=merge, student_temperature=ts,
                                 teacher_temperature=tt, teacher_vocab_size=ctx.teacher_vocab_size,
                                 chunk_groups=chunk_groups)
    elif variant == "positional":
        if ctx.teacher_logits is None or not ctx.batch or not ctx.teacher_batch:
            raise ValueError("uld variant='positional' needs ctx.teacher_logits and both collated batches (labels)")
        zs = ctx.student_logits(ctx.student_hidden)
        zt = ctx.teacher_logits[..., : ctx.teacher_vocab_size] if ctx.teacher_vocab_size else ctx.teacher_logits
        out = uld_positional(zs, zt, ctx.batch["labels"], ctx.teacher_batch["labels"],
                             skip_student_eos=skip_student_eos, skip_teacher_eos=skip_teacher_eos, top_k=top_k,
                             student_temperature=ts, teacher_temperature=tt, chunk_groups=chunk_groups)
    else:
        raise ValueError(f"loss.params.variant={variant!r} must be 'aligned' or 'positional'")
    return ObjectiveOutput({"ce": ce_sum(ctx), "uld": out.loss}, ctx.num_targets)


def one_to_one_groups(al: BatchAlignment) -> BatchAlignment:
    """``al`` restricted to groups of exactly one student and one teacher token, renumbered 0..G'-1.

    Why: for a multi-token group the teacher's merged distribution is over its FIRST token (e.g. ``E`` of
    ``E|lla``), whose student counterpart is not the token the student emits first (``Ella``); on the matched
    columns such groups push the student away from its own target (measured on SmolLM2 -> a task BPE student).
    """
    G = al.num_groups
    ns = torch.bincount(al.student_groups, minlength=G)
    nt = torch.bincount(al.teacher_groups, minlength=G)
    keep = (ns == 1) & (nt == 1)
    new_id = torch.cumsum(keep.long(), 0) - 1
    s_keep, t_keep = keep[al.student_groups], keep[al.teacher_groups]
    return BatchAlignment(student_rows=al.student_rows[s_keep], student_groups=new_id[al.student_groups[s_keep]],
                          teacher_rows=al.teacher_rows[t_keep], teacher_groups=new_id[al.teacher_groups[t_keep]],
                          num_groups=int(keep.sum()), group_example=al.group_example[keep])


def _vocab_map(ctx: StepContext) -> Any:
    vm = ctx.extras.get("vocab_map")
    if vm is None:
        if ctx.teacher_tokenizer is None or ctx.student_tokenizer is None:
            raise ValueError("gold_hybrid needs ctx.extras['vocab_map'] or both tokenizers to build it")
        from crossdistill.align.vocab_map import build_vocab_map

        vm = build_vocab_map(ctx.teacher_tokenizer, ctx.student_tokenizer)
        ctx.extras["vocab_map"] = vm
    return vm


@register_objective(
    "gold_hybrid", needs_teacher=True, cross_tokenizer=True, teacher_input="logits", sparse_teacher=True,
    default_weights={"ce": 1.0, "gold": 1.0, "gold_matched": 0.0, "gold_unmatched": 0.0},
    soft_terms=("gold", "gold_matched", "gold_unmatched"),
    params={"beta": 0.5, "matched_weight": None, "unmatched_weight": None, "merge": "observed", "top_k": None,
            "student_temperature": None, "teacher_temperature": None, "chunk_groups": 256, "one_to_one_only": False},
    description="GOLD hybrid: generalized JSD on matched vocabulary columns + sorted L1 on the rest, + student CE")
def gold_hybrid_objective(ctx: StepContext, beta: float = 0.5, matched_weight: float | None = None,
                          unmatched_weight: float | None = None, merge: str = "observed", top_k: int | None = None,
                          student_temperature: float | None = None, teacher_temperature: float | None = None,
                          chunk_groups: int = 256, one_to_one_only: bool = False) -> ObjectiveOutput:
    """``gold_hybrid`` objective. ``gold_matched`` / ``gold_unmatched`` are logged with weight 0 (diagnostics).

    ``one_to_one_only``: distil only on groups of one student and one teacher token (:func:`one_to_one_groups`).
    """
    ts, tt = _temps(ctx, student_temperature, teacher_temperature)
    al = batch_alignment(ctx)
    if one_to_one_only:
        al = one_to_one_groups(al)
    out = gold_hybrid(ctx.target_logits(), _teacher(ctx), al, _vocab_map(ctx),
                      ctx.targets[ctx.mask], _teacher_targets(ctx), beta=beta, matched_weight=matched_weight,
                      unmatched_weight=unmatched_weight, merge=merge, top_k=top_k, student_temperature=ts,
                      teacher_temperature=tt, teacher_vocab_size=ctx.teacher_vocab_size, chunk_groups=chunk_groups)
    return ObjectiveOutput({"ce": ce_sum(ctx), "gold": out.loss, "gold_matched": out.matched.detach(),
                            "gold_unmatched": out.unmatched.detach()}, ctx.num_targets)
