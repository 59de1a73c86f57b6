"""``xtoken_pkl`` / ``xtoken_hkl``: X-Token cross-tokenizer distillation through a sparse student -> teacher
projection W built once from the two vocabularies (exact matches, decayed multi-token re-tokenizations), plus the
student's cross-entropy.

* ``xtoken_pkl`` (P-KL): the student's distribution at each aligned group's first row is pushed through W into the
  teacher's vocabulary and compared with the teacher's by forward KL — no matched/unmatched split, so tokens that
  tokenize differently (multi-digit numbers against a digit-splitting teacher) keep their identity. The student side
  runs from hidden states in row chunks.
* ``xtoken_hkl`` (H-KL): GOLD's hybrid with W's relaxed matching (top entry ≥ 0.6) instead of exact strings: forward
  KL on matched columns + sorted L1 on the rest, both weighted 1.

Both read an online teacher's logits or a sparse teacher signal (a cache), off- and on-policy. W is the method's
per-run state (cached on disk by :mod:`crossdistill.align.projection`); ``crossdistill align-report`` shows how much
teacher mass it covers per token category, which is how to choose between the two. See
docs/cross_tokenizer_methods.md, "X-Token".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossdistill.align.merge import MergeStrategy
from crossdistill.align.projection import RELAXED_THRESHOLD, Projection, build_projection
from crossdistill.errors import ConfigError
from crossdistill.losses.xtoken import hybrid_kl, projected_kl
from crossdistill.methods.base import FixedState, Method, MethodOutput, Setup, StateInputs, StepContext, require
from crossdistill.methods.common import batch_alignment, ce_sum, teacher_target_rows, teacher_targets_flat


@dataclass(frozen=True)
class ProjectionParams:
    """How W is built (part of its cache key)."""

    top_k: int = 4
    """Teacher entries kept per student token in W (the reference implementation's runtime width)."""
    max_pieces: int = 4
    """Pieces of a re-tokenization that get a decayed weight; the rest is dropped."""
    reverse_pass: bool = True
    """Also tokenize every teacher token with the student's tokenizer and add those weights."""

    def check(self) -> None:
        require(self.top_k >= 1, "loss.params.top_k", self.top_k, "must be >= 1")
        require(self.max_pieces >= 1, "loss.params.max_pieces", self.max_pieces, "must be >= 1")


@dataclass(frozen=True)
class PKLParams(ProjectionParams):
    """Parameters of ``xtoken_pkl``."""

    chunk_groups: int = 128
    """Groups per chunk of the student lm_head + projection (bounds the ``[chunk, V]`` tiles)."""

    def check(self) -> None:
        super().check()
        require(self.chunk_groups >= 1, "loss.params.chunk_groups", self.chunk_groups, "must be >= 1")


@dataclass(frozen=True)
class HKLParams(ProjectionParams):
    """Parameters of ``xtoken_hkl``."""

    threshold: float = RELAXED_THRESHOLD
    """A student token matches its top teacher entry in W when that weight is at least this, in (0, 1]."""
    beta: float = 0.0
    """Teacher weight of the generalized JSD on matched columns (0: forward KL, X-Token's choice), in [0, 1]."""
    matched_weight: float | None = 1.0
    """Weight of the matched part; ``null`` (with ``unmatched_weight: null``): GOLD's adaptive weights."""
    unmatched_weight: float | None = 1.0
    """Weight of the unmatched (sorted L1) part."""
    unmatched_top_k: int | None = 256
    """Sort only the top-k of the unmatched columns (with the bound of docs/alignment.md); ``null``: full sort."""
    merge: MergeStrategy = "observed"
    """How a multi-token group's distributions merge by the chain rule: ``observed`` or ``bayesian``."""
    chunk_groups: int = 256
    """Groups per chunk."""

    def check(self) -> None:
        super().check()
        require(0.0 < self.threshold <= 1.0, "loss.params.threshold", self.threshold, "must be in (0, 1]")
        require(0.0 <= self.beta <= 1.0, "loss.params.beta", self.beta, "must be in [0, 1]")
        require((self.matched_weight is None) == (self.unmatched_weight is None), "loss.params.matched_weight",
                self.matched_weight, "and unmatched_weight must both be numbers or both null (adaptive)")
        for name in ("matched_weight", "unmatched_weight"):
            w = getattr(self, name)
            require(w is None or w >= 0, f"loss.params.{name}", w, "must be >= 0 or null")
        require(self.unmatched_top_k is None or self.unmatched_top_k >= 1, "loss.params.unmatched_top_k",
                self.unmatched_top_k, "must be >= 1 or null")
        require(self.chunk_groups >= 1, "loss.params.chunk_groups", self.chunk_groups, "must be >= 1")


@dataclass
class ProjectionState(FixedState):
    """W of the pair (rebuilt from the tokenizers, or read from the on-disk cache; nothing to train or save)."""

    projection: Projection
    _relaxed: dict = field(default_factory=dict, repr=False)

    def relaxed_map(self, threshold: float) -> np.ndarray:
        if threshold not in self._relaxed:
            self._relaxed[threshold] = self.projection.relaxed_map(threshold)
        return self._relaxed[threshold]


def check(setup: Setup) -> None:
    if setup.teacher_source == "cache" and not setup.has_teacher_tokenizer:
        raise ConfigError("teacher.cache with an X-Token loss: its projection needs the teacher's tokenizer; set "
                          "teacher.tokenizer (or teacher.model) to the tokenizer the cache was written with")


def build_state(inputs: StateInputs) -> ProjectionState:
    p = inputs.params
    if inputs.teacher_tokenizer is None or inputs.student_tokenizer is None:
        raise ValueError("X-Token needs both tokenizers to build its projection")
    return ProjectionState(build_projection(inputs.teacher_tokenizer, inputs.student_tokenizer, top_k=p.top_k,
                                            max_pieces=p.max_pieces, reverse=p.reverse_pass))


def _state(ctx: StepContext, params: Any, state: ProjectionState | None) -> ProjectionState:
    if state is not None:
        return state
    if ctx.teacher_tokenizer is None or ctx.student_tokenizer is None:
        raise ValueError("X-Token needs its projection state or both tokenizers to build it")
    return build_state(StateInputs(None, None, ctx.student_tokenizer, ctx.teacher_tokenizer, params))


def _check_sizes(ctx: StepContext, proj: Projection) -> None:
    v_s = ctx.vocab_size or ctx.lm_head_weight.shape[0]
    if v_s != proj.student_size:
        raise ValueError(f"the student vocabulary ({v_s}) is not the projection's ({proj.student_size}): build it from "
                         "the student's tokenizer")
    if ctx.teacher_vocab_size is not None and ctx.teacher_vocab_size != proj.teacher_size:
        raise ValueError(f"the teacher vocabulary ({ctx.teacher_vocab_size}) is not the projection's "
                         f"({proj.teacher_size}): build it from the teacher's tokenizer")


def pkl_loss(ctx: StepContext, params: PKLParams, state: ProjectionState | None) -> MethodOutput:
    proj = _state(ctx, params, state).projection
    _check_sizes(ctx, proj)
    out = projected_kl(ctx.target_hidden(), ctx.lm_head_weight, teacher_target_rows(ctx), batch_alignment(ctx), proj,
                       temperature=ctx.temperature,
                       student_bias=ctx.lm_head_bias, logit_scale=ctx.logit_scale, vocab_size=proj.student_size,
                       chunk_rows=params.chunk_groups)
    return MethodOutput({"ce": ce_sum(ctx), "xtoken": out.loss}, ctx.num_targets)


def hkl_loss(ctx: StepContext, params: HKLParams, state: ProjectionState | None) -> MethodOutput:
    st = _state(ctx, params, state)
    _check_sizes(ctx, st.projection)
    out = hybrid_kl(ctx.target_logits(), teacher_target_rows(ctx), batch_alignment(ctx), st.projection,
                    ctx.targets[ctx.mask], teacher_targets_flat(ctx), threshold=params.threshold, beta=params.beta,
                    matched_weight=params.matched_weight, unmatched_weight=params.unmatched_weight,
                    top_k=params.unmatched_top_k, merge=params.merge, temperature=ctx.temperature,
                    teacher_vocab_size=st.projection.teacher_size, chunk_groups=params.chunk_groups,
                    relaxed_map=st.relaxed_map(params.threshold))
    return MethodOutput({"ce": ce_sum(ctx), "xtoken": out.loss, "xtoken_matched": out.matched.detach(),
                         "xtoken_unmatched": out.unmatched.detach()}, ctx.num_targets)


PKL = Method("xtoken_pkl", pkl_loss, default_weights={"ce": 1.0, "xtoken": 1.0}, params=PKLParams,
             teacher="logits", cross_tokenizer=True, sparse_teacher=True, soft_terms=("xtoken",), check=check,
             state=build_state,
             description="X-Token P-KL: forward KL against the teacher after projecting the student through a "
                         "sparse string-rule matrix W, + student CE")
HKL = Method("xtoken_hkl", hkl_loss,
             default_weights={"ce": 1.0, "xtoken": 1.0, "xtoken_matched": 0.0, "xtoken_unmatched": 0.0},
             params=HKLParams, teacher="logits", cross_tokenizer=True, sparse_teacher=True,
             soft_terms=("xtoken", "xtoken_matched", "xtoken_unmatched"), check=check, state=build_state,
             description="X-Token H-KL: GOLD hybrid with W's relaxed matching (KL on matched columns + sorted L1), "
                         "+ student CE")
METHODS = (PKL, HKL)
