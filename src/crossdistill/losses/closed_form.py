"""Closed-form value and logit gradient for the common terms, no autograd graph.

Used by the chunked path: one pass per chunk produces the term's SUM and ``∂sum/∂z`` for the student logits ``z``,
so no ``[C, V]`` autograd intermediates are kept. With p = softmax(z / τ):

* CE (τ = 1):            ∂/∂z = p − onehot(y)
* forward KL(p_t‖p_s):   ∂/∂z = (p_s − p_t) / τ
* reverse KL(p_s‖p_t):   ∂/∂z = p_s ⊙ (log p_s − log p_t − KL(p_s‖p_t)) / τ
* JSD_β, 0 < β < 1:      ∂/∂z = (1 − β)/τ · p_s ⊙ (log(p_s/m) − KL(p_s‖m)),  m = β p_t + (1 − β) p_s

Divergences not listed here fall back to autograd on the chunk (same result, more memory).
"""

from __future__ import annotations

import math

import torch

from crossdistill.losses.divergences import resolve

CLOSED_FORM: frozenset[str] = frozenset({"forward_kl", "reverse_kl", "generalized_jsd"})
"""Canonical divergence names with a closed-form logit gradient here."""


def ce_value_and_grad(z: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy SUM and its gradient w.r.t. logits. ``z [C, V]`` fp32, ``targets [C]`` -> ``(scalar, [C, V])``."""
    lse = torch.logsumexp(z, dim=-1, keepdim=True)
    value = (lse.squeeze(1) - z.gather(1, targets[:, None]).squeeze(1)).sum()
    grad = (z - lse).exp_()
    grad.scatter_add_(1, targets[:, None], torch.full_like(targets[:, None], -1, dtype=grad.dtype))
    return value, grad


def kd_value_and_grad(
    name: str, params: dict[str, float], s_z: torch.Tensor, t_z: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Divergence SUM over rows and its gradient w.r.t. the student logits (before temperature).

    Args:
        name: a divergence in :data:`CLOSED_FORM` (aliases accepted).
        params: its parameters (``beta`` for JSD).
        s_z: ``[C, V]`` fp32 student logits.
        t_z: ``[C, V]`` fp32 teacher logits.
        temperature: τ; both logits are divided by it.

    Returns:
        ``(sum, dz)`` with ``dz`` of shape ``[C, V]``.
    """
    canonical, _, params = resolve(name, params)
    inv_t = 1.0 / temperature
    s_logp = torch.log_softmax(s_z * inv_t if temperature != 1.0 else s_z, dim=-1)
    t_logp = torch.log_softmax(t_z * inv_t if temperature != 1.0 else t_z, dim=-1)
    beta = float(params.get("beta", 0.5))
    if canonical == "generalized_jsd" and beta == 0.0:
        canonical = "forward_kl"
    if canonical == "generalized_jsd" and beta == 1.0:
        canonical = "reverse_kl"
    if canonical == "forward_kl":
        p_t = t_logp.exp()
        value = torch.where(p_t > 0, p_t * (t_logp - s_logp), 0.0).sum()
        grad = s_logp.exp_().sub_(p_t).mul_(inv_t)
        return value, grad
    if canonical == "reverse_kl":
        p_s = s_logp.exp()
        r = s_logp.sub_(t_logp)  # log p_s − log p_t (s_logp is consumed)
        kl = (p_s * r).sum(-1, keepdim=True)
        grad = r.sub_(kl).mul_(p_s).mul_(inv_t)
        return kl.sum(), grad
    if canonical == "generalized_jsd":
        log_m = torch.logaddexp(s_logp + math.log1p(-beta), t_logp + math.log(beta))
        p_t = t_logp.exp()
        kl_t = torch.where(p_t > 0, p_t * (t_logp - log_m), 0.0).sum()
        del p_t, t_logp
        p_s = s_logp.exp()
        r = s_logp.sub_(log_m)  # log(p_s / m)
        del log_m
        kl_s = (p_s * r).sum(-1, keepdim=True)
        value = beta * kl_t + (1.0 - beta) * kl_s.sum()
        grad = r.sub_(kl_s).mul_(p_s).mul_((1.0 - beta) * inv_t)
        return value, grad
    raise ValueError(
        f"no closed-form gradient for divergence {canonical!r}; closed forms exist for {sorted(CLOSED_FORM)}"
    )
