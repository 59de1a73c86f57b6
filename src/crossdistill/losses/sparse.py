"""Divergences against a sparse top-k teacher (docs/design.md, contract 4: teacher signal; policies in ``signal.py``).

The student is always dense (log-probs over its whole vocabulary, ``[N, V]``); the teacher is k kept ids with their
log-probs plus the log of the tail mass. With k = V (nothing dropped) both policies give exactly the dense
divergence.
"""

from __future__ import annotations

import torch

from crossdistill.losses.divergences import resolve
from crossdistill.losses.signal import LOG_ZERO, POLICIES, TeacherSignal

_INFINITE_UNDER_RENORMALIZE = "is infinite when the teacher has zero mass where the student has some"


def needs_full_teacher_support(name: str, params: dict[str, float] | None = None) -> bool:
    """True for divergences that are +inf against a teacher with zeros (reverse KL and its relatives)."""
    canonical, _, params = resolve(name, params)
    if canonical in ("reverse_kl", "adaptive_kl"):
        return True
    if canonical == "generalized_jsd":
        return float(params.get("beta", 0.5)) == 1.0
    if canonical == "skew_reverse_kl":
        return float(params.get("alpha", 0.1)) == 0.0
    return False


def student_tail_logmass(s_logp: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """log Σ_{v ∉ ids} p_S(v): the student's mass outside the kept ids, ``[N, V], [N, k] -> [N]``.

    Summed directly over the complement (no 1 − Σ cancellation); kept entries are replaced by a finite log-zero so
    an empty complement (k = V) yields a negligible mass with finite gradients instead of ``logsumexp([-inf...])``.
    """
    kept = torch.zeros_like(s_logp, dtype=torch.bool).scatter_(-1, ids, True)
    return torch.logsumexp(s_logp.masked_fill(kept, LOG_ZERO), dim=-1)


def sparse_divergence(
    name: str,
    s_logp: torch.Tensor,
    ids: torch.Tensor,
    t_kept_logp: torch.Tensor,
    t_tail_logmass: torch.Tensor,
    policy: str = "renormalize",
    **params: float,
) -> torch.Tensor:
    """Per-position divergence of a dense student against a sparse teacher.

    Args:
        name: divergence name (``crossdistill.losses.divergences``).
        s_logp: ``[N, V]`` student log-probs (already at the distillation temperature).
        ids: ``[N, k]`` int64 kept teacher ids (distinct within a row), all < V.
        t_kept_logp: ``[N, k]`` teacher log-probs of ``ids`` (same temperature as ``s_logp``).
        t_tail_logmass: ``[N]`` teacher log mass outside ``ids`` (used by ``tail_bucket`` only).
        policy: ``"renormalize"`` (teacher renormalized over the kept ids, zero elsewhere, against the full
            student) or ``"tail_bucket"`` ((k+1)-way distributions on both sides).
        **params: divergence parameters (``beta``, ``alpha``).

    Returns:
        ``[N]`` per-position divergence.
    """
    canonical, fn, params = resolve(name, params)
    if policy not in POLICIES:
        raise ValueError(f"policy={policy!r} is not one of {POLICIES}")
    if ids.shape != t_kept_logp.shape or ids.shape[0] != s_logp.shape[0]:
        raise ValueError(
            f"sparse teacher ids {tuple(ids.shape)} / logprobs {tuple(t_kept_logp.shape)} do not match the student "
            f"rows {tuple(s_logp.shape)}; expected [N, k] with N = {s_logp.shape[0]}"
        )
    if ids.numel() and int(ids.max()) >= s_logp.shape[-1]:
        raise ValueError(
            f"sparse teacher id {int(ids.max())} is outside the student vocabulary V={s_logp.shape[-1]}; "
            "map teacher ids into the student vocabulary (or slice padding) first"
        )
    t_kept_logp = t_kept_logp.to(s_logp.dtype)
    if policy == "renormalize":
        if ids.shape[-1] < s_logp.shape[-1] and needs_full_teacher_support(canonical, params):
            raise ValueError(
                f"divergence {canonical!r} {params or ''} {_INFINITE_UNDER_RENORMALIZE}: a top-k teacher under "
                "policy 'renormalize' has zeros outside its k ids; use policy='tail_bucket' or a forward divergence"
            )
        t_renorm = (t_kept_logp - torch.logsumexp(t_kept_logp, dim=-1, keepdim=True)).clamp(min=LOG_ZERO)
        if canonical == "forward_kl":
            # The teacher is zero outside the kept ids, so the sum runs over k entries only: no [N, V] teacher.
            s_kept = s_logp.gather(-1, ids)
            return (t_renorm.exp() * (t_renorm - s_kept)).sum(-1)
        t_full = torch.full_like(s_logp, LOG_ZERO).scatter_(-1, ids, t_renorm)
        return fn(s_logp, t_full, **params)
    s_bucket = torch.cat([s_logp.gather(-1, ids), student_tail_logmass(s_logp, ids)[:, None]], dim=-1)
    t_bucket = torch.cat([t_kept_logp, t_tail_logmass.to(s_logp.dtype)[:, None]], dim=-1)
    return fn(s_bucket.clamp(min=LOG_ZERO), t_bucket.clamp(min=LOG_ZERO), **params)


def signal_divergence(
    name: str,
    s_logp: torch.Tensor,
    signal: TeacherSignal,
    temperature: float = 1.0,
    **params: float,
) -> torch.Tensor:
    """Per-position divergence of student log-probs against a :class:`TeacherSignal`, dense or sparse.

    Args:
        name: divergence name.
        s_logp: ``[N, V]`` student log-probs at ``temperature``.
        signal: N rows; dense logits must have V columns (slice padded heads first).
        temperature: distillation temperature applied to the teacher (dense: logits / T; sparse: see
            :meth:`TeacherSignal.tempered_sparse`).
        **params: divergence parameters.

    Returns:
        ``[N]`` per-position divergence.
    """
    if signal.num_positions != s_logp.shape[0]:
        raise ValueError(f"teacher signal has {signal.num_positions} rows, the student {s_logp.shape[0]}")
    if not signal.is_sparse:
        _, fn, params = resolve(name, params)
        t_logp = torch.log_softmax(signal.logits.to(s_logp.dtype) / temperature, dim=-1)
        return fn(s_logp, t_logp, **params)
    kept, tail = signal.tempered_sparse(temperature, vocab_size=s_logp.shape[-1])
    return sparse_divergence(name, s_logp, signal.ids, kept, tail, signal.policy, **params)
