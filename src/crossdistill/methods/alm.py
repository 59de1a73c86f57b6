"""``alm``: Approximate Likelihood Matching across tokenizers — the two models' log-likelihoods of the same text,
chunk by chunk, compared as binarized likelihoods (binary cross-entropy at τ = 100 by default), plus the student's
cross-entropy.

Only the probability of the ACTUAL tokens is needed (and, for debiasing, of "the next token starts a word"), so it
trains from an online teacher's logits and from a cache alike (a cache stores each token's exact log-prob), off- and
on-policy. Defaults follow tokenkit's recommended setting: unconstrained chunks merged until the teacher's
word-boundary probability passes 0.1, debiased with that probability (``merge_by_space_prob + append_space``).

Scale: the ``alm`` term is a SUM over chunks (each chunk counts once), divided by the trainer like every term by
the step's student target count. So it is tokenkit's per-chunk mean times (chunks / target tokens) — exactly the
per-chunk mean when chunks are single tokens (identical tokenizers, unconstrained chunks) and a constant factor
below 1 otherwise; ``alm_chunks`` (weight 0) logs that factor (chunks per target token). ALM's probabilities are at
temperature 1 and its own binarization temperature: ``loss.temperature`` does not change it and no T² applies.
See docs/cross_tokenizer_methods.md, "ALM".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from crossdistill.align.chunks import BoundaryMasks, boundary_masks, space_closures
from crossdistill.errors import ConfigError
from crossdistill.losses.alm import ALMDistance, ChunkWeight, alm_loss, dense_row_stats, sparse_boundary_logp
from crossdistill.losses.rowwise import target_logprob_stats
from crossdistill.losses.signal import TeacherSignal
from crossdistill.methods.base import FixedState, Method, MethodOutput, Setup, StateInputs, StepContext, require
from crossdistill.methods.common import batch_alignment, teacher_target_rows


@dataclass(frozen=True)
class ALMParams:
    """Parameters of ``alm``."""

    chunks: Literal["unconstrained", "space"] = "unconstrained"
    """``unconstrained``: every boundary both tokenizations share; ``space``: only where the next tokens on both
    sides start with a space, after special tokens and at the end."""
    merge_by_space_prob: bool = True
    """Merge consecutive chunks until the teacher's probability that the next token starts a word exceeds
    ``threshold`` (tokenkit's recommended mode)."""
    threshold: float = 0.1
    """Boundary probability that closes a merged chunk, in [0, 1]."""
    append_space: bool = True
    """Debias: add each side's log-probability that the token after the chunk starts with a boundary byte."""
    distance: ALMDistance = "binary_ce"
    """``binary_ce``, ``reverse_binary_kl``, ``abs``, ``abs_exp`` or ``renyi``."""
    binarization_temperature: float = 100.0
    """τ: chunk likelihoods become Bernoulli parameters ``exp(log p / τ)`` (binarized distances)."""
    renyi_alpha: float = 0.5
    """Order of the ``renyi`` distance (> 0, != 1)."""
    epsilon: float = 1e-6
    """Subtracted from the binarized log-likelihoods so ``log(1 − y)`` stays finite."""
    chunk_weight: ChunkWeight = "one"
    """``one``: every chunk counts once; ``tokens``: a chunk counts by its number of student target tokens (the term
    is then a token-weighted average after the trainer's division)."""

    def check(self) -> None:
        require(0.0 <= self.threshold <= 1.0, "loss.params.threshold", self.threshold, "must be in [0, 1]")
        require(self.binarization_temperature > 0, "loss.params.binarization_temperature",
                self.binarization_temperature, "must be > 0")
        require(self.renyi_alpha > 0 and self.renyi_alpha != 1, "loss.params.renyi_alpha", self.renyi_alpha,
                "must be > 0 and != 1")
        require(self.epsilon >= 0, "loss.params.epsilon", self.epsilon, "must be >= 0")


@dataclass
class ALMState(FixedState):
    """Both vocabularies' boundary masks (rebuilt from the tokenizers; nothing to train or save)."""

    student: BoundaryMasks
    teacher: BoundaryMasks
    _tensors: dict = field(default_factory=dict, repr=False)

    def mask(self, side: str, kind: str, device: torch.device) -> torch.Tensor:
        key = (side, kind, str(device))
        if key not in self._tensors:
            self._tensors[key] = torch.as_tensor(getattr(getattr(self, side), kind), device=device)
        return self._tensors[key]


def check(setup: Setup) -> None:
    if setup.teacher_source == "cache" and not setup.has_teacher_tokenizer:
        raise ConfigError("teacher.cache with loss.name='alm': its word-boundary masks need the teacher's tokenizer; "
                          "set teacher.tokenizer (or teacher.model) to the tokenizer the cache was written with")


def build_state(inputs: StateInputs) -> ALMState:
    if inputs.teacher_tokenizer is None or inputs.student_tokenizer is None:
        raise ValueError("alm needs both tokenizers (word-boundary masks)")
    return ALMState(boundary_masks(inputs.student_tokenizer), boundary_masks(inputs.teacher_tokenizer))


def _teacher_stats(ctx: StepContext, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per teacher target row: log p(actual token) and log P(next token in the boundary mask), no grad."""
    if ctx.teacher_mask is None or ctx.teacher_targets is None:
        raise ValueError("alm needs ctx.teacher_mask and ctx.teacher_targets (the teacher's shifted targets)")
    t_targets = ctx.teacher_targets[ctx.teacher_mask]
    signal = teacher_target_rows(ctx)
    if isinstance(signal, TeacherSignal) and not signal.is_sparse:
        signal = signal.logits
    if isinstance(signal, torch.Tensor):  # dense [M, V_t] logits of the teacher's target rows
        rows = torch.arange(signal.shape[0], device=t_targets.device)
        return dense_row_stats(signal, rows, t_targets, mask, chunk_rows=ctx.chunk_tokens)
    if not isinstance(signal, TeacherSignal):
        raise ValueError("alm needs the teacher's logits or a TeacherSignal over its target rows")
    if signal.target_logprobs is not None:
        logp = signal.target_logprobs.float()
    else:  # the actual token must then be among the kept ids
        hit = signal.ids == t_targets[:, None]
        if not bool(hit.any(-1).all()):
            raise ValueError("alm with a sparse teacher needs the exact log-prob of every actual token "
                             "(TeacherSignal.target_logprobs, which a teacher cache stores); some actual tokens are "
                             "not among the signal's kept ids")
        logp = signal.logprobs.float().masked_fill(~hit, float("-inf")).max(-1).values
    bound = None if mask is None else sparse_boundary_logp(signal.ids, signal.logprobs, signal.tail_logmass, mask)
    return logp, bound


def alm_method_loss(ctx: StepContext, params: ALMParams, state: ALMState | None) -> MethodOutput:
    if state is None:
        state = build_state(StateInputs(None, None, ctx.student_tokenizer, ctx.teacher_tokenizer, params))
    dev = ctx.mask.device
    s_targets = ctx.targets[ctx.mask]
    need_s = params.append_space
    need_t = params.append_space or params.merge_by_space_prob
    s_logp, s_bound = target_logprob_stats(
        ctx.target_hidden(), ctx.lm_head_weight, s_targets,
        state.mask("student", "boundary", dev) if need_s else None, bias=ctx.lm_head_bias,
        logit_scale=ctx.logit_scale, vocab_size=ctx.vocab_size, chunk_rows=ctx.chunk_tokens)
    t_logp, t_bound = _teacher_stats(ctx, state.mask("teacher", "boundary", dev) if need_t else None)
    al = batch_alignment(ctx)
    closures = None
    if params.chunks == "space":
        closures = space_closures(al, s_targets, ctx.teacher_targets[ctx.teacher_mask], state.student, state.teacher)
    out = alm_loss(s_logp, t_logp, al, student_row_example=torch.nonzero(ctx.mask)[:, 0],
                   teacher_row_example=torch.nonzero(ctx.teacher_mask)[:, 0], student_boundary_logp=s_bound,
                   teacher_boundary_logp=t_bound, group_closures=closures,
                   merge_by_space_prob=params.merge_by_space_prob, threshold=params.threshold,
                   append_space=params.append_space, distance=params.distance,
                   binarization_temperature=params.binarization_temperature, epsilon=params.epsilon,
                   renyi_alpha=params.renyi_alpha, chunk_weight=params.chunk_weight)
    # The CE sum is the negated sum of the same per-row log-probs (temperature 1): no second lm_head pass.
    ce = -s_logp.sum()
    return MethodOutput({"ce": ce, "alm": out.loss,
                         "alm_chunks": torch.tensor(float(out.num_chunks), device=dev)}, ctx.num_targets)


METHOD = Method("alm", alm_method_loss, default_weights={"ce": 1.0, "alm": 1.0, "alm_chunks": 0.0},
                params=ALMParams, teacher="logits", cross_tokenizer=True, sparse_teacher=True, soft_terms=(),
                check=check, state=build_state,
                description="ALM: binarized likelihoods of the same text chunks (binary CE at tau=100, "
                            "merged by the teacher's word-boundary probability, debiased) + student CE")
