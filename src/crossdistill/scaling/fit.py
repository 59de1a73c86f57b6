"""Fit the supervised and distillation laws to training runs (App. F.1-F.2 of the paper).

Procedure (per law):

1. Check the runs can identify every coefficient (enough runs, at least three distinct values of each input, N and
   D not locked together) and refuse with a message that says what to add otherwise.
2. Score the objective Σ Huber_δ(log L̂ − log L) (δ = 1e-4) at **every** point of the paper's grid of initializations
   in a few vectorized numpy calls (9,600 points for the supervised law, 216,000 for the distillation law), and
   start L-BFGS-B (analytic gradient) only from the ``top_m`` best points (default 16 supervised, 48 distillation).
   Running L-BFGS-B from all 216,000 points would take hours; the pruned search keeps the paper's grid as the
   coverage of the space and spends the optimizer only where the objective is already low. Each start first
   converges on a smooth objective (δ = 1e-2), the best quarter is then refined at δ = 1e-3 and the final δ
   (continuation: the δ = 1e-4 objective is an L1 fit whose kinks slow L-BFGS-B down when started far away).
3. Bootstrap: resample runs with replacement ``n_bootstrap`` times and refit from the best point (warm start, one
   L-BFGS-B each); the (5, 95) percentiles give a 90% interval, as in Table 6.

The distillation law needs the student's supervised loss L̃_S = L(N_S, D_S): from a supervised fit of the same
runs file (``law="both"``: supervised first, then distillation with the fitted supervised coefficients, as the paper
does) or from a preset (default: the paper's). Supervised-coefficient uncertainty is not propagated into the
distillation intervals.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.optimize import minimize
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from crossdistill.scaling.laws import PAPER, SupervisedCoefficients, log_supervised_loss
from crossdistill.scaling.objective import (
    DISTILLATION,
    JOINT,
    SUPERVISED,
    LawSpec,
    grid_points,
    huber_objective,
    huber_value,
)
from crossdistill.scaling.runs import RunsError, RunTable

__all__ = ["FitOptions", "FitResult", "fit_supervised", "fit_distillation", "fit_joint", "fit_runs",
           "check_identifiable"]


@dataclass(frozen=True, slots=True)
class FitOptions:
    """Settings of one fit."""

    huber_delta: float = 1e-4
    """Huber threshold on log-loss residuals (paper: 1e-4, i.e. essentially a robust L1 fit)."""
    grid: dict | None = None
    """Initialization grid per parameter name; None = the paper's grid."""
    top_m: int | None = None
    """Number of best grid points L-BFGS-B starts from; None = 16 for the supervised law, 48 for the distillation
    law (its landscape has more poor local minima: 16 starts missed the global one on noise-free synthetic runs)."""
    n_bootstrap: int = 200
    """Bootstrap resamples for the confidence intervals (paper: 4096); 0 disables them."""
    ci_level: float = 0.90
    """Two-sided confidence level of the bootstrap intervals."""
    min_loss: float | None = None
    """Fit only runs whose observed loss exceeds this (the paper fits L_S > 2.3 and extrapolates below)."""
    margin: int = 5
    """Runs required beyond the number of coefficients."""
    seed: int = 0
    """Seed of the bootstrap resampling."""
    max_iter: int = 3000
    """L-BFGS-B iteration limit per start."""
    progress: bool = True
    """Show a progress bar during the bootstrap."""

    def __post_init__(self) -> None:
        if not (self.huber_delta > 0 and math.isfinite(self.huber_delta)):
            raise ValueError(f"FitOptions.huber_delta = {self.huber_delta!r}: must be > 0.")
        if self.top_m is not None and self.top_m < 1:
            raise ValueError(f"FitOptions.top_m = {self.top_m!r}: must be >= 1.")
        if self.n_bootstrap < 0:
            raise ValueError(f"FitOptions.n_bootstrap = {self.n_bootstrap!r}: must be >= 0 (0 disables intervals).")
        if not 0 < self.ci_level < 1:
            raise ValueError(f"FitOptions.ci_level = {self.ci_level!r}: must be in (0, 1), e.g. 0.9.")


@dataclass
class FitResult:
    """The outcome of fitting one law."""

    law: str
    """``supervised`` or ``distillation``."""
    coefficients: object
    """:class:`SupervisedCoefficients` or :class:`DistillationCoefficients`."""
    objective: float
    """Mean Huber/δ objective at the optimum (≈ mean |log residual| when residuals exceed δ)."""
    n_runs: int
    """Runs used in the fit (after ``min_loss``)."""
    n_grid: int
    """Grid points scored."""
    n_starts: int
    """L-BFGS-B starts."""
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)
    """Bootstrap interval per coefficient (empty when ``n_bootstrap`` = 0)."""
    residuals: list[dict] = field(default_factory=list)
    """Per run: inputs, observed, predicted, relative error, and whether it was held out of the fit."""

    def summary(self) -> dict:
        """Mean / max absolute relative error on fitted and held-out runs."""
        out = {}
        for key, rows in (("fitted", [r for r in self.residuals if not r["held_out"]]),
                          ("held_out", [r for r in self.residuals if r["held_out"]])):
            if rows:
                errs = np.abs([r["rel_error"] for r in rows])
                out[key] = {"runs": len(rows), "mean_abs_rel_error": float(errs.mean()),
                            "max_abs_rel_error": float(errs.max())}
        return out

    def to_dict(self) -> dict:
        return {
            "law": self.law,
            "coefficients": self.coefficients.as_dict(),
            "intervals": {k: list(v) for k, v in self.intervals.items()},
            "objective": self.objective,
            "n_runs": self.n_runs,
            "n_grid": self.n_grid,
            "n_starts": self.n_starts,
            "summary": self.summary(),
            "residuals": self.residuals,
        }


# ------------------------------------------------------------------ identifiability


def _distinct(x: np.ndarray) -> int:
    return len(np.unique(np.round(np.log10(x), 3)))


def check_identifiable(runs: RunTable, law: str, margin: int = 5) -> None:
    """Raise :class:`RunsError` when ``runs`` cannot identify every coefficient of ``law``."""
    spec = SUPERVISED if law == "supervised" else DISTILLATION
    kind = "supervised runs (teacher_loss null)" if law == "supervised" else "distillation runs (with a teacher_loss)"
    need = spec.n_params + margin
    if len(runs) < need:
        raise RunsError(
            f"too few {kind} to fit the {law} law: {len(runs)} given, at least {need} needed "
            f"({spec.n_params} coefficients + a margin of {margin}). Add runs, or use a preset instead of fitting."
        )
    checks = [("N", runs.N, "student sizes (student_non_embedding_params)", "the size exponent"),
              ("D", runs.D, "token counts (student_tokens)", "the data exponent")]
    if law == "distillation":
        checks.append(("L_T", runs.L_T, "teachers (teacher_loss)", "the teacher terms c0, c1, f1, d1"))
    for name, values, what, coef in checks:
        k = _distinct(values)
        if k < 3:
            shown = ", ".join(f"{v:.4g}" for v in np.unique(values)[:3])
            raise RunsError(
                f"too little variation to fit the {law} law: the runs have only {k} distinct {what} ({shown}); "
                f"{coef} cannot be identified. Add runs at >= 3 different values of {name}."
            )
    log_n, log_d = np.log(runs.N), np.log(runs.D)
    design = np.stack([np.ones_like(log_n), log_n], 1)
    resid = log_d - design @ np.linalg.lstsq(design, log_d, rcond=None)[0]
    if np.max(np.abs(resid)) < 1e-3:
        raise RunsError(
            f"too little variation to fit the {law} law: every run uses the same tokens-per-parameter relation "
            "(log D is a linear function of log N), so the size and data exponents cannot be separated. Add runs "
            "with other token budgets for the same model size."
        )


# ------------------------------------------------------------------ core


def _data(runs: RunTable, log_ls_tilde: np.ndarray | None) -> dict:
    data = {"log_n": np.log(runs.N), "log_d": np.log(runs.D), "log_l": np.log(runs.L)}
    if log_ls_tilde is not None:
        data["log_lt"] = np.log(runs.L_T)
        data["log_ls_tilde"] = log_ls_tilde
    return data


def _score_grid(spec: LawSpec, pts: np.ndarray, data: dict, delta: float, chunk_elems: int = 4_000_000) -> np.ndarray:
    n = len(data["log_l"])
    chunk = max(1, chunk_elems // max(n, 1))
    with np.errstate(all="ignore"):
        if spec.grid_scores is not None:
            scores = spec.grid_scores(pts, data, delta)
        else:
            scores = np.empty(len(pts))
            for i in range(0, len(pts), chunk):
                pred = spec.predict_batch(pts[i : i + chunk], data)
                scores[i : i + chunk] = huber_value(pred, data["log_l"], delta)
    scores[~np.isfinite(scores)] = np.inf
    return scores


def _lbfgsb(spec: LawSpec, theta0: np.ndarray, data: dict, delta: float, max_iter: int, weights=None):
    def fun(theta):
        with np.errstate(all="ignore"):
            pred, jac = spec.predict_grad(theta, data)
            val, dval = huber_objective(pred, data["log_l"], delta, weights)
        grad = np.einsum("n,nk->k", dval, jac)
        if not (np.isfinite(val) and np.all(np.isfinite(grad))):
            return 1e10, np.zeros_like(theta)
        return float(val), grad

    res = minimize(fun, theta0, jac=True, method="L-BFGS-B", bounds=spec.bounds,
                   options={"maxiter": max_iter, "ftol": 1e-12, "gtol": 1e-10, "maxcor": 30})
    return res.x, float(res.fun)


def _objective(spec: LawSpec, theta: np.ndarray, data: dict, delta: float) -> float:
    with np.errstate(all="ignore"):
        return float(huber_objective(spec.predict_batch(theta[None], data), data["log_l"], delta)[0][0])


def _fit(spec: LawSpec, runs: RunTable, data_all: dict, options: FitOptions, law: str) -> FitResult:
    fit_mask = np.ones(len(runs), bool) if options.min_loss is None else runs.L > options.min_loss
    fit_runs = runs.subset(fit_mask)
    check_identifiable(fit_runs, law, options.margin)
    data = {k: v[fit_mask] for k, v in data_all.items()}

    pts = grid_points(spec, options.grid)
    scores = _score_grid(spec, pts, data, options.huber_delta)
    order = np.argsort(scores, kind="stable")
    top_m = options.top_m or (16 if law == "supervised" else 48)
    starts = [pts[i] for i in order[:top_m] if np.isfinite(scores[i])]
    if not starts:
        raise RunsError(f"the {law} law cannot be evaluated at any grid point for these runs; check the inputs.")
    # Continuation in δ: a smooth (large-δ) fit first, then the paper's δ from there. With δ = 1e-4 the objective is
    # an L1 fit whose kinks slow L-BFGS-B down by ~5x when started far away; the minimum is that of the final δ.
    schedule = [d for d in (1e-2, 1e-3) if d > options.huber_delta] + [options.huber_delta]
    coarse = []
    for theta0 in starts:
        theta, val = _lbfgsb(spec, theta0, data, schedule[0], options.max_iter)
        coarse.append((val, theta))
    coarse.sort(key=lambda vt: vt[0])
    best_theta, best_val = None, math.inf
    for _, theta in coarse[: max(3, top_m // 4)]:
        for delta in schedule[1:]:
            theta, _ = _lbfgsb(spec, theta, data, delta, options.max_iter)
        val = _objective(spec, theta, data, options.huber_delta)
        if val < best_val:
            best_theta, best_val = theta, val

    intervals = _natural_intervals(_bootstrap(spec, best_theta, data, options, law))
    pred = spec.predict_batch(best_theta[None], data_all)[0]
    return FitResult(law=law, coefficients=spec.to_coefficients(best_theta), objective=best_val,
                     n_runs=len(fit_runs), n_grid=len(pts), n_starts=len(starts), intervals=intervals,
                     residuals=_residual_rows(runs, pred, fit_mask, law))


def _bootstrap(spec: LawSpec, best_theta: np.ndarray, data: dict, options: FitOptions, law: str) -> dict:
    """Percentile intervals from refits on resampled runs, each warm-started at the best fit."""
    if not options.n_bootstrap:
        return {}
    rng = np.random.default_rng(options.seed)
    n = len(data["log_l"])
    samples = []
    bar = tqdm(range(options.n_bootstrap), desc=f"bootstrap {law}", disable=not options.progress, file=sys.stderr)
    for _ in bar:
        # Multinomial counts as weights == resampling with replacement, without copying the data.
        weights = np.bincount(rng.integers(0, n, n), minlength=n).astype(np.float64)
        theta, _ = _lbfgsb(spec, best_theta, data, options.huber_delta, options.max_iter, weights)
        samples.append(theta)
    samples = np.array(samples)
    lo_q, hi_q = 50 * (1 - options.ci_level), 50 * (1 + options.ci_level)
    return {name: (float(np.percentile(samples[:, j], lo_q)), float(np.percentile(samples[:, j], hi_q)))
            for j, name in enumerate(spec.param_names)}


def _natural_intervals(intervals: dict, prefix: str = "") -> dict:
    """Map intervals on θ (log_A, ...) to intervals on the coefficients (A, ...); exp is monotone."""
    out = {}
    for name, (lo, hi) in intervals.items():
        if not name.startswith(prefix):
            continue
        name = name[len(prefix):]
        out[name[4:] if name.startswith("log_") else name] = (
            (math.exp(lo), math.exp(hi)) if name.startswith("log_") else (lo, hi))
    return out


def _residual_rows(runs: RunTable, pred_log: np.ndarray, fit_mask: np.ndarray, law: str) -> list[dict]:
    rows = []
    for i in range(len(runs)):
        row = {"N": float(runs.N[i]), "D": float(runs.D[i])}
        if law == "distillation":
            row["L_T"] = float(runs.L_T[i])
        observed, predicted = float(runs.L[i]), float(math.exp(pred_log[i]))
        row.update(observed=observed, predicted=predicted, rel_error=(predicted - observed) / observed,
                   held_out=not bool(fit_mask[i]))
        rows.append(row)
    return rows


def _single_thread(fn):
    """Run ``fn`` with one BLAS thread. L-BFGS-B makes thousands of tiny BLAS calls; with OpenBLAS's default thread
    pool they spin-wait against each other and any other process on the machine (a supervised fit ran ~15x
    slower on the shared 2-core machine; benchmarks/results/scaling_fit.md)."""

    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    wrapper.__name__, wrapper.__doc__ = fn.__name__, fn.__doc__
    return wrapper


@_single_thread
def fit_supervised(runs: RunTable, options: FitOptions = FitOptions()) -> FitResult:
    """Fit Eq. 1 to supervised runs (the table's rows with NaN ``L_T`` are used; others are ignored)."""
    runs = runs.supervised()
    return _fit(SUPERVISED, runs, _data(runs, None), options, "supervised")


@_single_thread
def fit_distillation(runs: RunTable, supervised: SupervisedCoefficients = PAPER.supervised,
                     options: FitOptions = FitOptions()) -> FitResult:
    """Fit Eq. 8 to distillation runs, with L̃_S from ``supervised`` (default: the paper's Table 6)."""
    runs = runs.distillation()
    log_ls_tilde = log_supervised_loss(np.log(runs.N), np.log(runs.D), supervised)
    return _fit(DISTILLATION, runs, _data(runs, log_ls_tilde), options, "distillation")


def joint_data(runs: RunTable) -> dict:
    """Arrays for the JOINT law spec over all runs (teacher loss set to 1 for supervised runs: unused there)."""
    is_dis = runs.is_distillation
    return {"log_n": np.log(runs.N), "log_d": np.log(runs.D), "log_l": np.log(runs.L), "is_dis": is_dis,
            "log_lt": np.log(np.where(is_dis, runs.L_T, 1.0))}


@_single_thread
def fit_joint(runs: RunTable, options: FitOptions = FitOptions(),
              start: dict[str, FitResult] | None = None) -> dict[str, FitResult]:
    """Fit both laws jointly: all 15 coefficients minimize one objective over supervised and distillation runs,
    so the distillation runs also inform the supervised coefficients through L̃_S.

    Starts from the sequential fits (supervised, then distillation on the fitted L̃_S: the paper's procedure; the
    15-dimensional product of the two initialization grids is far too large to score) and refines all coefficients
    together with L-BFGS-B (``start``: reuse a ``fit_runs(..., "both")`` result). Bootstrap intervals resample the
    union of the runs. The reported ``objective`` is the joint one (mean over all fitted runs).
    """
    if start is None:
        seq = replace(options, n_bootstrap=0)
        sup = fit_supervised(runs, seq)
        start = {"supervised": sup, "distillation": fit_distillation(runs, sup.coefficients, seq)}
    sup, dis = start["supervised"], start["distillation"]
    fit_mask = np.ones(len(runs), bool) if options.min_loss is None else runs.L > options.min_loss
    is_dis = runs.is_distillation
    data_all = joint_data(runs)
    data = {k: v[fit_mask] for k, v in data_all.items()}
    theta0 = JOINT.from_coefficients((sup.coefficients, dis.coefficients))
    theta, val = _lbfgsb(JOINT, theta0, data, options.huber_delta, options.max_iter)
    if val > _objective(JOINT, theta0, data, options.huber_delta):  # never worse than the sequential start
        theta, val = theta0, _objective(JOINT, theta0, data, options.huber_delta)
    intervals = _bootstrap(JOINT, theta, data, options, "joint")
    sup_c, dis_c = JOINT.to_coefficients(theta)
    pred = JOINT.predict_batch(theta[None], data_all)[0]
    out = {}
    for name, coefs, mask, first in (("supervised", sup_c, ~is_dis, sup), ("distillation", dis_c, is_dis, dis)):
        out[name] = FitResult(
            law=name, coefficients=coefs, objective=val, n_runs=int((fit_mask & mask).sum()), n_grid=first.n_grid,
            n_starts=first.n_starts,
            intervals=_natural_intervals(intervals, "sup_" if name == "supervised" else "dis_"),
            residuals=_residual_rows(runs.subset(mask), pred[mask], fit_mask[mask], name),
        )
    return out


def fit_runs(runs: RunTable, law: str = "both", options: FitOptions = FitOptions(),
             supervised: SupervisedCoefficients | None = None) -> dict[str, FitResult]:
    """Fit ``law`` ∈ {supervised, distillation, both, joint}. With ``both``, the distillation fit uses the fitted
    supervised coefficients for L̃_S (sequential, as in the paper); ``joint`` then refines all coefficients together
    (:func:`fit_joint`); ``distillation`` alone uses ``supervised`` for L̃_S (default: the paper's)."""
    if law not in ("supervised", "distillation", "both", "joint"):
        raise ValueError(f"law = {law!r}: choose supervised, distillation, both or joint.")
    if law == "joint":
        return fit_joint(runs, options)
    out: dict[str, FitResult] = {}
    if law in ("supervised", "both"):
        out["supervised"] = fit_supervised(runs, options)
    if law in ("distillation", "both"):
        sup = out["supervised"].coefficients if "supervised" in out else (supervised or PAPER.supervised)
        out["distillation"] = fit_distillation(runs, sup, options)
    return out
