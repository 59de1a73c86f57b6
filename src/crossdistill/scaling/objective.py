"""Log-space model predictions, their gradients and the Huber objective used to fit the laws (App. F.1-F.2).

A *law spec* maps an unconstrained-ish parameter vector θ to predictions of log L:

- supervised θ = [log A, log B, log E, α, β, γ]
- distillation θ = [log A′, log B′, α′, β′, γ′, c0, c1, f1, log d1]

``predict_batch`` evaluates many θ at once ([P, k] -> [P, n]) so the whole initialization grid can be scored with a
few numpy calls; ``predict_grad`` returns the analytic Jacobian for L-BFGS-B (checked against finite differences in
the tests).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from crossdistill.scaling.laws import DistillationCoefficients, SupervisedCoefficients

__all__ = ["LawSpec", "SUPERVISED", "DISTILLATION", "JOINT", "huber_objective", "huber_value", "grid_points"]


def _sigmoid_from_logs(x: np.ndarray, total: np.ndarray) -> np.ndarray:
    return np.exp(x - total)


@dataclass(frozen=True)
class LawSpec:
    """Everything the fitter needs to know about one law."""

    name: str
    param_names: tuple[str, ...]
    """Names of θ's entries, in order."""
    paper_grid: dict[str, tuple[float, ...]]
    """The paper's grid of initializations, per parameter."""
    bounds: tuple[tuple[float, float], ...]
    """L-BFGS-B box per parameter; grid values outside it (e.g. exponents of 0) are clipped onto it."""
    predict_batch: Callable[[np.ndarray, dict], np.ndarray]
    """([P, k] θ, data) -> [P, n] predicted log L."""
    predict_grad: Callable[[np.ndarray, dict], tuple[np.ndarray, np.ndarray]]
    """([k] θ, data) -> ([n] predicted log L, [n, k] Jacobian)."""
    to_coefficients: Callable[[np.ndarray], object]
    from_coefficients: Callable[[object], np.ndarray]
    grid_scores: Callable[[np.ndarray, dict, float], np.ndarray] | None = None
    """Optional fast scorer of a whole grid ([P, k] θ, data, δ) -> [P] objective; None = ``predict_batch``."""

    @property
    def n_params(self) -> int:
        return len(self.param_names)


# ------------------------------------------------------------------ supervised


def _sup_batch(theta: np.ndarray, data: dict) -> np.ndarray:
    a, b, e, al, be, ga = (theta[:, i : i + 1] for i in range(6))
    s = np.logaddexp(a - al * data["log_n"], b - be * data["log_d"])
    return np.logaddexp(e, ga * s)


def _sup_grad(theta: np.ndarray, data: dict) -> tuple[np.ndarray, np.ndarray]:
    a, b, e, al, be, ga = theta
    ln, ld = data["log_n"], data["log_d"]
    m, dd = a - al * ln, b - be * ld
    s = np.logaddexp(m, dd)
    out = np.logaddexp(e, ga * s)
    q_a = _sigmoid_from_logs(m, s)
    p_e = _sigmoid_from_logs(e, out)
    p_2 = _sigmoid_from_logs(ga * s, out)
    jac = np.stack([p_2 * ga * q_a, p_2 * ga * (1 - q_a), p_e,
                    -p_2 * ga * q_a * ln, -p_2 * ga * (1 - q_a) * ld, p_2 * s], 1)
    return out, jac


SUPERVISED = LawSpec(
    name="supervised",
    param_names=("log_A", "log_B", "log_E", "alpha", "beta", "gamma"),
    paper_grid={
        "log_A": (0, 5, 10, 15, 20),
        "log_B": (0, 5, 10, 15, 20),
        "log_E": (-1, -0.5, 0, 0.5, 1, 1.5),
        "alpha": (0, 0.5, 1, 1.5),
        "beta": (0, 0.5, 1, 1.5),
        "gamma": (0, 0.5, 1, 1.5),
    },
    bounds=((-10, 50), (-10, 50), (-5, 3), (1e-4, 5), (1e-4, 5), (1e-4, 5)),
    predict_batch=_sup_batch,
    predict_grad=_sup_grad,
    to_coefficients=lambda t: SupervisedCoefficients(
        E=math.exp(t[2]), A=math.exp(t[0]), B=math.exp(t[1]), alpha=float(t[3]), beta=float(t[4]), gamma=float(t[5])
    ),
    from_coefficients=lambda c: np.array([math.log(c.A), math.log(c.B), math.log(c.E), c.alpha, c.beta, c.gamma]),
)


# ------------------------------------------------------------------ distillation


def _dis_batch(theta: np.ndarray, data: dict) -> np.ndarray:
    a, b, al, be, ga, c0, c1, f1, g = (theta[:, i : i + 1] for i in range(9))
    t = data["log_lt"]
    s = np.logaddexp(a - al * data["log_n"], b - be * data["log_d"])
    sp = np.logaddexp(0.0, (t - data["log_ls_tilde"] - g) / f1)
    return np.logaddexp(t, -c0 * t - c1 * f1 * sp + ga * s)


def _dis_grad(theta: np.ndarray, data: dict) -> tuple[np.ndarray, np.ndarray]:
    a, b, al, be, ga, c0, c1, f1, g = theta
    t, ln, ld = data["log_lt"], data["log_n"], data["log_d"]
    m, dd = a - al * ln, b - be * ld
    s = np.logaddexp(m, dd)
    z = (t - data["log_ls_tilde"] - g) / f1
    sp = np.logaddexp(0.0, z)
    sig_z = np.exp(z - sp)
    u = -c0 * t - c1 * f1 * sp + ga * s
    out = np.logaddexp(t, u)
    p_u = np.exp(u - out)
    q_a = np.exp(m - s)
    du = np.stack(
        [
            ga * q_a,
            ga * (1 - q_a),
            -ga * q_a * ln,
            -ga * (1 - q_a) * ld,
            s,
            -t,
            -f1 * sp,
            -c1 * sp + c1 * sig_z * z,
            c1 * sig_z,
        ],
        1,
    )
    return out, p_u[:, None] * du


def _dis_grid_scores(pts: np.ndarray, data: dict, delta: float, chunk_elems: int = 4_000_000) -> np.ndarray:
    """Objective at every grid point, [P]. The (N, D) bracket depends only on (log A′, log B′, α′, β′) and the
    teacher term only on (c1, f1, log d1), so both are computed once per distinct combination (225 and 80 on the
    paper's grid instead of 216,000) and gathered; only the outer log-sum-exp runs per grid point."""
    t, y = data["log_lt"], data["log_l"]
    kb, inv_b = np.unique(pts[:, :4], axis=0, return_inverse=True)
    bracket = np.logaddexp(kb[:, 0:1] - kb[:, 2:3] * data["log_n"], kb[:, 1:2] - kb[:, 3:4] * data["log_d"])
    kg, inv_g = np.unique(pts[:, 6:9], axis=0, return_inverse=True)
    teacher = -kg[:, 0:1] * kg[:, 1:2] * np.logaddexp(0.0, (t - data["log_ls_tilde"] - kg[:, 2:3]) / kg[:, 1:2])
    chunk = max(1, chunk_elems // max(len(y), 1))
    scores = np.empty(len(pts))
    for i in range(0, len(pts), chunk):
        sl = slice(i, i + chunk)
        u = teacher[inv_g.ravel()[sl]] + pts[sl, 4:5] * bracket[inv_b.ravel()[sl]] - pts[sl, 5:6] * t
        scores[sl] = huber_value(np.logaddexp(t, u), y, delta)
    return scores


DISTILLATION = LawSpec(
    name="distillation",
    param_names=("log_A", "log_B", "alpha", "beta", "gamma", "c0", "c1", "f1", "log_d1"),
    paper_grid={
        "log_A": (0, 5, 10, 15, 20),
        "log_B": (0, 5, 10, 15, 20),
        "alpha": (0, 0.5, 1),
        "beta": (0, 0.5, 1),
        "gamma": (0, 0.5, 1),
        "c0": (0, 0.5, 1, 1.5),
        "c1": (0, 0.5, 1, 1.5),
        "f1": (0, 0.5, 1, 1.5),
        "log_d1": (-1, -0.5, 0, 0.5, 1),
    },
    bounds=((-10, 50), (-10, 50), (1e-4, 5), (1e-4, 5), (1e-4, 5), (1e-6, 50), (1e-6, 5000), (1e-3, 10), (-3, 3)),
    grid_scores=_dis_grid_scores,
    predict_batch=_dis_batch,
    predict_grad=_dis_grad,
    to_coefficients=lambda t: DistillationCoefficients(
        A=math.exp(t[0]), B=math.exp(t[1]), alpha=float(t[2]), beta=float(t[3]), gamma=float(t[4]),
        c0=float(t[5]), c1=float(t[6]), f1=float(t[7]), d1=math.exp(t[8]),
    ),
    from_coefficients=lambda c: np.array(
        [math.log(c.A), math.log(c.B), c.alpha, c.beta, c.gamma, c.c0, c.c1, c.f1, math.log(c.d1)]
    ),
)


# ------------------------------------------------------------------ joint (both laws, shared supervised coefficients)


def _joint_batch(theta: np.ndarray, data: dict) -> np.ndarray:
    sup = _sup_batch(theta[:, :6], data)  # [P, n]: the prediction of supervised runs, L̃_S of distillation runs
    dis = _dis_batch(theta[:, 6:], {**data, "log_ls_tilde": sup})
    return np.where(data["is_dis"], dis, sup)


def _joint_grad(theta: np.ndarray, data: dict) -> tuple[np.ndarray, np.ndarray]:
    sup, jac_sup = _sup_grad(theta[:6], data)
    dis, jac_dis = _dis_grad(theta[6:], {**data, "log_ls_tilde": sup})
    # log L̃_S and log d1 enter Eq. 8 only through their sum (z = (log L_T − log L̃_S − log d1) / f1), so
    # ∂ log L_S / ∂ log L̃_S is the log_d1 column of the distillation Jacobian; chain it into the supervised one.
    chain = jac_dis[:, 8:9] * jac_sup
    is_dis = data["is_dis"][:, None]
    jac = np.concatenate([np.where(is_dis, chain, jac_sup), np.where(is_dis, jac_dis, 0.0)], 1)
    return np.where(data["is_dis"], dis, sup), jac


JOINT = LawSpec(
    name="joint",
    param_names=tuple("sup_" + n for n in SUPERVISED.param_names) + tuple("dis_" + n for n in DISTILLATION.param_names),
    paper_grid={},
    bounds=SUPERVISED.bounds + DISTILLATION.bounds,
    predict_batch=_joint_batch,
    predict_grad=_joint_grad,
    to_coefficients=lambda t: (SUPERVISED.to_coefficients(t[:6]), DISTILLATION.to_coefficients(t[6:])),
    from_coefficients=lambda c: np.concatenate([SUPERVISED.from_coefficients(c[0]),
                                                DISTILLATION.from_coefficients(c[1])]),
)


# ------------------------------------------------------------------ objective


def huber_objective(pred: np.ndarray, target: np.ndarray, delta: float, weights: np.ndarray | None = None):
    """Mean Huber_δ(pred − target) / δ over the last axis, and its derivative w.r.t. ``pred``.

    Dividing by δ does not move the minimum; it keeps the objective O(|residual|) instead of O(δ·|residual|), so
    L-BFGS-B's absolute tolerances stay meaningful with δ = 1e-4.
    """
    r = pred - target
    abs_r = np.abs(r)
    loss = np.where(abs_r <= delta, 0.5 * r * r / delta, abs_r - 0.5 * delta)
    dloss = np.clip(r, -delta, delta) / delta
    n = r.shape[-1]
    if weights is None:
        return loss.sum(-1) / n, dloss / n
    return (loss * weights).sum(-1) / weights.sum(), dloss * weights / weights.sum()


def huber_value(pred: np.ndarray, target: np.ndarray, delta: float) -> np.ndarray:
    """The value of :func:`huber_objective` alone (no derivative), for scoring many grid points."""
    abs_r = np.abs(pred - target)
    return np.where(abs_r <= delta, 0.5 * abs_r * abs_r / delta, abs_r - 0.5 * delta).mean(-1)


def grid_points(spec: LawSpec, grid: dict[str, tuple[float, ...]] | None = None) -> np.ndarray:
    """[P, k] initializations: the Cartesian product of ``grid`` (default: the paper's), clipped to the bounds."""
    grid = spec.paper_grid if grid is None else grid
    missing = set(spec.param_names) - set(grid)
    if missing:
        raise ValueError(f"grid for the {spec.name} law lacks values for {sorted(missing)}.")
    pts = np.array(list(itertools.product(*(grid[name] for name in spec.param_names))), dtype=np.float64)
    lo, hi = np.array(spec.bounds).T
    return np.clip(pts, lo, hi)
