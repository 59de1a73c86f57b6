"""Compute accounting of the distillation scaling-laws paper (Eq. 9, Eq. 69, Table 2).

Forward FLOPs per token of a fixed-aspect-ratio transformer with N non-embedding parameters (Eq. 69):

    F(N) = 2N (1 + σ1 n_ctx N^(−1/3) + σ2 n_vocab N^(−2/3)),  σ1 = (ρ ω²)^(−1/3),  σ2 = (ρ / ω)^(1/3)

where ρ = d_model / n_layers and ω = 2 + 2/g_size + n_ffn ρ_ffn is the number of d_model² weight blocks per layer
(so N = ω ρ² n_layers³). The three terms are the weight matmuls (2N), attention over the context and the
unembedding. Backward costs twice the forward, so training costs 3 F(N) per token.

Total compute of one distillation (Eq. 9):  FLOPs = 3 F(N_S) D_S + F(N_T) (δ_Lgt D_S + δ_Pre · 3 D_T).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads on first use, so `crossdistill scaling ... --help` stays instant
    import numpy as np

__all__ = [
    "ArchitectureShape",
    "PAPER_SHAPE",
    "Scenario",
    "SCENARIOS",
    "forward_flops_per_token",
    "supervised_flops",
    "distillation_flops",
]


@dataclass(frozen=True, slots=True)
class ArchitectureShape:
    """Shape constants of a fixed-aspect-ratio model family; defaults are the paper's setup (App. H.1)."""

    n_ctx: int = 4096
    """Context length the attention term is charged for."""
    n_vocab: int = 32168
    """Vocabulary size (unembedding cost)."""
    rho: float = 128.0
    """Aspect ratio ρ = d_model / n_layers."""
    group_size: float = 1.0
    """Query heads per key/value head (1 = multi-head attention, >1 = grouped-query attention)."""
    n_ffn: int = 3
    """Number of feed-forward weight matrices (3 for a gated/SwiGLU MLP)."""
    rho_ffn: float = 8.0 / 3.0
    """Feed-forward width ratio d_ffn / d_model."""

    def __post_init__(self) -> None:
        for name in ("n_ctx", "n_vocab", "rho", "group_size", "n_ffn", "rho_ffn"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"ArchitectureShape.{name} = {value!r}: must be a finite positive number.")

    @property
    def omega(self) -> float:
        """ω = 2 + 2/g + n_ffn ρ_ffn: d_model² weight blocks per layer (Q and O, K and V shared across a group, MLP)."""
        return 2.0 + 2.0 / self.group_size + self.n_ffn * self.rho_ffn

    @property
    def sigma1(self) -> float:
        """Attention coefficient σ1 = (ρ ω²)^(−1/3)."""
        return (self.rho * self.omega**2) ** (-1.0 / 3.0)

    @property
    def sigma2(self) -> float:
        """Unembedding coefficient σ2 = (ρ / ω)^(1/3)."""
        return (self.rho / self.omega) ** (1.0 / 3.0)


PAPER_SHAPE = ArchitectureShape()


class Scenario(str, Enum):
    """Which teacher costs are charged (Table 2). Values are the CLI spellings."""

    BEST_CASE = "best-case"
    TEACHER_INFERENCE = "teacher-inference"
    TEACHER_PRETRAINING = "teacher-pretraining"
    TEACHER_PRETRAINING_INFERENCE = "teacher-pretraining-inference"

    @property
    def deltas(self) -> tuple[int, int]:
        """(δ_Lgt, δ_Pre): whether teacher logits and teacher pretraining are paid for."""
        return _DELTAS[self]

    @property
    def meaning(self) -> str:
        return _MEANING[self]


_DELTAS = {
    Scenario.BEST_CASE: (0, 0),
    Scenario.TEACHER_INFERENCE: (1, 0),
    Scenario.TEACHER_PRETRAINING: (0, 1),
    Scenario.TEACHER_PRETRAINING_INFERENCE: (1, 1),
}
_MEANING = {
    Scenario.BEST_CASE: "teacher fully amortized: only student training is counted",
    Scenario.TEACHER_INFERENCE: "teacher exists; its forward passes (logits) on the student's tokens are paid for",
    Scenario.TEACHER_PRETRAINING: "teacher is trained for this; its logits are stored and reused",
    Scenario.TEACHER_PRETRAINING_INFERENCE: "worst case: one teacher trained and run for one student",
}
SCENARIOS = tuple(s.value for s in Scenario)


def _positive(name: str, value) -> np.ndarray:
    import numpy as np

    arr = np.asarray(value, dtype=np.float64)
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        raise ValueError(f"{name} = {arr[bad].flat[0] if arr.ndim else float(arr)!r}: "
                         "must be a positive finite number.")
    return arr


def _nonneg(name: str, value) -> np.ndarray:
    import numpy as np

    arr = np.asarray(value, dtype=np.float64)
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        raise ValueError(f"{name} = {arr[bad].flat[0] if arr.ndim else float(arr)!r}: must be a finite number >= 0.")
    return arr


def _out(x):
    import numpy as np

    return float(x) if np.ndim(x) == 0 else x


def forward_flops_per_token(N, shape: ArchitectureShape = PAPER_SHAPE):
    """Eq. 69: forward FLOPs per token of a model with N non-embedding parameters. Broadcasts over arrays."""
    import numpy as np

    n = _positive("N (non-embedding parameters)", N)
    cbrt = np.cbrt(n)
    return _out(2.0 * n * (1.0 + shape.sigma1 * shape.n_ctx / cbrt + shape.sigma2 * shape.n_vocab / cbrt**2))


def supervised_flops(N, D, shape: ArchitectureShape = PAPER_SHAPE):
    """Training compute of plain next-token training: 3 F(N) D (forward + backward)."""
    import numpy as np

    return _out(3.0 * np.asarray(forward_flops_per_token(N, shape)) * _nonneg("D (training tokens)", D))


def distillation_flops(N_S, D_S, N_T, D_T, scenario: Scenario | str, shape: ArchitectureShape = PAPER_SHAPE):
    """Eq. 9: 3 F(N_S) D_S + F(N_T) (δ_Lgt D_S + δ_Pre · 3 D_T) for one of the four Table 2 scenarios."""
    import numpy as np

    scenario = Scenario(scenario)
    d_lgt, d_pre = scenario.deltas
    ds = _nonneg("D_S (distillation tokens)", D_S)
    student = 3.0 * np.asarray(forward_flops_per_token(N_S, shape)) * ds
    if d_lgt == 0 and d_pre == 0:
        return _out(student)
    dt = _nonneg("D_T (teacher pretraining tokens)", D_T) if d_pre else 0.0
    teacher = np.asarray(forward_flops_per_token(N_T, shape)) * (d_lgt * ds + d_pre * 3.0 * dt)
    return _out(student + teacher)
