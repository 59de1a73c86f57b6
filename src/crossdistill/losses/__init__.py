"""Pure loss functions on tensors: divergences, the teacher signal, sparse and chunked (fused) paths, objective.

Every loss returns a SUM over target positions; :func:`combine_terms` divides by the global target count.
Cross-tokenizer losses live in their own modules (``uld``, ``hybrid``, ``mlot``, ``cdm``, ``dskd``) and are imported
from there.
"""

from crossdistill.losses.chunked import (
    ChunkedLossConfig,
    LossSums,
    TeacherHead,
    distill_loss_from_logits,
    fused_distill_loss,
)
from crossdistill.losses.divergences import (
    ALIASES,
    DIVERGENCES,
    adaptive_kl,
    divergence,
    divergence_from_logits,
    forward_kl,
    generalized_jsd,
    reverse_kl,
    skew_kl,
    skew_reverse_kl,
    tvd,
)
from crossdistill.losses.objective import Objective, combine_terms, normalize
from crossdistill.losses.signal import POLICIES, TeacherSignal
from crossdistill.losses.sparse import signal_divergence, sparse_divergence

__all__ = [
    "ALIASES",
    "ChunkedLossConfig",
    "LossSums",
    "TeacherHead",
    "distill_loss_from_logits",
    "fused_distill_loss",
    "signal_divergence",
    "sparse_divergence",
    "DIVERGENCES",
    "POLICIES",
    "Objective",
    "TeacherSignal",
    "adaptive_kl",
    "combine_terms",
    "divergence",
    "divergence_from_logits",
    "forward_kl",
    "generalized_jsd",
    "normalize",
    "reverse_kl",
    "skew_kl",
    "skew_reverse_kl",
    "tvd",
]
