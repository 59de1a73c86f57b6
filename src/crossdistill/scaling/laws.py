"""The supervised (Eq. 1) and distillation (Eq. 8) scaling laws of Busbridge et al. 2025 (arXiv 2502.08606).

Everything is evaluated in log space with log-sum-exp (the form the paper fits in, App. F.1), so very weak teachers,
huge token counts and ``D = inf`` neither overflow nor produce ``0 ** negative``:

    log L   = LSE[log E, γ · LSE(log A − α log N, log B − β log D)]
    log L_S = LSE[log L_T, −c0 log L_T − c1 f1 · softplus((log L_T − log L̃_S − log d1) / f1)
                           + γ′ · LSE(log A′ − α′ log N_S, log B′ − β′ log D_S)]

with L̃_S = L(N_S, D_S) from the supervised law. N is the number of NON-embedding parameters, D the number of training
tokens and L a validation cross-entropy in nats. All functions broadcast over numpy arrays and return floats for
scalar input.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy loads on first use, so `crossdistill scaling ... --help` stays instant
    import numpy as np

__all__ = [
    "SupervisedCoefficients",
    "DistillationCoefficients",
    "LawPreset",
    "PAPER",
    "PRESETS",
    "supervised_loss",
    "student_loss",
    "teacher_loss",
    "optimal_teacher_loss",
    "tokens_for_supervised_loss",
]


@dataclass(frozen=True, slots=True)
class SupervisedCoefficients:
    """Coefficients of the supervised law L(N, D) = E + (A / N^α + B / D^β)^γ (Eq. 1). All must be positive."""

    E: float
    """Irreducible loss (nats)."""
    A: float
    """Model-size coefficient."""
    B: float
    """Data coefficient."""
    alpha: float
    """Model-size exponent α."""
    beta: float
    """Data exponent β."""
    gamma: float
    """Outer exponent γ (Chinchilla ties γ = 1; the paper fits it)."""

    def __post_init__(self) -> None:
        _check_positive_fields(self)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class DistillationCoefficients:
    """Coefficients of the distillation law (Eq. 8). A′, B′ are separate from the supervised A, B. All positive."""

    A: float
    """Student-size coefficient A′."""
    B: float
    """Distillation-token coefficient B′."""
    alpha: float
    """Student-size exponent α′."""
    beta: float
    """Distillation-token exponent β′."""
    gamma: float
    """Outer exponent γ′ of the (N_S, D_S) bracket."""
    c0: float
    """Exponent of the L_T^(−c0) factor (the part that grows as the teacher improves: the capacity gap)."""
    c1: float
    """Broken-power-law exponent; the gap factor decays like (L_T / (d1 L̃_S))^(−c1) for weak teachers."""
    f1: float
    """Sharpness of the break (small f1 = sharp switch around L_T = d1 · L̃_S)."""
    d1: float
    """Location of the break, as a ratio of teacher loss to the student's supervised loss."""

    def __post_init__(self) -> None:
        _check_positive_fields(self)

    def as_dict(self) -> dict[str, float]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class LawPreset:
    """A named pair of supervised and distillation coefficients."""

    name: str
    """Short identifier used by the CLI (``--preset``)."""
    supervised: SupervisedCoefficients
    """Coefficients of Eq. 1 (also used for the student's supervised loss L̃_S inside Eq. 8)."""
    distillation: DistillationCoefficients
    """Coefficients of Eq. 8."""
    description: str = ""
    """Where the numbers come from and where they apply."""


def _check_positive_fields(obj) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(
                f"{type(obj).__name__}.{f.name} = {value!r}: every scaling-law coefficient must be a finite positive "
                "number (the law's limits rely on it)."
            )


# Busbridge et al. 2025, Table 6 point estimates.
PAPER = LawPreset(
    name="busbridge2025",
    supervised=SupervisedCoefficients(E=1.220, A=3355.0, B=18186.0, alpha=0.408, beta=0.431, gamma=0.452),
    distillation=DistillationCoefficients(
        A=2243.0, B=24181.0, alpha=0.321, beta=0.637, gamma=0.764, c0=2.549, c1=522.6, f1=0.090, d1=1.315
    ),
    description=(
        "Busbridge et al. 2025, Table 6: muP(simple) transformers (d_model/n_layers = 128), vocab 32168, context "
        "4096, English C4, pure distillation (lambda = 1, tau = 1). Losses are C4 validation cross-entropy in nats; "
        "refit on your own runs before trusting absolute numbers for another setup."
    ),
)

PRESETS: dict[str, LawPreset] = {PAPER.name: PAPER, "paper": PAPER}


# ---------------------------------------------------------------- validation


def _as_positive(name: str, value, *, allow_inf: bool = False) -> np.ndarray:
    """Return ``value`` as a float64 array after checking every entry is positive (and finite unless allowed)."""
    import numpy as np

    arr = np.asarray(value, dtype=np.float64)
    bad = np.isnan(arr) | (arr <= 0) | (np.isinf(arr) & (not allow_inf))
    if bad.any():
        first = arr[bad].flat[0] if arr.ndim else float(arr)
        extra = "; use inf for infinite data" if allow_inf else ""
        raise ValueError(f"{name} = {first!r}: must be a positive finite number{extra}.")
    return arr


def _out(x: np.ndarray):
    import numpy as np

    return float(x) if np.ndim(x) == 0 else x


# ---------------------------------------------------------------- laws (log space)


def log_supervised_loss(log_n, log_d, c: SupervisedCoefficients) -> np.ndarray:
    """log L(N, D) from log N and log D (log D may be +inf for infinite data). Broadcasts."""
    import numpy as np

    model_term = math.log(c.A) - c.alpha * np.asarray(log_n)
    data_term = math.log(c.B) - c.beta * np.asarray(log_d)  # -inf when D = inf: drops out of the LSE
    return np.logaddexp(math.log(c.E), c.gamma * np.logaddexp(model_term, data_term))


def log_student_loss(log_ns, log_ds, log_lt, sup: SupervisedCoefficients, dis: DistillationCoefficients):
    """log L_S(N_S, D_S, L_T) from logs of its arguments (Eq. 8 in the log-sum-exp form the paper fits). Broadcasts."""
    import numpy as np

    log_lt = np.asarray(log_lt, dtype=np.float64)
    log_ls_tilde = log_supervised_loss(log_ns, log_ds, sup)
    z = (log_lt - log_ls_tilde - math.log(dis.d1)) / dis.f1
    log_gap = -dis.c1 * dis.f1 * np.logaddexp(0.0, z)  # log of the broken-power-law factor, never underflows
    bracket = np.logaddexp(math.log(dis.A) - dis.alpha * np.asarray(log_ns),
                           math.log(dis.B) - dis.beta * np.asarray(log_ds))
    return np.logaddexp(log_lt, -dis.c0 * log_lt + log_gap + dis.gamma * bracket)


def supervised_loss(N, D, preset: LawPreset | SupervisedCoefficients = PAPER):
    """Eq. 1: validation cross-entropy of a model with N non-embedding parameters trained on D tokens.

    Args:
        N: non-embedding parameters, positive (scalar or array).
        D: training tokens, positive; ``math.inf`` gives the infinite-data limit L(N) = E + (A N^−α)^γ.
        preset: a :class:`LawPreset` or bare :class:`SupervisedCoefficients`; defaults to the paper's Table 6.
    """
    import numpy as np

    c = preset.supervised if isinstance(preset, LawPreset) else preset
    n = _as_positive("N (non-embedding parameters)", N)
    d = _as_positive("D (training tokens)", D, allow_inf=True)
    return _out(np.exp(log_supervised_loss(np.log(n), np.log(d), c)))


teacher_loss = supervised_loss  # the teacher's N_T, D_T enter the distillation law only through L_T = L(N_T, D_T)


def student_loss(N_S, D_S, L_T, preset: LawPreset = PAPER):
    """Eq. 8: validation cross-entropy of a student with N_S non-embedding parameters distilled on D_S tokens
    from a teacher whose validation cross-entropy is L_T (nats).

    L_S → L_T as N_S, D_S → ∞ and as L_T → ∞ (a random teacher gives a random student). ``D_S = math.inf`` allowed.
    """
    import numpy as np

    ns = _as_positive("N_S (student non-embedding parameters)", N_S)
    ds = _as_positive("D_S (distillation tokens)", D_S, allow_inf=True)
    lt = _as_positive("L_T (teacher cross-entropy, nats)", L_T)
    log_ls = log_student_loss(np.log(ns), np.log(ds), np.log(lt), preset.supervised, preset.distillation)
    return _out(np.exp(log_ls))


def optimal_teacher_loss(N_S: float, D_S: float, preset: LawPreset = PAPER, *,
                         bounds=(1.0, 20.0)) -> tuple[float, float]:
    """The teacher loss L_T* that minimizes the student's loss for a fixed student (the bottom of the capacity-gap U).

    Returns ``(L_T*, L_S(N_S, D_S, L_T*))``. The search is over log L_T in ``bounds`` (nats); the U-shape has a
    single interior minimum for the paper's coefficients, found by bounded Brent on a bracket refined on a grid.
    """
    import numpy as np

    _as_positive("N_S", N_S)
    _as_positive("D_S", D_S, allow_inf=True)
    lo, hi = math.log(bounds[0]), math.log(bounds[1])
    grid = np.linspace(lo, hi, 241)
    vals = log_student_loss(math.log(N_S), math.log(D_S), grid, preset.supervised, preset.distillation)
    i = int(np.argmin(vals))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    from scipy.optimize import minimize_scalar  # here, not at import: `crossdistill scaling --help` skips scipy

    res = minimize_scalar(
        lambda t: float(log_student_loss(math.log(N_S), math.log(D_S), t, preset.supervised, preset.distillation)),
        bounds=(a, b),
        method="bounded",
        options={"xatol": 1e-10},
    )
    lt = math.exp(res.x) if res.fun <= vals[i] else math.exp(grid[i])
    return lt, float(student_loss(N_S, D_S, lt, preset))


def tokens_for_supervised_loss(N: float, target: float, preset: LawPreset | SupervisedCoefficients = PAPER) -> float:
    """Tokens D with L(N, D) = target, or ``inf`` when the target is at or below the model's infinite-data loss."""
    c = preset.supervised if isinstance(preset, LawPreset) else preset
    _as_positive("N", N)
    floor = supervised_loss(N, math.inf, c)
    if target <= floor:
        return math.inf
    # (target − E)^(1/γ) = A N^−α + B D^−β  ⇒  D = (B / ((target − E)^(1/γ) − A N^−α))^(1/β)
    rest = (target - c.E) ** (1.0 / c.gamma) - c.A * N ** (-c.alpha)
    return (c.B / rest) ** (1.0 / c.beta)
