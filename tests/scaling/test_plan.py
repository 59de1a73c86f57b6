"""Compute-optimal planning (SLSQP) and should-i-distill, checked against brute force and the paper's findings.

Run: python -m pytest tests/scaling/test_plan.py -q
"""

import math

import numpy as np
import pytest

from crossdistill.scaling import (
    distillation_flops,
    forward_flops_per_token,
    optimal_teacher_loss,
    student_loss,
    supervised_loss,
)
from crossdistill.scaling.plan import plan_distillation, plan_supervised, should_distill


def test_supervised_alternative_spends_the_budget():
    p = plan_supervised(1e21, 1e9)
    assert 3 * forward_flops_per_token(1e9) * p.D == pytest.approx(1e21)
    assert p.loss == pytest.approx(supervised_loss(1e9, p.D))


def test_best_case_uses_the_teacher_optimal_loss():
    p = plan_distillation(1e21, 1e9, "best-case")
    assert p.N_T is None and p.D_T is None
    assert p.D_S == pytest.approx(1e21 / (3 * forward_flops_per_token(1e9)))
    lt, ls = optimal_teacher_loss(1e9, p.D_S)
    assert p.L_T == pytest.approx(lt, rel=1e-6) and p.L_S == pytest.approx(ls, rel=1e-9)


@pytest.mark.parametrize("scenario", ["teacher-pretraining", "teacher-pretraining-inference"])
def test_slsqp_spends_exactly_the_budget_and_beats_brute_force(scenario):
    C, NS = 1e21, 1e9
    p = plan_distillation(C, NS, scenario)
    total = distillation_flops(NS, p.D_S, p.N_T, p.D_T, scenario)
    assert total == pytest.approx(C, rel=1e-5)
    # Brute force: teacher size x share of the budget given to the student, on a log grid.
    FS = forward_flops_per_token(NS)
    best = math.inf
    d_lgt = 1 if scenario.endswith("inference") else 0
    for NT in np.geomspace(1e8, 1e11, 61):
        FT = forward_flops_per_token(NT)
        for frac in np.linspace(0.02, 0.98, 97):
            DS = frac * C / (3 * FS + d_lgt * FT)
            DT = (1 - frac) * C / (3 * FT)
            best = min(best, student_loss(NS, DS, supervised_loss(NT, DT)))
    assert p.L_S <= best + 1e-4, (p.L_S, best)


def test_teacher_inference_overtrains_the_teacher():
    p = plan_distillation(1e22, 1e9, "teacher-inference")  # teacher pretraining is free: D_T hits the 1e17 bound
    assert p.D_T == pytest.approx(1e17, rel=1e-3)
    assert p.flops_teacher_pretraining == 0.0


def test_paper_findings_on_who_wins():
    # One student, teacher trained for it: supervised is preferable (Busbridge et al. 2025, §5).
    for C in (1e20, 1e24):
        assert should_distill(C, 1e9, "teacher-pretraining-inference").winner == "supervised"
    # Teacher already amortized: distillation wins at small compute, supervised catches up at large compute.
    small = should_distill(1e20, 1e9, "best-case")
    large = should_distill(1e25, 1e9, "best-case")
    assert small.winner == "distillation" and large.winner == "supervised"
    assert small.supervised_compute_to_match > 1e20
    assert small.delta_nats == pytest.approx(small.supervised.loss - small.distill.L_S)


def test_existing_teacher():
    d = should_distill(1e21, 5e8, "teacher-inference", teacher_loss=2.3, teacher_params=7e9)
    FS, FT = forward_flops_per_token(5e8), forward_flops_per_token(7e9)
    assert d.distill.D_S == pytest.approx(1e21 / (3 * FS + FT))
    assert d.distill.L_S == pytest.approx(student_loss(5e8, d.distill.D_S, 2.3))
    free = should_distill(1e21, 5e8, "best-case", teacher_loss=2.3)
    assert free.distill.D_S > d.distill.D_S


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(compute=1e21, N_S=5e8, scenario="teacher-inference", teacher_loss=2.3), "teacher params"),
        (dict(compute=1e21, N_S=5e8, scenario="teacher-pretraining", teacher_loss=2.3), "existing teacher"),
        (dict(compute=1e10, N_S=1e9), "too small"),
        (dict(compute=-1.0, N_S=1e9), "compute"),
        (dict(compute=1e21, N_S=float("nan")), "student params"),
        (dict(compute=1e21, N_S=1e9, scenario="nope"), "nope"),
    ],
)
def test_bad_planning_inputs(kwargs, match):
    with pytest.raises(ValueError, match=match):
        should_distill(**kwargs)
