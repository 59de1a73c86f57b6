"""``ce``: supervised fine-tuning on the completion — plain SFT, hard labels and SeqKD (with
``onpolicy.seq_kd``, the teacher's samples replace the dataset's completions)."""

from __future__ import annotations

from crossdistill.methods.base import Method, MethodOutput, NoParams, StepContext
from crossdistill.methods.common import ce_sum


def ce_loss(ctx: StepContext, params: NoParams, state: None) -> MethodOutput:
    """``{"ce": Σ_targets −log q(y)}``."""
    return MethodOutput({"ce": ce_sum(ctx)}, ctx.num_targets)


METHOD = Method("ce", ce_loss, default_weights={"ce": 1.0}, teacher="none",
                description="supervised fine-tuning: cross-entropy on the completion (sft, hard-label, seq_kd)")
