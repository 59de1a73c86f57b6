"""``gold_hybrid``: GOLD's hybrid cross-tokenizer loss — generalized JSD on the vocabulary columns the two
tokenizers share (exact-string map), sorted L1 (ULD) on the rest — plus the student's cross-entropy.

``gold_matched`` / ``gold_unmatched`` are logged with weight 0 (diagnostics). On the student's own samples
(``ctx.own_samples``: an on-policy step without ``onpolicy.ce_on_samples``) ``gold`` is the matched part alone:
the unmatched sorted L1 carries no token identity, so there it only sharpens what the student sampled. The
vocabulary map is the method's per-run state, built once from the two tokenizers (and cached on disk by
:mod:`crossdistill.align.vocab_map`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from crossdistill.align.merge import MergeStrategy
from crossdistill.align.vocab_map import build_vocab_map
from crossdistill.errors import ConfigError
from crossdistill.losses.hybrid import gold_hybrid
from crossdistill.methods.base import FixedState, Method, MethodOutput, Setup, StateInputs, StepContext, require
from crossdistill.methods.common import (
    batch_alignment,
    ce_from_target_logits,
    check_sparse_top_k,
    side_temperatures,
    teacher_target_rows,
    teacher_targets_flat,
)


@dataclass(frozen=True)
class GoldHybridParams:
    """Parameters of ``gold_hybrid``."""

    beta: float = 0.5
    """Teacher weight of the generalized JSD on matched columns, in [0, 1]."""
    matched_weight: float | None = None
    """Weight of the matched part; ``null``: the share of teacher mass on matched columns (GOLD's default)."""
    unmatched_weight: float | None = None
    """Weight of the unmatched (sorted L1) part; ``null``: one minus the matched share."""
    merge: MergeStrategy = "observed"
    """How a multi-token group's distributions merge by the chain rule: ``observed`` or ``bayesian``."""
    top_k: int | None = None
    """Sort only the top-k of the unmatched part; ``null``: exact."""
    student_temperature: float | None = None
    """Student-side temperature; ``null``: ``loss.temperature``."""
    teacher_temperature: float | None = None
    """Teacher-side temperature; ``null``: ``loss.temperature``."""
    chunk_groups: int = 256
    """Groups per chunk (bounds memory)."""
    one_to_one_only: bool = False
    """Distil only on groups of one student and one teacher token (see ``BatchAlignment.one_to_one``)."""

    def check(self) -> None:
        require(0.0 <= self.beta <= 1.0, "loss.params.beta", self.beta, "must be in [0, 1]")
        for name in ("matched_weight", "unmatched_weight"):
            w = getattr(self, name)
            require(w is None or w >= 0, f"loss.params.{name}", w, "must be >= 0 or null")
        require(self.top_k is None or self.top_k >= 1, "loss.params.top_k", self.top_k, "must be >= 1 or null")
        require(self.chunk_groups >= 1, "loss.params.chunk_groups", self.chunk_groups, "must be >= 1")
        for side in ("student_temperature", "teacher_temperature"):
            t = getattr(self, side)
            require(t is None or t > 0, f"loss.params.{side}", t, "must be > 0 or null (loss.temperature)")


@dataclass
class VocabMapState(FixedState):
    """The exact-string vocabulary map of the pair (nothing to train or save)."""

    vocab_map: Any


def check(setup: Setup) -> None:
    check_sparse_top_k(setup, setup.params.top_k)
    if setup.teacher_source == "cache" and not setup.has_teacher_tokenizer:
        raise ConfigError("teacher.cache with loss.name='gold_hybrid': its vocabulary map needs the teacher's "
                          "tokenizer; set teacher.tokenizer (or teacher.model) to the tokenizer the cache was "
                          "written with")


def build_state(inputs: StateInputs) -> VocabMapState:
    return VocabMapState(build_vocab_map(inputs.teacher_tokenizer, inputs.student_tokenizer))


def gold_hybrid_loss(ctx: StepContext, params: GoldHybridParams, state: VocabMapState | None) -> MethodOutput:
    if state is None:
        if ctx.teacher_tokenizer is None or ctx.student_tokenizer is None:
            raise ValueError("gold_hybrid needs its vocabulary-map state or both tokenizers to build it")
        state = VocabMapState(build_vocab_map(ctx.teacher_tokenizer, ctx.student_tokenizer))
    ts, tt = side_temperatures(ctx, params.student_temperature, params.teacher_temperature)
    al = batch_alignment(ctx)
    if params.one_to_one_only:
        al = al.one_to_one()
    zs = ctx.target_logits()  # one student head for both terms
    out = gold_hybrid(zs, teacher_target_rows(ctx), al, state.vocab_map, ctx.targets[ctx.mask],
                      teacher_targets_flat(ctx), beta=params.beta, matched_weight=params.matched_weight,
                      unmatched_weight=params.unmatched_weight, merge=params.merge, top_k=params.top_k,
                      student_temperature=ts, teacher_temperature=tt, teacher_vocab_size=ctx.teacher_vocab_size,
                      chunk_groups=params.chunk_groups, unmatched=not ctx.own_samples)
    return MethodOutput({"ce": ce_from_target_logits(ctx, zs), "gold": out.loss, "gold_matched": out.matched.detach(),
                         "gold_unmatched": out.unmatched.detach()}, ctx.num_targets)


METHOD = Method("gold_hybrid", gold_hybrid_loss,
                default_weights={"ce": 1.0, "gold": 1.0, "gold_matched": 0.0, "gold_unmatched": 0.0},
                params=GoldHybridParams, teacher="logits", cross_tokenizer=True, sparse_teacher=True,
                soft_terms=("gold", "gold_matched", "gold_unmatched"), check=check, state=build_state,
                description="GOLD hybrid: generalized JSD on matched vocabulary columns + sorted L1 on the rest, "
                            "+ student CE")
