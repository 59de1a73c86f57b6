"""``uld``: Universal Logit Distillation across tokenizers — the L1 distance between the two models' sorted
probability vectors, on aligned groups of tokens that cover the same text (or the original positional pairing),
plus the student's cross-entropy.

The CE term has weight 1 by default: sorted probabilities carry no information about which token is which, and a
student trained on them alone can lose its answers (docs/design.md, "Safe defaults"). Weights follow the official
recipe (CE 1, distillation 1.5). T² applies to ``uld`` only (a no-op at the default T = 1; the official code has
none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crossdistill.align.merge import MergeStrategy
from crossdistill.errors import ConfigError
from crossdistill.losses.uld import uld_from_alignment, uld_positional
from crossdistill.methods.base import Method, MethodOutput, Setup, StepContext, require
from crossdistill.methods.common import (
    batch_alignment,
    ce_from_target_logits,
    ce_sum,
    check_sparse_top_k,
    side_temperatures,
    teacher_target_rows,
    teacher_targets_flat,
)


@dataclass(frozen=True)
class ULDParams:
    """Parameters of ``uld``."""

    variant: Literal["aligned", "positional"] = "aligned"
    """``aligned``: groups of tokens covering the same text (any tokenizers); ``positional``: the original ULD
    pairing of the i-th completion token of each side (needs the teacher's logits at every position)."""
    top_k: int | None = 256
    """Sort only the top-k of each side (the rest of the sorted vectors is bounded, see docs/alignment.md);
    ``null``: the exact full sort."""
    merge: MergeStrategy = "observed"
    """How a multi-token group's distributions merge by the chain rule: ``observed`` or ``bayesian``."""
    student_temperature: float | None = None
    """Student-side temperature; ``null``: ``loss.temperature``."""
    teacher_temperature: float | None = None
    """Teacher-side temperature; ``null``: ``loss.temperature``."""
    chunk_groups: int = 512
    """Groups per chunk of the sort (bounds memory)."""
    skip_student_eos: bool = True
    """Positional variant: drop the student's EOS from the pairing (as the official code does)."""
    skip_teacher_eos: bool = False
    """Positional variant: drop the teacher's EOS from the pairing."""

    def check(self) -> None:
        require(self.top_k is None or self.top_k >= 1, "loss.params.top_k", self.top_k, "must be >= 1 or null")
        require(self.chunk_groups >= 1, "loss.params.chunk_groups", self.chunk_groups, "must be >= 1")
        for side in ("student_temperature", "teacher_temperature"):
            t = getattr(self, side)
            require(t is None or t > 0, f"loss.params.{side}", t, "must be > 0 or null (loss.temperature)")


def check(setup: Setup) -> None:
    if setup.teacher_source in ("cache", "server") and setup.params.variant != "aligned":
        raise ConfigError(f"teacher.{setup.teacher_source} with loss.params.variant={setup.params.variant!r}: "
                          "positional ULD needs the teacher's logits at every position; use variant 'aligned' (the "
                          f"default) with a {setup.teacher_source}")
    check_sparse_top_k(setup, setup.params.top_k)


def uld_loss(ctx: StepContext, params: ULDParams, state: None) -> MethodOutput:
    ts, tt = side_temperatures(ctx, params.student_temperature, params.teacher_temperature)
    if params.variant == "aligned":
        zs = ctx.target_logits()  # one student head for both terms
        out = uld_from_alignment(zs, teacher_target_rows(ctx), batch_alignment(ctx),
                                 ctx.targets[ctx.mask], teacher_targets_flat(ctx), top_k=params.top_k,
                                 merge=params.merge, student_temperature=ts, teacher_temperature=tt,
                                 teacher_vocab_size=ctx.teacher_vocab_size, chunk_groups=params.chunk_groups)
        return MethodOutput({"ce": ce_from_target_logits(ctx, zs), "uld": out.loss}, ctx.num_targets)
    else:
        if ctx.teacher_logits is None or not ctx.batch or not ctx.teacher_batch:
            raise ValueError("uld variant='positional' needs ctx.teacher_logits and both collated batches (labels)")
        zs = ctx.student_logits(ctx.student_hidden)
        zt = ctx.teacher_logits[..., : ctx.teacher_vocab_size] if ctx.teacher_vocab_size else ctx.teacher_logits
        out = uld_positional(zs, zt, ctx.batch["labels"], ctx.teacher_batch["labels"],
                             skip_student_eos=params.skip_student_eos, skip_teacher_eos=params.skip_teacher_eos,
                             top_k=params.top_k, student_temperature=ts, teacher_temperature=tt,
                             chunk_groups=params.chunk_groups)
    return MethodOutput({"ce": ce_sum(ctx), "uld": out.loss}, ctx.num_targets)


METHOD = Method("uld", uld_loss, default_weights={"ce": 1.0, "uld": 1.5}, params=ULDParams, teacher="logits",
                cross_tokenizer=True, sparse_teacher=True, soft_terms=("uld",), sample_terms=("uld",), check=check,
                dense_teacher_rows=lambda params: params.variant == "positional",
                description="ULD sorted-L1 across tokenizers (aligned groups, or the original positional pairing) "
                            "+ student CE")
