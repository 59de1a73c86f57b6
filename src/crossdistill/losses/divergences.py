"""Per-position divergences between a student and a teacher distribution (docs/losses.md §1).

Every function takes LOG-probabilities ``s_logp`` (student) and ``t_logp`` (teacher) of shape ``[..., V]`` over the
same vocabulary and returns one value per position, shape ``[...]``. There is no reduction, no masking and no T²
factor here: the objective (``crossdistill.losses.objective``) sums over target positions, divides by the global
target count and applies T² (docs/design.md, contracts 2 and 3: normalization, temperatures).

Notation: teacher = P = p_T, student = Q = p_S, natural log.

Zero-probability entries (``-inf`` log-probs) are allowed on either side: terms whose weight is an exact zero
contribute exactly zero (``0 · log 0 = 0``), never NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Divergence = Callable[..., torch.Tensor]


def _kl(p_logp: torch.Tensor, q_logp: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) = Σ_v p(v) (log p(v) − log q(v)) over the last dim; ``[..., V] -> [...]``."""
    p = p_logp.exp()
    # where() rather than a plain product: p = 0 with log p = -inf would otherwise give 0 · (-inf) = NaN.
    terms = torch.where(p > 0, p * (p_logp - q_logp), torch.zeros((), dtype=p.dtype, device=p.device))
    return terms.sum(-1)


def _log_weight(w: float) -> float:
    """log(w) for a mixture weight, with log(0) = -inf (logaddexp then ignores that side)."""
    return math.log(w) if w > 0 else -math.inf


def _check_unit(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value} is outside [0, 1]; pass a mixture weight between 0 and 1")
    return value


def _check_pair(s_logp: torch.Tensor, t_logp: torch.Tensor) -> None:
    if s_logp.shape != t_logp.shape:
        raise ValueError(
            f"student log-probs {tuple(s_logp.shape)} and teacher log-probs {tuple(t_logp.shape)} differ in shape; "
            "both must be [..., V] over the same vocabulary (slice padded heads to the real vocab first)"
        )


def forward_kl(s_logp: torch.Tensor, t_logp: torch.Tensor) -> torch.Tensor:
    """Forward KL(p_T‖p_S), mode-covering.

    Args:
        s_logp: ``[..., V]`` student log-probabilities.
        t_logp: ``[..., V]`` teacher log-probabilities.

    Returns:
        ``[...]`` per-position divergence.
    """
    _check_pair(s_logp, t_logp)
    return _kl(t_logp, s_logp)


def reverse_kl(s_logp: torch.Tensor, t_logp: torch.Tensor) -> torch.Tensor:
    """Reverse KL(p_S‖p_T), mode-seeking. ``[..., V] -> [...]``."""
    _check_pair(s_logp, t_logp)
    return _kl(s_logp, t_logp)


def generalized_jsd(s_logp: torch.Tensor, t_logp: torch.Tensor, beta: float = 0.5) -> torch.Tensor:
    """Generalized Jensen-Shannon divergence, TRL convention.

    ``beta`` is the TEACHER weight of the mixture M = β p_T + (1 − β) p_S, computed in log space; the loss is
    β·KL(p_T‖M) + (1 − β)·KL(p_S‖M). The endpoints are special-cased as TRL does: β = 0 returns the exact forward
    KL(p_T‖p_S) and β = 1 the exact reverse KL(p_S‖p_T). Because JSD(β) → 0 as β → 0 or 1, the value jumps in
    scale at the endpoints (β = 0.1 gives ~β·FKL, β = 0 gives FKL).

    Args:
        s_logp: ``[..., V]`` student log-probabilities.
        t_logp: ``[..., V]`` teacher log-probabilities.
        beta: teacher weight in [0, 1].

    Returns:
        ``[...]`` per-position divergence.
    """
    beta = _check_unit("beta", beta)
    _check_pair(s_logp, t_logp)
    if beta == 0.0:
        return _kl(t_logp, s_logp)
    if beta == 1.0:
        return _kl(s_logp, t_logp)
    # logaddexp instead of stack + logsumexp: same value, no [2, ..., V] copy.
    log_m = torch.logaddexp(s_logp + math.log1p(-beta), t_logp + math.log(beta))
    return beta * _kl(t_logp, log_m) + (1.0 - beta) * _kl(s_logp, log_m)


def skew_kl(s_logp: torch.Tensor, t_logp: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Skew KL, SKL(α) = KL(p_T ‖ α p_T + (1 − α) p_S) (DistiLLM).

    The mixture contains the student and is NOT detached: the gradient flows through it. α = 0 is forward KL.
    ``[..., V] -> [...]``.
    """
    alpha = _check_unit("alpha", alpha)
    _check_pair(s_logp, t_logp)
    log_m = torch.logaddexp(t_logp + _log_weight(alpha), s_logp + _log_weight(1.0 - alpha))
    return _kl(t_logp, log_m)


def skew_reverse_kl(s_logp: torch.Tensor, t_logp: torch.Tensor, alpha: float = 0.1) -> torch.Tensor:
    """Skew reverse KL, SRKL(α) = KL(p_S ‖ (1 − α) p_T + α p_S) (DistiLLM).

    The mixture is not detached. α = 0 is reverse KL. ``[..., V] -> [...]``.
    """
    alpha = _check_unit("alpha", alpha)
    _check_pair(s_logp, t_logp)
    log_m = torch.logaddexp(t_logp + _log_weight(1.0 - alpha), s_logp + _log_weight(alpha))
    return _kl(s_logp, log_m)


def tvd(s_logp: torch.Tensor, t_logp: torch.Tensor) -> torch.Tensor:
    """Total variation distance ½ Σ_v |p_T(v) − p_S(v)|. ``[..., V] -> [...]``.

    The gradient at p_T = p_S is torch's subgradient of |x| at 0, i.e. 0.
    """
    _check_pair(s_logp, t_logp)
    return 0.5 * (t_logp.exp() - s_logp.exp()).abs().sum(-1)


def adaptive_kl(s_logp: torch.Tensor, t_logp: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """Adaptive KL (AKL, arXiv 2404.02657), as the paper defines it.

    Teacher probabilities are sorted ascending and the student's gathered in the same order; the tail is the set of
    lowest-probability teacher tokens whose cumulative teacher mass is ≤ α. With gap = |p_T − p_S|,
    g_head = Σ gap over the head and g_tail = Σ gap over the tail, both DETACHED:

        AKL = g_head / (g_head + g_tail) · FKL + g_tail / (g_head + g_tail) · RKL.

    When the two distributions are identical (g_head + g_tail = 0) both KLs are 0 and so is AKL; the weights are then
    taken as ½/½ instead of 0/0.

    Args:
        s_logp: ``[..., V]`` student log-probabilities.
        t_logp: ``[..., V]`` teacher log-probabilities.
        alpha: cumulative teacher mass that defines the tail, in [0, 1].

    Returns:
        ``[...]`` per-position divergence.
    """
    alpha = _check_unit("alpha", alpha)
    _check_pair(s_logp, t_logp)
    with torch.no_grad():
        t_sorted, order = t_logp.exp().sort(dim=-1)
        s_sorted = s_logp.exp().gather(-1, order)
        gap = (t_sorted - s_sorted).abs()
        tail = t_sorted.cumsum(-1) <= alpha
        g_tail = (gap * tail).sum(-1)
        g_head = (gap * ~tail).sum(-1)
        total = g_head + g_tail
        safe = torch.where(total > 0, total, torch.ones_like(total))
        w_head = torch.where(total > 0, g_head / safe, torch.full_like(total, 0.5))
    return w_head * _kl(t_logp, s_logp) + (1.0 - w_head) * _kl(s_logp, t_logp)


DIVERGENCES: dict[str, Divergence] = {
    "forward_kl": forward_kl,
    "reverse_kl": reverse_kl,
    "generalized_jsd": generalized_jsd,
    "skew_kl": skew_kl,
    "skew_reverse_kl": skew_reverse_kl,
    "tvd": tvd,
    "adaptive_kl": adaptive_kl,
}
"""Canonical name -> per-position divergence ``fn(s_logp, t_logp, **params) -> [...]``."""

ALIASES: dict[str, str] = {
    "fkl": "forward_kl",
    "kl": "forward_kl",
    "rkl": "reverse_kl",
    "jsd": "generalized_jsd",
    "skl": "skew_kl",
    "srkl": "skew_reverse_kl",
    "akl": "adaptive_kl",
}
"""Short names accepted by :func:`divergence` and configs."""

DEFAULTS: dict[str, dict[str, float]] = {
    "forward_kl": {},
    "reverse_kl": {},
    "generalized_jsd": {"beta": 0.5},
    "skew_kl": {"alpha": 0.1},
    "skew_reverse_kl": {"alpha": 0.1},
    "tvd": {},
    "adaptive_kl": {"alpha": 0.5},
}
"""The keyword parameters each divergence accepts and their defaults (the one place they are set: the methods'
typed parameters and the configs read them from here)."""

METHOD_NAMES: dict[str, str] = {"jsd" if name == "generalized_jsd" else name: name for name in DIVERGENCES}
"""``loss.name`` of each same-vocabulary method -> its divergence (``jsd`` is the recipes' name for the generalized
JSD)."""


def resolve(name: str, params: dict[str, float] | None = None) -> tuple[str, Divergence, dict[str, float]]:
    """Validate a divergence name and its parameters; returns ``(canonical_name, fn, params)``.

    Raises:
        ValueError: unknown name or unknown parameter, naming the accepted ones.
    """
    canonical = ALIASES.get(name, name)
    if canonical not in DIVERGENCES:
        known = sorted(DIVERGENCES) + sorted(ALIASES)
        raise ValueError(f"unknown divergence {name!r}; choose one of {known}")
    params = dict(params or {})
    extra = set(params) - set(DEFAULTS[canonical])
    if extra:
        raise ValueError(
            f"divergence {canonical!r} does not take parameter(s) {sorted(extra)}; "
            f"it accepts {list(DEFAULTS[canonical])}"
        )
    for key, value in params.items():
        _check_unit(key, value)
    return canonical, DIVERGENCES[canonical], params


def divergence(name: str, s_logp: torch.Tensor, t_logp: torch.Tensor, **params: float) -> torch.Tensor:
    """Per-position divergence by registry name (aliases such as ``"jsd"`` and ``"fkl"`` accepted).

    Args:
        name: a key of :data:`DIVERGENCES` or :data:`ALIASES`.
        s_logp: ``[..., V]`` student log-probabilities.
        t_logp: ``[..., V]`` teacher log-probabilities.
        **params: ``beta`` for ``generalized_jsd``; ``alpha`` for the skew KLs and ``adaptive_kl``.

    Returns:
        ``[...]`` per-position divergence (no reduction, no T²).
    """
    _, fn, params = resolve(name, params)
    return fn(s_logp, t_logp, **params)


def divergence_from_logits(
    name: str,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float = 1.0,
    **params: float,
) -> torch.Tensor:
    """Per-position divergence from raw logits at distillation temperature ``temperature``.

    Both logits are divided by ``temperature`` and log-softmaxed in fp32. No T² factor here: the
    objective applies it (docs/design.md, contract 3: temperatures).

    Args:
        name: divergence name (see :func:`divergence`).
        student_logits: ``[..., V]``.
        teacher_logits: ``[..., V]`` (no gradient is needed; it flows if the caller lets it).
        temperature: distillation temperature, > 0.
        **params: divergence parameters.

    Returns:
        ``[...]`` fp32 per-position divergence.
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0 (it divides the logits)")
    s_logp = torch.log_softmax(student_logits.float() / temperature, dim=-1)
    t_logp = torch.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return divergence(name, s_logp, t_logp, **params)
