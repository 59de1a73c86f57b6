"""PNG plots of the laws (matplotlib, Agg backend: no display needed).

- :func:`plot_capacity_gap`: student loss vs teacher loss for fixed students (the capacity-gap U-shape).
- :func:`plot_isoflop`: iso-FLOP profiles, loss vs student size at fixed compute, supervised vs distilled.
- :func:`plot_fit`: predicted vs observed loss of a fit, held-out runs marked.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from crossdistill.io import atomic_path
from crossdistill.scaling.flops import PAPER_SHAPE, ArchitectureShape, forward_flops_per_token
from crossdistill.scaling.laws import PAPER, LawPreset, optimal_teacher_loss, student_loss, supervised_loss

__all__ = ["plot_capacity_gap", "plot_isoflop", "plot_fit"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: str | Path) -> Path:
    """Atomic write: render to a temporary file in the target directory, then rename."""
    out = Path(out)
    try:
        with atomic_path(out) as tmp:
            # The temporary name ends in .tmp, so the format comes from the target's extension (png by default).
            fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=130, bbox_inches="tight")
    finally:
        fig.clf()
    return out


def _fmt(x: float) -> str:
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M")):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def plot_capacity_gap(out: str | Path, students: list[tuple[float, float]], preset: LawPreset = PAPER,
                      teacher_losses: np.ndarray | None = None) -> Path:
    """Student loss vs teacher loss for each ``(N_S, D_S)``; marks the teacher-optimal L_T* of each student."""
    plt = _pyplot()
    lt = np.linspace(1.4, 4.0, 600) if teacher_losses is None else np.asarray(teacher_losses)
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for n_s, d_s in students:
        ls = student_loss(n_s, d_s, lt, preset)
        (line,) = ax.plot(lt, ls, label=f"N_S={_fmt(n_s)}, D_S={_fmt(d_s)}")
        lt_opt, ls_opt = optimal_teacher_loss(n_s, d_s, preset)
        ax.plot([lt_opt], [ls_opt], "o", color=line.get_color())
        ax.axhline(supervised_loss(n_s, d_s, preset), color=line.get_color(), ls=":", lw=0.8)
    ax.plot(lt, lt, "k--", lw=0.8, label="L_S = L_T")
    ax.set(xlabel="teacher cross-entropy L_T (nats)", ylabel="student cross-entropy L_S (nats)",
           title="Capacity gap: student loss vs teacher loss\n(dot: best teacher L_T*; dotted: supervised student)")
    ax.legend(fontsize=8)
    return _save(fig, out)


def plot_isoflop(out: str | Path, budgets: list[float], preset: LawPreset = PAPER,
                 shape: ArchitectureShape = PAPER_SHAPE, n_range: tuple[float, float] = (5e7, 5e10)) -> Path:
    """Loss vs student size at fixed compute C: supervised L(N, C/3F(N)) (solid) and best-case distillation with the
    teacher-optimal L_T* (dashed: teacher cost not counted). Only sizes with D ≥ N are drawn: the paper's runs stay
    well inside that region, and the laws extrapolated to a few tokens per parameter are not meaningful."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    n = np.geomspace(*n_range, 48)
    for c in budgets:
        d = c / (3 * np.asarray(forward_flops_per_token(n, shape)))
        keep = d >= n  # at least one token per parameter: far below that the laws are extrapolated wildly
        sup = supervised_loss(n[keep], d[keep], preset)
        (line,) = ax.plot(n[keep], sup, label=f"C={c:.0e} supervised")
        dist = [optimal_teacher_loss(ni, di, preset)[1] for ni, di in zip(n[keep], d[keep])]
        ax.plot(n[keep], dist, "--", color=line.get_color(), label=f"C={c:.0e} distilled (best case)")
        i = int(np.argmin(sup))
        ax.plot([n[keep][i]], [sup[i]], "o", color=line.get_color())
    ax.set_xscale("log")
    ax.set(xlabel="student non-embedding parameters N", ylabel="cross-entropy (nats)",
           title="Iso-FLOP profiles, D ≥ N (dot: supervised compute-optimal size)")
    ax.legend(fontsize=7)
    return _save(fig, out)


def plot_fit(out: str | Path, residuals: list[dict], title: str = "fit vs observed") -> Path:
    """Predicted vs observed loss from a :class:`~crossdistill.scaling.fit.FitResult`'s ``residuals``."""
    plt = _pyplot()
    obs = np.array([r["observed"] for r in residuals])
    pred = np.array([r["predicted"] for r in residuals])
    held = np.array([r["held_out"] for r in residuals], bool)
    fig, ax = plt.subplots(figsize=(5.2, 5.0))
    ax.plot(obs[~held], pred[~held], "o", ms=3.5, label="fitted runs")
    if held.any():
        ax.plot(obs[held], pred[held], "s", ms=3.5, label="held out (extrapolated)")
    lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.fill_between([lo, hi], [lo * 0.99, hi * 0.99], [lo * 1.01, hi * 1.01], color="gray", alpha=0.2, label="±1%")
    ax.set(xlabel="observed loss (nats)", ylabel="predicted loss (nats)", title=title)
    ax.legend(fontsize=8)
    return _save(fig, out)
