"""The fitting objective: batched predictions equal the laws, analytic gradients equal finite differences.

Run: python -m pytest tests/scaling/test_fit_objective.py -q
"""

import numpy as np
import pytest

from crossdistill.scaling import PAPER, student_loss, supervised_loss
from crossdistill.scaling.laws import log_supervised_loss
from crossdistill.scaling.objective import DISTILLATION, JOINT, SUPERVISED, grid_points, huber_objective


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    N = np.exp(rng.uniform(np.log(1e8), np.log(1e10), 40))
    D = N * np.exp(rng.uniform(np.log(2), np.log(2000), 40))
    LT = rng.uniform(1.6, 3.5, 40)
    return {
        "N": N, "D": D, "LT": LT,
        "log_n": np.log(N), "log_d": np.log(D), "log_lt": np.log(LT),
        "log_ls_tilde": log_supervised_loss(np.log(N), np.log(D), PAPER.supervised),
    }


def test_batched_predictions_equal_the_laws(data):
    th_s = SUPERVISED.from_coefficients(PAPER.supervised)
    th_d = DISTILLATION.from_coefficients(PAPER.distillation)
    np.testing.assert_allclose(np.exp(SUPERVISED.predict_batch(th_s[None], data)[0]),
                               supervised_loss(data["N"], data["D"]), rtol=1e-12)
    np.testing.assert_allclose(np.exp(DISTILLATION.predict_batch(th_d[None], data)[0]),
                               student_loss(data["N"], data["D"], data["LT"]), rtol=1e-12)
    back = SUPERVISED.to_coefficients(th_s).as_dict()
    assert back == pytest.approx(PAPER.supervised.as_dict(), rel=1e-12)


@pytest.mark.parametrize(
    "spec, coefs",
    [(SUPERVISED, PAPER.supervised), (DISTILLATION, PAPER.distillation),
     (JOINT, (PAPER.supervised, PAPER.distillation))],
)
def test_analytic_gradient_matches_finite_differences(spec, coefs, data):
    data = {**data, "is_dis": np.arange(len(data["N"])) % 3 != 0}  # JOINT: a third of the runs are supervised
    rng = np.random.default_rng(0)
    for theta in (spec.from_coefficients(coefs),
                  spec.from_coefficients(coefs) * (1 + 0.05 * rng.normal(size=spec.n_params))):
        pred, jac = spec.predict_grad(theta, data)
        np.testing.assert_allclose(pred, spec.predict_batch(theta[None], data)[0], rtol=1e-13)
        h = 1e-6
        for k in range(spec.n_params):
            tp, tm = theta.copy(), theta.copy()
            tp[k] += h
            tm[k] -= h
            fd = (spec.predict_batch(tp[None], data)[0] - spec.predict_batch(tm[None], data)[0]) / (2 * h)
            np.testing.assert_allclose(jac[:, k], fd, rtol=1e-5, atol=1e-8, err_msg=spec.param_names[k])


def test_huber_objective_and_derivative():
    pred = np.array([0.0, 0.0, 0.0])
    target = np.array([5e-5, -1e-2, 0.0])
    val, d = huber_objective(pred, target, 1e-4)
    expected = (0.5 * 5e-5**2 / 1e-4 + (1e-2 - 0.5e-4)) / 3
    assert val == pytest.approx(expected)
    np.testing.assert_allclose(d, np.array([-0.5, 1.0, 0.0]) / 3)


def test_paper_grids_have_the_documented_sizes():
    assert grid_points(SUPERVISED).shape == (5 * 5 * 6 * 4 * 4 * 4, 6)
    assert len(grid_points(DISTILLATION, {**DISTILLATION.paper_grid, "log_A": (0,), "log_B": (0,)})) == 216000 // 25
    lo = np.array(SUPERVISED.bounds)[:, 0]
    assert (grid_points(SUPERVISED) >= lo).all()  # exponents of 0 are clipped into the L-BFGS-B box


def test_fast_distillation_grid_scores_equal_the_batched_objective(data):
    from crossdistill.scaling.objective import huber_value

    data = {**data, "log_l": np.log(student_loss(data["N"], data["D"], data["LT"])) + 0.003}
    grid = {**DISTILLATION.paper_grid, "log_A": (5, 10), "log_B": (5,), "c0": (0.5, 1.5)}
    pts = grid_points(DISTILLATION, grid)
    fast = DISTILLATION.grid_scores(pts, data, 1e-4)
    ref = huber_value(DISTILLATION.predict_batch(pts, data), data["log_l"], 1e-4)
    np.testing.assert_allclose(fast, ref, rtol=1e-12)
    np.testing.assert_allclose(ref, huber_objective(DISTILLATION.predict_batch(pts, data), data["log_l"], 1e-4)[0])
