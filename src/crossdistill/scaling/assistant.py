"""Teacher assistants: does distilling through an intermediate model lower the student's predicted loss, and which one?

The capacity gap (docs/scaling.md): for a fixed student, the distillation law's student loss is U-shaped in the
teacher's loss, so a teacher stronger than the bottom of the U (L_T < L_T*) makes a worse student than a weaker one
would. A teacher assistant is such a weaker teacher: first the teacher is distilled into the assistant, then the
assistant into the student. With the law, the student's loss through an assistant is L_S(N_S, D_S, L_A), where L_A is
the assistant's loss — measured, or predicted as the assistant distilled from the teacher, L_A = L_S(N_A, D_A, L_T).

    >>> from crossdistill.scaling.assistant import Candidate, recommend_assistant
    >>> advice = recommend_assistant(1.4, 1e9, 2e10, [Candidate("A", 3e9, loss=1.75)])
    >>> advice.best.name, round(advice.direct_loss, 4), round(advice.best.student_loss, 4)
    ('A', 2.3514, 2.2527)

What the law assumes (printed with every answer, :data:`ASSUMPTIONS`): supervised pretraining-style distillation
(next-token distributions on the pretraining data, forward KL, τ = 1, λ = 1), losses that are cross-entropies in nats
on that distribution, and coefficients that are specific to the setup they were fitted on. The law knows nothing of
chains: a stage sees its teacher only through that teacher's loss.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from crossdistill.scaling.flops import forward_flops_per_token
from crossdistill.scaling.laws import PAPER, LawPreset, optimal_teacher_loss, student_loss, supervised_loss

ASSUMPTIONS: tuple[str, ...] = (
    "the distillation law (Eq. 8) describes supervised pretraining-style distillation: the student matches the "
    "teacher's next-token distributions on pretraining data (forward KL, tau = 1, lambda = 1); not fine-tuning, "
    "on-policy or cross-tokenizer distillation, which shift the numbers",
    "losses are validation cross-entropies in nats on that distribution and N counts non-embedding parameters",
    "the coefficients are setup-specific (data, tokenizer, architecture); fit your own runs with "
    "`crossdistill scaling fit` and pass --coefficients",
    "the law has no term for chains: each stage is one distillation that sees its teacher only through its loss, "
    "so an assistant given by size and tokens is predicted as the teacher distilled into it, L_A = L_S(N_A, D_A, L_T)",
)
"""What every assistant recommendation assumes; the command prints them."""


@dataclass(frozen=True)
class Candidate:
    """A candidate assistant: its size and either its measured loss or the tokens it would be distilled on."""

    name: str
    params: float
    """Non-embedding parameters N_A."""
    loss: float | None = None
    """The assistant's measured cross-entropy L_A (nats); or ``None`` with ``tokens``."""
    tokens: float | None = None
    """Tokens D_A it is distilled on from the teacher (L_A predicted by Eq. 8); or ``None`` with ``loss``."""

    def __post_init__(self):
        if (self.loss is None) == (self.tokens is None):
            raise ValueError(f"assistant {self.name!r}: give its loss or its distillation tokens (exactly one)")
        for what, value in (("params", self.params), ("loss", self.loss), ("tokens", self.tokens)):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise ValueError(f"assistant {self.name!r}: {what}={value!r} must be a positive finite number")


@dataclass(frozen=True)
class AssistantOption:
    """One candidate, evaluated."""

    name: str
    params: float
    loss: float
    """L_A: given, or predicted from the teacher."""
    loss_source: str
    """``given`` or ``distilled from the teacher (Eq. 8)``."""
    tokens: float | None
    student_loss: float
    """L_S(N_S, D_S, L_A): the student distilled from this assistant."""
    gain: float
    """Direct student loss minus this one (> 0: the assistant helps)."""
    flops_assistant_inference: float
    """F(N_A) · D_S: the assistant's forward passes on the student's tokens (Eq. 69)."""
    flops_assistant_training: float | None
    """3 F(N_A) · D_A when ``tokens`` is known (without the teacher's forward passes on D_A)."""


@dataclass(frozen=True)
class AssistantAdvice:
    """The answer: distill directly, or through :attr:`best`."""

    teacher_loss: float
    student_params: float
    student_tokens: float
    supervised_loss: float
    """L(N_S, D_S): the student trained without a teacher."""
    direct_loss: float
    """L_S(N_S, D_S, L_T): the student distilled from the teacher directly."""
    optimal_teacher_loss: float
    """L_T*: the teacher loss at the bottom of the student's capacity-gap U (the ideal assistant's loss)."""
    student_loss_at_optimal: float
    options: list[AssistantOption] = field(default_factory=list)
    """Every candidate, best first."""
    preset: str = PAPER.name

    @property
    def best(self) -> AssistantOption | None:
        """The candidate with the lowest predicted student loss, if it beats direct distillation; else ``None``."""
        return self.options[0] if self.options and self.options[0].gain > 0 else None

    @property
    def teacher_too_strong(self) -> bool:
        """The teacher is past the bottom of the U (L_T < L_T*): a weaker teacher would make a better student."""
        return self.teacher_loss < self.optimal_teacher_loss

    def to_dict(self) -> dict:
        out = asdict(self)
        out["best"] = self.best.name if self.best is not None else None
        out["teacher_too_strong"] = self.teacher_too_strong
        out["assumptions"] = list(ASSUMPTIONS)
        return out


def recommend_assistant(L_T: float, N_S: float, D_S: float, candidates: list[Candidate],
                        preset: LawPreset = PAPER) -> AssistantAdvice:
    """Predict, with the distillation law, the student's loss through each candidate assistant and directly.

    Args:
        L_T: the teacher's cross-entropy (nats).
        N_S, D_S: the student's non-embedding parameters and distillation tokens.
        candidates: assistants, each with a measured loss or the tokens it would be distilled on from the teacher.
        preset: the law's coefficients.
    """
    for what, value in (("L_T", L_T), ("N_S", N_S), ("D_S", D_S)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{what}={value!r} must be a positive finite number")
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise ValueError(f"assistant names must be distinct; got {names}")
    direct = float(student_loss(N_S, D_S, L_T, preset))
    lt_opt, ls_opt = optimal_teacher_loss(N_S, D_S, preset)
    options = []
    for c in candidates:
        if c.loss is not None:
            l_a, source = c.loss, "given"
        else:
            l_a, source = float(student_loss(c.params, c.tokens, L_T, preset)), "distilled from the teacher (Eq. 8)"
        l_s = float(student_loss(N_S, D_S, l_a, preset))
        f_a = float(forward_flops_per_token(c.params))
        options.append(AssistantOption(c.name, c.params, l_a, source, c.tokens, l_s, direct - l_s, f_a * D_S,
                                       3 * f_a * c.tokens if c.tokens is not None else None))
    options.sort(key=lambda o: o.student_loss)
    return AssistantAdvice(L_T, N_S, D_S, float(supervised_loss(N_S, D_S, preset)), direct, lt_opt, ls_opt, options,
                           preset.name)
