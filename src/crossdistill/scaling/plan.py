"""Compute-optimal distillation (Eq. 10, §5 of the paper) and the supervised alternative at the same compute.

For a student of size N_S and a budget of C FLOPs:

    D_S*, N_T*, D_T* = argmin L_S(N_S, D_S, L_T = L(N_T, D_T))  s.t.  FLOPs(scenario) = C,
    N_T, D_S, D_T ∈ [1M, 100P]

solved with SciPy SLSQP in log10 space from several starting splits of the budget (the capacity gap makes the
objective sharply curved, so one start can stall). In the best case (teacher cost not counted) only D_S is fixed by
the budget and the teacher enters through its loss alone: the plan gives the teacher-optimal L_T* for the student.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import minimize

from crossdistill.scaling.flops import PAPER_SHAPE, ArchitectureShape, Scenario, forward_flops_per_token
from crossdistill.scaling.laws import (
    PAPER,
    LawPreset,
    log_student_loss,
    log_supervised_loss,
    optimal_teacher_loss,
    student_loss,
    supervised_loss,
    tokens_for_supervised_loss,
)

__all__ = ["DistillationPlan", "SupervisedPlan", "Decision", "plan_distillation", "plan_supervised", "should_distill"]

LOG10_MIN, LOG10_MAX = 6.0, 17.0  # the paper's bounds: 1M .. 100P


@dataclass(frozen=True)
class SupervisedPlan:
    """Plain next-token training of the same student on the whole budget."""

    compute: float
    N: float
    D: float
    loss: float


@dataclass(frozen=True)
class DistillationPlan:
    """The compute-optimal distillation for one student, budget and scenario."""

    scenario: str
    compute: float
    N_S: float
    D_S: float
    L_T: float
    """Teacher cross-entropy of the plan (the teacher-optimal L_T* in the best case)."""
    L_S: float
    """Predicted student cross-entropy."""
    N_T: float | None
    """Teacher size; None in the best case, where any teacher with loss L_T will do."""
    D_T: float | None
    """Teacher pretraining tokens; None in the best case."""
    flops_student: float
    flops_teacher_inference: float
    flops_teacher_pretraining: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Decision:
    """Distillation vs supervised training of the same student at the same compute."""

    distill: DistillationPlan
    supervised: SupervisedPlan
    winner: str
    """``distillation`` or ``supervised``."""
    delta_nats: float
    """Supervised loss minus distilled loss (positive = distillation better)."""
    delta_percent: float
    """``delta_nats`` relative to the supervised loss, in percent."""
    supervised_compute_to_match: float
    """FLOPs plain training of the student would need to reach the distilled loss (inf if it never can)."""

    def to_dict(self) -> dict:
        return {
            "winner": self.winner,
            "delta_nats": self.delta_nats,
            "delta_percent": self.delta_percent,
            "supervised_compute_to_match": self.supervised_compute_to_match,
            "distillation": self.distill.to_dict(),
            "supervised": asdict(self.supervised),
        }


def _check(name: str, value: float) -> float:
    if value is None or not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
        raise ValueError(f"{name} = {value!r}: must be a positive finite number.")
    return float(value)


def _student_tokens(compute: float, N_S: float, shape: ArchitectureShape, extra_per_token: float = 0.0) -> float:
    per_token = 3.0 * forward_flops_per_token(N_S, shape) + extra_per_token
    D = compute / per_token
    if D < 10**LOG10_MIN:
        raise ValueError(
            f"compute = {compute:.3g} FLOPs is too small for a {N_S:.3g}-parameter student: it buys {D:.3g} tokens, "
            f"below the planning bound of 1e6 (need at least {per_token * 10**LOG10_MIN:.3g} FLOPs)."
        )
    return D


def plan_supervised(compute: float, N_S: float, preset: LawPreset = PAPER,
                    shape: ArchitectureShape = PAPER_SHAPE) -> SupervisedPlan:
    """Train the student alone on the whole budget: D = C / (3 F(N_S))."""
    compute, N_S = _check("compute", compute), _check("student params", N_S)
    D = _student_tokens(compute, N_S, shape)
    return SupervisedPlan(compute=compute, N=N_S, D=D, loss=float(supervised_loss(N_S, D, preset)))


def plan_distillation(compute: float, N_S: float, scenario: Scenario | str = Scenario.TEACHER_PRETRAINING_INFERENCE,
                      preset: LawPreset = PAPER, shape: ArchitectureShape = PAPER_SHAPE) -> DistillationPlan:
    """Compute-optimal D_S, N_T, D_T (and the resulting L_T, L_S) for a student of size N_S and a budget in FLOPs."""
    compute, N_S = _check("compute", compute), _check("student params", N_S)
    scenario = Scenario(scenario)
    d_lgt, d_pre = scenario.deltas
    F_S = forward_flops_per_token(N_S, shape)
    lt_floor = float(supervised_loss(10**LOG10_MAX, 10**LOG10_MAX, preset))  # best teacher inside the bounds

    if scenario is Scenario.BEST_CASE:
        D_S = _student_tokens(compute, N_S, shape)
        L_T, L_S = optimal_teacher_loss(N_S, D_S, preset, bounds=(lt_floor, 20.0))
        return DistillationPlan(scenario.value, compute, N_S, D_S, L_T, L_S, None, None, 3 * F_S * D_S, 0.0, 0.0)

    _student_tokens(compute, N_S, shape)  # early, clear error when the budget cannot even train the student
    log_c, log_ns = math.log(compute), math.log(N_S)
    ln10 = math.log(10.0)

    def flops(x):
        D_S, N_T, D_T = 10.0 ** np.asarray(x)
        F_T = forward_flops_per_token(N_T, shape)
        return 3 * F_S * D_S, d_lgt * F_T * D_S, d_pre * 3 * F_T * D_T

    def objective(x):
        log_lt = log_supervised_loss(x[1] * ln10, x[2] * ln10, preset.supervised)
        return float(log_student_loss(log_ns, x[0] * ln10, log_lt, preset.supervised, preset.distillation))

    def constraint(x):
        return math.log(sum(flops(x))) - log_c

    best = None
    for frac in (0.9, 0.5, 0.1):  # share of the budget spent on the student
        for ratio in (1.0, 10.0, 100.0):  # teacher size / student size
            N_T = min(max(N_S * ratio, 10**LOG10_MIN), 10**LOG10_MAX)
            F_T = forward_flops_per_token(N_T, shape)
            D_S = frac * compute / (3 * F_S + d_lgt * F_T) if d_pre else compute / (3 * F_S + F_T)
            D_T = (1 - frac) * compute / (3 * F_T) if d_pre else 1e15
            x0 = np.clip(np.log10([D_S, N_T, D_T]), LOG10_MIN, LOG10_MAX)
            res = minimize(objective, x0, method="SLSQP", bounds=[(LOG10_MIN, LOG10_MAX)] * 3,
                           constraints=[{"type": "eq", "fun": constraint}], options={"maxiter": 500, "ftol": 1e-12})
            if abs(constraint(res.x)) > 1e-6:
                continue
            if best is None or res.fun < best.fun:
                best = res
    if best is None:
        raise RuntimeError(
            f"SLSQP found no plan that spends exactly {compute:.3g} FLOPs for scenario {scenario.value}; the budget "
            "may be outside what the 1M..100P bounds allow."
        )
    D_S, N_T, D_T = (10.0**v for v in best.x)
    f_s, f_inf, f_pre = flops(best.x)
    L_T = float(supervised_loss(N_T, D_T, preset))
    return DistillationPlan(scenario.value, compute, N_S, D_S, L_T, float(student_loss(N_S, D_S, L_T, preset)),
                            N_T, D_T, float(f_s), float(f_inf), float(f_pre))


def _fixed_teacher(compute: float, N_S: float, L_T: float, N_T: float | None, scenario: Scenario,
                   preset: LawPreset, shape: ArchitectureShape) -> DistillationPlan:
    d_lgt, d_pre = scenario.deltas
    if d_pre:
        raise ValueError(
            f"scenario = {scenario.value!r} with an existing teacher (--teacher-loss): an existing teacher needs no "
            "pretraining; use teacher-inference (logits computed on the fly) or best-case (logits already paid for)."
        )
    if d_lgt and N_T is None:
        raise ValueError("teacher params missing: the teacher-inference scenario charges F(N_T) per student token; "
                         "pass --teacher-params (non-embedding parameters of the teacher).")
    F_T = forward_flops_per_token(N_T, shape) if d_lgt else 0.0
    D_S = _student_tokens(compute, N_S, shape, extra_per_token=F_T)
    F_S = forward_flops_per_token(N_S, shape)
    return DistillationPlan(scenario.value, compute, N_S, D_S, L_T, float(student_loss(N_S, D_S, L_T, preset)),
                            N_T, None, 3 * F_S * D_S, F_T * D_S, 0.0)


def should_distill(compute: float, N_S: float, scenario: Scenario | str = Scenario.TEACHER_PRETRAINING_INFERENCE,
                   teacher_loss: float | None = None, teacher_params: float | None = None,
                   preset: LawPreset = PAPER, shape: ArchitectureShape = PAPER_SHAPE) -> Decision:
    """Compare distillation with training the same student alone on the same compute.

    With ``teacher_loss`` the teacher already exists (scenario best-case or teacher-inference); without it the
    teacher is chosen compute-optimally for the scenario (:func:`plan_distillation`).
    """
    scenario = Scenario(scenario)
    if teacher_loss is not None:
        _check("teacher loss", teacher_loss)
        if teacher_params is not None:
            _check("teacher params", teacher_params)
        plan = _fixed_teacher(compute, N_S, teacher_loss, teacher_params, scenario, preset, shape)
    else:
        plan = plan_distillation(compute, N_S, scenario, preset, shape)
    sup = plan_supervised(compute, N_S, preset, shape)
    delta = sup.loss - plan.L_S
    D_match = tokens_for_supervised_loss(N_S, plan.L_S, preset)
    c_match = 3.0 * forward_flops_per_token(N_S, shape) * D_match if math.isfinite(D_match) else math.inf
    return Decision(plan, sup, "distillation" if delta > 0 else "supervised", delta, 100.0 * delta / sup.loss, c_match)
