"""The same-vocabulary soft-label methods: ``forward_kl``, ``reverse_kl``, ``jsd`` (generalized JSD), ``skew_kl``,
``skew_reverse_kl``, ``tvd``, ``adaptive_kl`` — one divergence each over the teacher's full distribution (or a
cached top-k signal), through the fused chunked lm_head + loss path whose peak memory is a few ``[chunk, V]`` tiles.

Names, aliases and parameter defaults are owned by :mod:`crossdistill.losses.divergences`; this module only builds
the typed parameters and registers one :class:`Method` per divergence.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossdistill.losses.chunked import TeacherHead, fused_distill_loss
from crossdistill.losses.divergences import DEFAULTS, METHOD_NAMES
from crossdistill.methods.base import Method, MethodOutput, NoParams, StepContext, params_dict, require
from crossdistill.methods.common import chunk_config


@dataclass(frozen=True)
class JSDParams:
    """Parameters of ``jsd``."""

    beta: float = DEFAULTS["generalized_jsd"]["beta"]
    """Teacher weight β of the mixture M = β p_T + (1 − β) p_S, in [0, 1] (TRL convention: 0 is exactly forward KL,
    1 exactly reverse KL)."""

    def check(self) -> None:
        require(0.0 <= self.beta <= 1.0, "loss.params.beta", self.beta, "must be in [0, 1] (0.5 is standard)")


@dataclass(frozen=True)
class SkewParams:
    """Parameters of ``skew_kl`` / ``skew_reverse_kl``."""

    alpha: float = DEFAULTS["skew_kl"]["alpha"]
    """Skew α in [0, 1]: the other side is mixed in with weight α (0 is the plain KL)."""

    def check(self) -> None:
        require(0.0 <= self.alpha <= 1.0, "loss.params.alpha", self.alpha, "must be in [0, 1] (0.1 is standard)")


@dataclass(frozen=True)
class AdaptiveKLParams:
    """Parameters of ``adaptive_kl``."""

    alpha: float = DEFAULTS["adaptive_kl"]["alpha"]
    """Probability mass in [0, 1] that defines the teacher's head (the rest is its tail)."""

    def check(self) -> None:
        require(0.0 <= self.alpha <= 1.0, "loss.params.alpha", self.alpha, "must be in [0, 1] (0.5 is standard)")


PARAMS: dict[str, type] = {"generalized_jsd": JSDParams, "skew_kl": SkewParams, "skew_reverse_kl": SkewParams,
                           "adaptive_kl": AdaptiveKLParams}


def divergence_sums(ctx: StepContext, divergence: str, params: dict) -> dict:
    """``{"ce": ..., "kd": ...}`` sums of one divergence through the fused chunked loss (no T² here)."""
    if ctx.teacher_signal is not None:
        teacher = ctx.teacher_signal
    elif ctx.teacher_hidden is not None and ctx.teacher_lm_head_weight is not None:
        teacher = TeacherHead(ctx.teacher_hidden, ctx.teacher_lm_head_weight)
    else:
        raise ValueError(f"divergence {divergence!r} needs the teacher's hidden states and lm_head (or a teacher "
                         "signal); the trainer did not provide them")
    return fused_distill_loss(ctx.student_hidden, ctx.lm_head_weight, ctx.targets, teacher,
                              chunk_config(ctx, divergence, params), student_bias=ctx.lm_head_bias).sums


def _method(name: str, divergence: str) -> Method:
    def loss(ctx: StepContext, params, state: None) -> MethodOutput:
        return MethodOutput(divergence_sums(ctx, divergence, params_dict(params)), ctx.num_targets)

    loss.__qualname__ = f"divergence_loss[{divergence}]"
    # CE is always computed (cheap, and logged); weight 0 by default keeps pure KD, as in GKD. Same-vocabulary KD
    # towards a teacher's own distribution is safe without CE (only sorted objectives lose token identity).
    return Method(name, loss, default_weights={"kd": 1.0, "ce": 0.0}, params=PARAMS.get(divergence, NoParams),
                  teacher="hidden", sparse_teacher=True,
                  description=f"same-vocabulary {divergence} on the teacher's full distribution")


METHODS: tuple[Method, ...] = tuple(_method(name, div) for name, div in METHOD_NAMES.items())
