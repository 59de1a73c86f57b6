"""Batched entropic optimal transport (Sinkhorn) in the log domain, for MultiLevelOT's sequence-level distance.

The plan between two sets of positions (teacher rows, student columns) is

    P = diag(exp f) · K · diag(exp g),   K = exp(−C / ε),

with the potentials f, g updated alternately so that the rows sum to ``a`` and the columns to ``b``. Working on log
potentials (two ``logsumexp`` per iteration) keeps fp32 stable for any ε; the plain-domain version divides by
``exp(−C/ε)`` sums that underflow once C/ε exceeds ~87 (exp(−87) is about fp32's smallest normal number).

Each iteration normalizes the rows first, then the columns (the order of the MultiLevelOT code), so after the last
iteration the column marginals are exact and the row marginals carry the convergence error.

Variable lengths in a batch are handled with boolean masks. Padded rows and columns get a large *finite* negative
log weight instead of ``-inf``: the plan there is exactly 0, and no ``-inf − (-inf)`` NaN can reach the gradient.
"""

from __future__ import annotations

import torch

NEG = -1e9
"""Finite stand-in for log 0 (padded rows/columns and masked pairs). exp(NEG + anything realistic) is exactly 0."""


def _check(cost: torch.Tensor, a: torch.Tensor | None, b: torch.Tensor | None, epsilon: float, n_iters: int) -> None:
    if cost.dim() != 3:
        raise ValueError(f"cost must be [B, n, m], got shape {tuple(cost.shape)}")
    if not epsilon > 0:
        raise ValueError(f"epsilon={epsilon} must be > 0 (the entropic regularization λ)")
    if n_iters < 1:
        raise ValueError(f"n_iters={n_iters} must be >= 1")
    for name, marg, size in (("a", a, cost.shape[1]), ("b", b, cost.shape[2])):
        if marg is not None and tuple(marg.shape) != (cost.shape[0], size):
            raise ValueError(f"marginal {name} must be [B, {size}] to match cost {tuple(cost.shape)}, "
                             f"got {tuple(marg.shape)}")


def log_sinkhorn_plan(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    epsilon: float = 0.1,
    n_iters: int = 20,
    row_mask: torch.Tensor | None = None,
    col_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Entropic transport plan, batched, log domain, unrolled (autograd differentiates through the iterations).

    Args:
        cost: ``[B, n, m]`` transport cost between row items and column items.
        a: ``[B, n]`` row marginals (non-negative). Default: 1 for every valid row.
        b: ``[B, m]`` column marginals. Default: 1 for every valid column. ``sum a`` should equal ``sum b`` for the
            marginals to be reachable; if not, the columns (updated last) win.
        epsilon: entropic regularization ε (MultiLevelOT's λ); K = exp(−C/ε).
        n_iters: number of (row, column) normalization rounds.
        row_mask: ``[B, n]`` bool, valid rows (default all).
        col_mask: ``[B, m]`` bool, valid columns (default all).

    Returns:
        ``[B, n, m]`` fp32 plan; exactly 0 on padded rows/columns. An example with no valid row or column gives 0.
    """
    _check(cost, a, b, epsilon, n_iters)
    bsz, n, m = cost.shape
    dev = cost.device
    row_mask = torch.ones(bsz, n, dtype=torch.bool, device=dev) if row_mask is None else row_mask.bool()
    col_mask = torch.ones(bsz, m, dtype=torch.bool, device=dev) if col_mask is None else col_mask.bool()
    a = row_mask.float() if a is None else a.float()
    b = col_mask.float() if b is None else b.float()
    pair = row_mask[:, :, None] & col_mask[:, None, :]
    log_k = torch.where(pair, -cost.float() / epsilon, torch.full((), NEG, device=dev))
    # log a is clamped at NEG so zero-weight rows behave like padding and never produce -inf.
    log_a = torch.where(row_mask & (a > 0), a.clamp_min(1e-38).log(), torch.full((), NEG, device=dev))
    log_b = torch.where(col_mask & (b > 0), b.clamp_min(1e-38).log(), torch.full((), NEG, device=dev))
    f = torch.zeros(bsz, n, device=dev)
    g = torch.zeros(bsz, m, device=dev)
    for _ in range(n_iters):
        f = log_a - torch.logsumexp(log_k + g[:, None, :], dim=2)
        g = log_b - torch.logsumexp(log_k + f[:, :, None], dim=1)
    plan = torch.exp(log_k + f[:, :, None] + g[:, None, :])
    return plan * pair


def sinkhorn_distance(
    cost: torch.Tensor,
    a: torch.Tensor | None = None,
    b: torch.Tensor | None = None,
    *,
    epsilon: float = 0.1,
    n_iters: int = 20,
    row_mask: torch.Tensor | None = None,
    col_mask: torch.Tensor | None = None,
    grad: str = "unroll",
) -> torch.Tensor:
    """Transport cost ⟨P, C⟩ per example (no entropy term; the quantity POT's ``sinkhorn2`` returns).

    Args:
        cost, a, b, epsilon, n_iters, row_mask, col_mask: as in :func:`log_sinkhorn_plan`.
        grad: ``"unroll"`` differentiates through every iteration (what autograd on the plain loop does);
            ``"envelope"`` treats the plan as a constant and differentiates only ⟨P, C⟩ through C (cheaper in
            memory; the gradient of the entropic objective, not of ⟨P, C⟩, by the envelope theorem).

    Returns:
        ``[B]`` fp32 distances.
    """
    if grad not in ("unroll", "envelope"):
        raise ValueError(f"grad={grad!r} must be 'unroll' or 'envelope'")
    if grad == "envelope":
        with torch.no_grad():
            plan = log_sinkhorn_plan(cost.detach(), a, b, epsilon=epsilon, n_iters=n_iters,
                                     row_mask=row_mask, col_mask=col_mask)
    else:
        plan = log_sinkhorn_plan(cost, a, b, epsilon=epsilon, n_iters=n_iters, row_mask=row_mask, col_mask=col_mask)
    return (plan * cost.float()).sum(dim=(1, 2))
