"""``multilevel_ot`` (the paper's MultiLevelOT) and ``multilevel_ot_official`` (as the official code computes it):
optimal-transport distillation on sequence-ranked top-k vectors — token-level HAD and SL terms and a sequence-level
Sinkhorn distance — plus the student's cross-entropy. docs/cross_tokenizer_methods.md lists where the two differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from crossdistill.losses.mlot import DEFAULT_WEIGHTS, OFFICIAL_WEIGHTS, MultiLevelOTConfig, multilevel_ot_terms
from crossdistill.methods.base import Method, MethodOutput, StepContext
from crossdistill.methods.common import ce_sum, student_rows_per_example, teacher_rows_per_example

SAMPLE_TERMS = ("had", "sl", "sd")
"""Every OT term compares sequence-ranked top-k vectors, which carry no token identity: on the student's own samples
they only make it more confident in its own top tokens where the teacher is confident (measured at λ = 1 on the
demo's pair: held-out bits per byte 1.17 -> 1.16 and 1.19 -> 1.23, nothing learnt). Off on on-policy steps
(:attr:`crossdistill.methods.base.Method.sample_terms`), so this method trains off-policy only."""


def multilevel_ot_loss(ctx: StepContext, params: MultiLevelOTConfig, state: None) -> MethodOutput:
    """Paper weights CE + 0.15·(HAD + 0.1·SL + 0.1·SD); the official variant weights had 1.5, sl/sd 0.15."""
    teacher, _ = teacher_rows_per_example(ctx)
    terms = multilevel_ot_terms(student_rows_per_example(ctx), teacher, params,
                                teacher_vocab_size=ctx.teacher_vocab_size)
    if params.reference_impl == "official":
        # The official code's terms are batch means; scaled by the local count so that the trainer's division by
        # the step's count gives back the official value when one micro-batch is the whole step.
        terms = {k: v * ctx.num_targets for k, v in terms.items()}
    return MethodOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)


@dataclass(kw_only=True)
class OfficialMultiLevelOTParams(MultiLevelOTConfig):
    """``multilevel_ot_official``'s parameters: the same fields, with the official code's defaults."""

    sinkhorn_iters: int = 10
    """N, the number of Sinkhorn rounds (the official code uses 10)."""
    student_ranking: Literal["assignment", "own"] = "own"
    """The official code ranks the student by its own summed probability."""
    reference_impl: Literal["paper", "official"] = "official"
    """Reproduce the official code's reductions."""


METHODS = (
    Method("multilevel_ot", multilevel_ot_loss, default_weights=DEFAULT_WEIGHTS, params=MultiLevelOTConfig,
           teacher="logits", cross_tokenizer=True, soft_terms=(), sample_terms=SAMPLE_TERMS,
           description="MultiLevelOT (paper): sequence-ranked top-k HAD + SL + sequence-level Sinkhorn distance, "
                       "+ student CE"),
    Method("multilevel_ot_official", multilevel_ot_loss, default_weights=OFFICIAL_WEIGHTS,
           params=OfficialMultiLevelOTParams, teacher="logits", cross_tokenizer=True, soft_terms=(),
           sample_terms=SAMPLE_TERMS,
           description="MultiLevelOT as the official code computes it"),
)
