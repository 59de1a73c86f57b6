"""Registry of training objectives, selected by ``loss.name`` in a recipe.

An objective turns one micro-batch's model outputs into **named term sums** (design.md contract 2). It never
divides by a token count: the trainer divides every term by the number of target tokens of the whole optimizer
step, over gradient-accumulation micro-batches and processes, generated on-policy tokens included, so the loss does
not depend on how the global batch was split.

Return convention::

    ObjectiveOutput(terms={"ce": ce_sum, "kd": kd_sum}, count=ctx.num_targets)

* ``terms``: scalar tensors, each a SUM over this micro-batch's student target positions (or over alignment groups,
  which partition those positions). The trainer combines them with
  :func:`crossdistill.losses.objective.combine_terms` as ``sum_k weight_k * [T²] * term_k / global_count``, with the
  weights of ``loss.weights`` (defaults from :class:`ObjectiveSpec.default_weights`), T² on the spec's
  ``soft_terms`` when ``loss.t2_scale``, and logs each term separately. Objectives never divide and never apply T².
* ``count``: the local number of student target positions the sums cover; the trainer checks it against its own
  count, which catches an objective that silently drops positions.

Registering an objective (cross-tokenizer engineers do this in their own modules, imported by
:func:`load_builtin_objectives`)::

    @register_objective("uld", needs_teacher=True, cross_tokenizer=True, teacher_input="logits",
                        default_weights={"ce": 1.0, "uld": 1.0}, params={"top_k": 256})
    def uld_objective(ctx: StepContext, top_k: int) -> ObjectiveOutput: ...

``params`` declares every keyword the function accepts with its default; ``loss.params`` in a recipe may only name
those keys (config validation rejects others before any model loads).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F

TeacherInput = Literal["none", "hidden", "logits", "signal"]


@dataclass
class StepContext:
    """Everything an objective may need for one micro-batch. Shapes: B batch, T student length, H student hidden,
    V_s student vocabulary, T_t / H_t / V_t the same for the teacher. Unused fields are ``None``."""

    student_hidden: torch.Tensor
    """``[B, T, H]`` final hidden states of the student (input of its lm_head), with grad."""
    lm_head_weight: torch.Tensor
    """``[V_s, H]`` student lm_head weight (tied or not), with grad when trainable."""
    targets: torch.Tensor
    """``[B, T]`` int64 student targets from :func:`crossdistill.positions.shift_targets` (``targets[:, j]`` is the
    token that ``logits[:, j]`` predicts; ``-100`` elsewhere)."""
    mask: torch.Tensor
    """``[B, T]`` bool, the student target positions (``targets != -100``)."""
    lm_head_bias: torch.Tensor | None = None
    """``[V_s]`` student lm_head bias, rare."""
    logit_scale: float = 1.0
    """Multiplier the model applies to its logits (e.g. Cohere ``logit_scale``); 1 for most models."""
    vocab_size: int | None = None
    """Real student vocabulary (``len(tokenizer)``); head rows beyond it are padding and are sliced off (contract 5)."""
    teacher_hidden: torch.Tensor | None = None
    """``[B, T, H_t]`` teacher final hidden states, no grad. Same-tokenizer pairs only: positions equal the
    student's, so ``mask`` selects the teacher rows too."""
    teacher_lm_head_weight: torch.Tensor | None = None
    """``[V_t, H_t]`` teacher lm_head weight, no grad."""
    teacher_logit_scale: float = 1.0
    """The teacher's logit multiplier."""
    teacher_vocab_size: int | None = None
    """Real teacher vocabulary; rows beyond it are padding."""
    teacher_signal: Any = None
    """:class:`crossdistill.losses.signal.TeacherSignal` for the N student target positions in row-major
    ``mask.nonzero()`` order (cached or server teachers, same tokenizer)."""
    teacher_logits: torch.Tensor | None = None
    """``[B, T_t, V_t]`` teacher logits over the teacher's own rendering (cross-tokenizer pairs), no grad."""
    teacher_targets: torch.Tensor | None = None
    """``[B, T_t]`` teacher targets, shifted with the same :func:`shift_targets`."""
    teacher_mask: torch.Tensor | None = None
    """``[B, T_t]`` bool, the teacher target positions."""
    teacher_batch: dict[str, Any] | None = None
    """The teacher's collated batch (``input_ids``, ``attention_mask``, ``labels``, ``offsets`` ...)."""
    alignment: Any = None
    """Per example alignment from :mod:`crossdistill.align` (groups of student <-> teacher positions that cover the
    same completion text), cross-tokenizer pairs only."""
    batch: dict[str, Any] | None = None
    """The student's collated batch (``input_ids``, ``attention_mask``, ``labels``, ``offsets`` ...)."""
    student_tokenizer: Any = None
    """The student tokenizer."""
    teacher_tokenizer: Any = None
    """The teacher tokenizer (the student's for same-tokenizer pairs)."""
    temperature: float = 1.0
    """Distillation temperature (divides both models' logits in soft-target terms). Not the sampling temperature."""
    t2_scale: bool = True
    """Whether the trainer multiplies soft terms by ``temperature**2`` (informational: objectives never do)."""
    chunk_tokens: int = 1024
    """Target tokens per chunk when logits are computed from hidden states (memory bound, contract 7)."""
    extras: dict[str, Any] = field(default_factory=dict)
    """Objective-specific precomputed state (e.g. a vocabulary map built once by the trainer)."""

    @property
    def num_targets(self) -> int:
        """Local number of student target positions."""
        return int(self.mask.sum())

    def target_hidden(self) -> torch.Tensor:
        """``[N, H]`` student hidden states at the target positions (row-major), compacted before any lm_head GEMM."""
        return self.student_hidden[self.mask]

    def student_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[n, H] -> [n, V_s]`` fp32 student logits of some rows, padding columns sliced off."""
        z = F.linear(hidden, self.lm_head_weight, self.lm_head_bias).float() * self.logit_scale
        return z[..., : self.vocab_size] if self.vocab_size else z

    def target_logits(self) -> torch.Tensor:
        """``[N, V_s]`` fp32 student logits at the target positions (materialized: use only when V_s*N is small or
        the objective needs all rows at once, e.g. cross-tokenizer merging)."""
        return self.student_logits(self.target_hidden())


@dataclass
class ObjectiveOutput:
    """What an objective returns: named term SUMS and the local count they cover (see module docstring)."""

    terms: dict[str, torch.Tensor]
    """Term name -> scalar sum over this micro-batch's target positions."""
    count: int
    """Local number of student target positions covered (must equal ``ctx.num_targets``)."""


ObjectiveFn = Callable[..., ObjectiveOutput]


@dataclass(frozen=True)
class ObjectiveSpec:
    """A registered objective and what it requires from the trainer."""

    name: str
    """Config name (``loss.name``)."""
    fn: ObjectiveFn
    """``fn(ctx: StepContext, **params) -> ObjectiveOutput``."""
    needs_teacher: bool
    """Whether a teacher (online model, cache or server) is required."""
    cross_tokenizer: bool
    """True: works with any tokenizer pair (needs ``teacher_logits`` + ``alignment``). False: the teacher must share
    the student's tokenizer (``teacher_hidden`` / ``teacher_signal`` at the student's positions)."""
    teacher_input: TeacherInput
    """Which teacher output the trainer must fill in: ``hidden`` (same-vocab fused), ``logits`` (full teacher
    logits over its own tokens), ``signal`` (a TeacherSignal), or ``none``."""
    default_weights: dict[str, float]
    """Term name -> weight used unless ``loss.weights`` overrides it; also the full list of term names."""
    params: dict[str, Any]
    """Keyword -> default of every extra parameter ``fn`` accepts (``loss.params`` keys are checked against it)."""
    soft_terms: tuple[str, ...] | None = None
    """Terms the trainer multiplies by T² (when ``loss.t2_scale``); ``None``: every term except ``ce``/``nll``
    (the :func:`crossdistill.losses.objective.combine_terms` default). Objectives NEVER apply T² themselves."""
    description: str = ""
    """One line shown in ``--help`` and errors."""
    sparse_teacher: bool = False
    """Cross-tokenizer objectives only: also works from a sparse ``teacher_signal`` (top-k + tail, with
    ``teacher_targets``/``teacher_mask``/``alignment``) instead of ``teacher_logits``, so it can train from a teacher
    cache. Same-vocabulary divergences read a cache through ``teacher_signal`` regardless."""


OBJECTIVES: dict[str, ObjectiveSpec] = {}

# Modules that register objectives when imported.
BUILTIN_MODULES = (
    "crossdistill.train.objectives",
    "crossdistill.align.objectives",  # uld, gold_hybrid
    "crossdistill.train.xtok_objectives",  # multilevel_ot, cdm, dskd, dskd_cma, dskd_eta
)


def register_objective(name: str, *, needs_teacher: bool, cross_tokenizer: bool = False,
                       teacher_input: TeacherInput = "hidden", default_weights: dict[str, float],
                       params: dict[str, Any] | None = None, soft_terms: tuple[str, ...] | None = None,
                       description: str = "", sparse_teacher: bool = False) -> Callable[[ObjectiveFn], ObjectiveFn]:
    """Decorator registering ``fn`` under ``name``. Re-registering the same name with another function raises."""

    def wrap(fn: ObjectiveFn) -> ObjectiveFn:
        old = OBJECTIVES.get(name)
        if old is not None and old.fn.__qualname__ != fn.__qualname__:
            raise ValueError(f"objective {name!r} is already registered by {old.fn.__module__}.{old.fn.__qualname__}")
        OBJECTIVES[name] = ObjectiveSpec(name, fn, needs_teacher, cross_tokenizer, teacher_input,
                                         dict(default_weights), dict(params or {}),
                                         None if soft_terms is None else tuple(soft_terms), description,
                                         sparse_teacher)
        return fn

    return wrap


def load_builtin_objectives() -> dict[str, ObjectiveSpec]:
    """Import every module that registers objectives and return the registry."""
    for mod in BUILTIN_MODULES:
        importlib.import_module(mod)
    return OBJECTIVES


def get_objective(name: str) -> ObjectiveSpec:
    """The spec registered under ``name``; the error lists what exists."""
    load_builtin_objectives()
    if name not in OBJECTIVES:
        raise KeyError(f"loss.name={name!r} is not a registered objective; choose one of {sorted(OBJECTIVES)}")
    return OBJECTIVES[name]


# --------------------------------------------------------------------------------------------------- built-ins


def _chunk_config(ctx: StepContext, divergence: str = "forward_kl", params: dict[str, Any] | None = None,
                  compute_ce: bool = True):
    from crossdistill.losses.chunked import ChunkedLossConfig

    return ChunkedLossConfig(divergence=divergence, divergence_params=dict(params or {}), temperature=ctx.temperature,
                             chunk_size=ctx.chunk_tokens, vocab_size=ctx.vocab_size, compute_ce=compute_ce,
                             student_logit_scale=ctx.logit_scale, teacher_logit_scale=ctx.teacher_logit_scale)


def ce_sum(ctx: StepContext) -> torch.Tensor:
    """Sum of the student's cross-entropy (nats) over its target positions, fused lm_head + CE in token chunks."""
    from crossdistill.losses.chunked import fused_distill_loss

    return fused_distill_loss(ctx.student_hidden, ctx.lm_head_weight, ctx.targets, None, _chunk_config(ctx),
                              student_bias=ctx.lm_head_bias).sums["ce"]


@register_objective("ce", needs_teacher=False, teacher_input="none", default_weights={"ce": 1.0},
                    description="supervised fine-tuning: cross-entropy on the completion (sft, hard-label, seq_kd)")
def ce_objective(ctx: StepContext) -> ObjectiveOutput:
    return ObjectiveOutput({"ce": ce_sum(ctx)}, ctx.num_targets)


def same_vocab_sums(ctx: StepContext, divergence: str, params: dict[str, Any]) -> dict[str, torch.Tensor]:
    """``{"ce": ..., "kd": ...}`` sums for a same-vocabulary divergence, through the fused chunked loss
    (:func:`crossdistill.losses.chunked.fused_distill_loss`: peak memory a few ``[chunk, V]`` tiles). No T² here."""
    from crossdistill.losses.chunked import TeacherHead, fused_distill_loss

    if ctx.teacher_signal is not None:
        teacher = ctx.teacher_signal
    elif ctx.teacher_hidden is not None and ctx.teacher_lm_head_weight is not None:
        teacher = TeacherHead(ctx.teacher_hidden, ctx.teacher_lm_head_weight)
    else:
        raise ValueError(f"divergence {divergence!r} needs the teacher's hidden states and lm_head (or a teacher "
                         "signal); the trainer did not provide them")
    out = fused_distill_loss(ctx.student_hidden, ctx.lm_head_weight, ctx.targets, teacher,
                             _chunk_config(ctx, divergence, params), student_bias=ctx.lm_head_bias)
    return out.sums


# name -> (divergence name in crossdistill.losses.divergences, its parameters with defaults)
SAME_VOCAB_DIVERGENCES: dict[str, tuple[str, dict[str, Any]]] = {
    "forward_kl": ("forward_kl", {}),
    "reverse_kl": ("reverse_kl", {}),
    "jsd": ("generalized_jsd", {"beta": 0.5}),
    "skew_kl": ("skew_kl", {"alpha": 0.1}),
    "skew_reverse_kl": ("skew_reverse_kl", {"alpha": 0.1}),
    "tvd": ("tvd", {}),
    "adaptive_kl": ("adaptive_kl", {"alpha": 0.5}),
}


def _make_divergence_objective(div_name: str, div_defaults: dict[str, Any]) -> ObjectiveFn:
    def objective(ctx: StepContext, **params: Any) -> ObjectiveOutput:
        return ObjectiveOutput(same_vocab_sums(ctx, div_name, params), ctx.num_targets)

    objective.__qualname__ = f"divergence_objective[{div_name}]"
    return objective


for _name, (_div, _defaults) in SAME_VOCAB_DIVERGENCES.items():
    # CE is always computed (cheap, and logged); weight 0 by default keeps pure KD, as in GKD. Same-vocabulary KD
    # towards a teacher on its own distribution is safe without CE (contract 10 concerns sorted objectives).
    register_objective(_name, needs_teacher=True, cross_tokenizer=False, teacher_input="hidden",
                       default_weights={"kd": 1.0, "ce": 0.0}, params=_defaults,
                       description=f"same-vocabulary {_div} on the teacher's full distribution")(
        _make_divergence_objective(_div, _defaults))
