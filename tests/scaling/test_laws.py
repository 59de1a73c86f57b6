"""Scaling laws: golden vectors, the naive reference formula, limits, U-shape, bad input.

Run: python -m pytest tests/scaling/test_laws.py -q
"""

import math

import numpy as np
import pytest

from crossdistill.scaling import (
    PAPER,
    DistillationCoefficients,
    SupervisedCoefficients,
    optimal_teacher_loss,
    student_loss,
    supervised_loss,
    tokens_for_supervised_loss,
)
from crossdistill.scaling.laws import log_supervised_loss

SUP = dict(E=1.220, A=3355.0, B=18186.0, alpha=0.408, beta=0.431, gamma=0.452)
DIS = dict(A=2243.0, B=24181.0, alpha=0.321, beta=0.637, gamma=0.764, c0=2.549, c1=522.6, f1=0.090, d1=1.315)


def naive_supervised(N, D, p=SUP):
    data = 0.0 if math.isinf(D) else p["B"] / D ** p["beta"]
    return p["E"] + (p["A"] / N ** p["alpha"] + data) ** p["gamma"]


def naive_student(NS, DS, LT, sup=SUP, d=DIS):
    ls = naive_supervised(NS, DS, sup)
    gap = (1.0 + (LT / (ls * d["d1"])) ** (1.0 / d["f1"])) ** (-d["c1"] * d["f1"])
    data = 0.0 if math.isinf(DS) else d["B"] / DS ** d["beta"]
    return LT + LT ** (-d["c0"]) * gap * (d["A"] / NS ** d["alpha"] + data) ** d["gamma"]


@pytest.mark.parametrize(
    "N, expected", [(7.747e9, 2.0036), (1.434e8, 2.8883)]
)
def test_supervised_golden(N, expected):
    assert abs(supervised_loss(N, 20 * N) - expected) < 1e-4


@pytest.mark.parametrize("LT, expected", [(2.2, 2.31695), (3.0, 3.00000)])
def test_student_golden(LT, expected):
    assert abs(student_loss(1e9, 2e10, LT) - expected) < 1e-4


def test_student_golden_intermediates():
    ls_tilde = supervised_loss(1e9, 2e10)
    assert abs(ls_tilde - 2.37469) < 1e-5
    x = 2.2 / (ls_tilde * PAPER.distillation.d1)
    assert abs(x - 0.70451) < 1e-5
    gap = (1 + x ** (1 / 0.09)) ** (-522.6 * 0.09)
    assert abs(gap - 0.38659) < 1e-5


def test_preset_is_table6():
    assert PAPER.supervised.as_dict() == SUP
    assert PAPER.distillation.as_dict() == DIS


def test_matches_naive_reference_on_random_inputs():
    rng = np.random.default_rng(0)
    N = np.exp(rng.uniform(np.log(1e7), np.log(1e12), 200))
    D = N * np.exp(rng.uniform(0, np.log(5000), 200))
    LT = rng.uniform(1.3, 6.0, 200)
    ref_sup = np.array([naive_supervised(n, d) for n, d in zip(N, D)])
    ref_stu = np.array([naive_student(n, d, t) for n, d, t in zip(N, D, LT)])
    np.testing.assert_allclose(supervised_loss(N, D), ref_sup, rtol=1e-12)
    np.testing.assert_allclose(student_loss(N, D, LT), ref_stu, rtol=1e-12)


def test_infinite_data():
    assert supervised_loss(1e9, math.inf) == pytest.approx(1.22 + (3355 * 1e9**-0.408) ** 0.452, rel=1e-14)
    assert student_loss(1e9, math.inf, 2.0) == pytest.approx(naive_student(1e9, math.inf, 2.0), rel=1e-12)


def test_limit_student_reaches_teacher_with_infinite_size_and_data():
    lt = 1.3  # a strong teacher (below d1 * E), so the gap factor stays near 1 and only the bracket shrinks
    gaps = [student_loss(10.0**k, 10.0 ** (k + 2), lt) - lt for k in (8, 10, 12, 14, 16, 18)]
    assert all(g > 0 for g in gaps)
    assert all(a > b for a, b in zip(gaps, gaps[1:]))
    assert gaps[-1] < 1e-3


def test_limit_weak_teacher_gives_student_equal_to_teacher():
    for lt in (4.0, 10.0, 100.0, 1e6):
        ls = student_loss(1e9, 2e10, lt)
        assert math.isfinite(ls) and abs(ls / lt - 1) < 1e-9


def test_capacity_gap_u_shape():
    lt = np.linspace(1.3, 3.0, 400)
    ls = student_loss(1e9, 2e10, lt)
    i = int(np.argmin(ls))
    assert 0 < i < len(lt) - 1  # interior minimum
    d = np.diff(ls)
    assert np.all(d[: i - 1] < 0) and np.all(d[i + 1 :] >= 0)  # falls, then rises: one U
    assert ls[0] - ls[i] > 0.01  # the strongest teacher is clearly worse than the best one: the capacity gap
    lt_opt, ls_opt = optimal_teacher_loss(1e9, 2e10)
    assert ls_opt <= ls.min() + 1e-9
    assert abs(lt_opt - lt[i]) < 0.01


def test_log_space_is_stable_at_extremes():
    assert math.isfinite(supervised_loss(1e30, 1e30))
    assert supervised_loss(1e30, 1e30) == pytest.approx(1.22, abs=1e-3)
    assert math.isfinite(student_loss(1e3, 1e3, 50.0))
    assert math.isfinite(student_loss(1e30, 1e30, 1e-3))


def test_tokens_for_supervised_loss_inverts_the_law():
    D = tokens_for_supervised_loss(1e9, 2.4)
    assert supervised_loss(1e9, D) == pytest.approx(2.4, rel=1e-10)
    assert tokens_for_supervised_loss(1e9, supervised_loss(1e9, math.inf) - 1e-6) == math.inf


@pytest.mark.parametrize(
    "call, field",
    [
        (lambda: supervised_loss(-1e9, 2e10), "N"),
        (lambda: supervised_loss(1e9, 0.0), "D"),
        (lambda: supervised_loss(1e9, float("nan")), "D"),
        (lambda: student_loss(1e9, 2e10, float("nan")), "L_T"),
        (lambda: student_loss(1e9, 2e10, -2.0), "L_T"),
        (lambda: student_loss(0, 2e10, 2.0), "N_S"),
        (lambda: student_loss(1e9, -5, 2.0), "D_S"),
    ],
)
def test_bad_inputs_name_the_field(call, field):
    with pytest.raises(ValueError, match=field):
        call()


def test_coefficients_are_frozen_and_validated():
    with pytest.raises(AttributeError):
        PAPER.supervised.E = 2.0
    with pytest.raises(ValueError, match="alpha"):
        SupervisedCoefficients(E=1.2, A=1.0, B=1.0, alpha=-0.1, beta=0.4, gamma=0.5)
    with pytest.raises(ValueError, match="c1"):
        DistillationCoefficients(**{**DIS, "c1": float("nan")})


def test_log_form_matches_direct_form():
    np.testing.assert_allclose(
        np.exp(log_supervised_loss(np.log(1e9), np.log(2e10), PAPER.supervised)), supervised_loss(1e9, 2e10)
    )
