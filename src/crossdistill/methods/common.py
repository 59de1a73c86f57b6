"""Pieces that several methods share: the student's cross-entropy sum, the chunked-loss settings of a step, and
the cross-tokenizer views of the teacher (its target rows, the alignment, per-side temperatures)."""

from __future__ import annotations

from typing import Any

import torch

from crossdistill.align.spans import BatchAlignment
from crossdistill.errors import ConfigError
from crossdistill.losses.chunked import ChunkedLossConfig, fused_distill_loss
from crossdistill.losses.signal import TeacherSignal
from crossdistill.methods.base import Setup, StepContext


def chunk_config(ctx: StepContext, divergence: str = "forward_kl", params: dict[str, Any] | None = None,
                 compute_ce: bool = True) -> ChunkedLossConfig:
    """The fused chunked loss's settings for this step (temperature, chunk size, vocabulary, logit scales)."""
    return ChunkedLossConfig(divergence=divergence, divergence_params=dict(params or {}), temperature=ctx.temperature,
                             chunk_size=ctx.chunk_tokens, vocab_size=ctx.vocab_size, compute_ce=compute_ce,
                             student_logit_scale=ctx.logit_scale, teacher_logit_scale=ctx.teacher_logit_scale)


def ce_sum(ctx: StepContext) -> torch.Tensor:
    """Sum of the student's cross-entropy (nats) over its target positions, fused lm_head + CE in token chunks."""
    return fused_distill_loss(ctx.student_hidden, ctx.lm_head_weight, ctx.targets, None, chunk_config(ctx),
                              student_bias=ctx.lm_head_bias).sums["ce"]


def ce_from_target_logits(ctx: StepContext, logits: torch.Tensor) -> torch.Tensor:
    """The same sum as :func:`ce_sum`, from the ``[N, V_s]`` fp32 target-row logits a method already holds
    (``ctx.target_logits()``: scale, bias and padding columns applied), so the student's lm_head runs once per step
    for CE and the soft term together (one GEMM forward and one backward saved)."""
    y = ctx.targets[ctx.mask]
    # lse - z[y], as the fused path computes it (F.cross_entropy's log_softmax is ~50x less accurate in fp32 here)
    return (torch.logsumexp(logits, dim=-1) - logits.gather(-1, y[:, None]).squeeze(-1)).sum()


def batch_alignment(ctx: StepContext) -> BatchAlignment:
    """The step's :class:`BatchAlignment` (given, or built once from the two collated batches and kept on ctx)."""
    if isinstance(ctx.alignment, BatchAlignment):
        return ctx.alignment
    if ctx.alignment is not None:
        raise TypeError(f"ctx.alignment must be a crossdistill.align.spans.BatchAlignment; got "
                        f"{type(ctx.alignment).__name__}")
    if not ctx.batch or not ctx.teacher_batch or "spans" not in ctx.batch or "spans" not in ctx.teacher_batch:
        raise ValueError("cross-tokenizer methods need ctx.alignment, or ctx.batch and ctx.teacher_batch from "
                         "crossdistill.data.render.collate_rendered (keys spans, completion_start, num_completion)")
    al = BatchAlignment.from_collated(ctx.batch, ctx.teacher_batch, ctx.mask, ctx.teacher_mask).to(ctx.mask.device)
    ctx.alignment = al
    return al


def teacher_target_rows(ctx: StepContext) -> Any:
    """The teacher at its target rows, in ``teacher_mask.nonzero()`` order: ``[M, V_t]`` logits (padding columns
    sliced off) or the sparse :class:`TeacherSignal` as given."""
    if ctx.teacher_target_logits is not None:
        return ctx.teacher_target_logits
    if ctx.teacher_logits is not None:
        if ctx.teacher_mask is None:
            raise ValueError("ctx.teacher_mask is required with ctx.teacher_logits")
        z = ctx.teacher_logits[ctx.teacher_mask]
        return z[..., : ctx.teacher_vocab_size] if ctx.teacher_vocab_size else z
    if ctx.teacher_signal is not None:
        return ctx.teacher_signal
    raise ValueError("cross-tokenizer methods need ctx.teacher_logits (or a teacher_signal over the teacher's "
                     "target rows)")


def teacher_rows_per_example(ctx: StepContext) -> tuple[list[Any], torch.Tensor]:
    """Per example, the teacher at its target rows (``[m_b, V_t]`` logits or a TeacherSignal), and ``[B]`` counts."""
    if ctx.teacher_mask is None:
        raise ValueError("cross-tokenizer methods need ctx.teacher_mask (the teacher's shifted target positions)")
    counts = ctx.teacher_mask.sum(1)
    if ctx.teacher_target_logits is not None:
        return list(torch.split(ctx.teacher_target_logits, counts.tolist())), counts
    if ctx.teacher_logits is not None:
        z = ctx.teacher_logits
        z = z[..., : ctx.teacher_vocab_size] if ctx.teacher_vocab_size else z
        return [z[b][ctx.teacher_mask[b]] for b in range(z.shape[0])], counts
    if isinstance(ctx.teacher_signal, TeacherSignal):
        starts = torch.cumsum(counts, 0) - counts
        return [ctx.teacher_signal.select(torch.arange(int(s), int(s + c), device=counts.device))
                for s, c in zip(starts.tolist(), counts.tolist())], counts
    raise ValueError("cross-tokenizer methods need ctx.teacher_logits [B, T_t, V_t] or a ctx.teacher_signal over "
                     "the teacher's target rows")


def student_rows_per_example(ctx: StepContext) -> list[torch.Tensor]:
    """Per example, ``[n_b, V_s]`` fp32 student logits at its target positions (grad)."""
    return list(torch.split(ctx.target_logits(), ctx.mask.sum(1).tolist()))


def teacher_targets_flat(ctx: StepContext) -> torch.Tensor | None:
    """``[M]`` the teacher token each teacher target row predicts (``teacher_mask.nonzero()`` order)."""
    return None if ctx.teacher_targets is None else ctx.teacher_targets[ctx.teacher_mask]


def side_temperatures(ctx: StepContext, student: float | None, teacher: float | None) -> tuple[float, float]:
    """Per-side distillation temperatures: ``ctx.temperature`` unless a method parameter overrides one side."""
    return (ctx.temperature if student is None else float(student),
            ctx.temperature if teacher is None else float(teacher))


def check_plain_head(ctx: StepContext, name: str) -> None:
    """Methods that use the raw head weight (projectors) do not model a bias or a logit scale."""
    if ctx.lm_head_bias is not None or ctx.logit_scale != 1.0:
        raise NotImplementedError(f"{name}: students with an lm_head bias or a logit scale are not supported yet")


def check_sparse_top_k(setup: Setup, top_k: int | None, field: str = "loss.params.top_k") -> None:
    """A sparse teacher (cache, server) holds ``setup.teacher_top_k`` log-probs per position: asking for more would
    silently use fewer, so it is refused with the fix."""
    k = setup.teacher_top_k
    if k is not None and top_k is not None and top_k > k:
        raise ConfigError(f"{field}={top_k} is more than the {k} teacher log-probs per position that "
                          f"teacher.{setup.teacher_source} provides; set {field}={k} (or lower), or give the "
                          f"teacher more (a cache built with a larger k)")
