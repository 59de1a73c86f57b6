"""The teacher signal: one type for every teacher source (docs/design.md, contract 4).

A :class:`TeacherSignal` holds the teacher's distribution at N positions, either

* dense: ``logits [N, V_t]`` (an online teacher), or
* sparse: ``ids [N, k]`` (int64), ``logprobs [N, k]`` (log-probabilities of those ids under the FULL teacher
  distribution, at temperature 1 unless stated otherwise) and ``tail_logmass [N]`` (log of the mass outside the k
  ids), from a cache or a server,

with an explicit policy for the mass a sparse signal does not carry:

* ``"renormalize"``: the teacher is the truncated distribution renormalized over the kept ids (zero elsewhere), and
  the divergence is taken against the student's FULL distribution (Busbridge et al. 2025, Eq. 55). With
  k = 1 the forward KL is then the cross-entropy on the teacher's top token. Divergences that are infinite when the
  teacher has zero mass where the student has some (reverse KL, AKL, JSD at β = 1, SRKL at α = 0) are refused.
* ``"tail_bucket"``: both sides become (k+1)-way distributions: the k kept ids plus one bucket holding the rest of the
  mass (the student's bucket is the sum of its probabilities outside the kept ids). Every divergence is finite.

Temperature of stored log-probs: a sparse signal stores log p_T at temperature 1. At distillation temperature T the
kept ids' relative log-probs become ``logprobs / T`` up to a shared constant (exact: log p = z − log Z). The tail's
tempered mass is not recoverable from its total alone; :meth:`TeacherSignal.tempered_sparse` assumes the tail mass
is spread evenly over the ``V − k`` remaining ids (the maximum-entropy guess, exact at T = 1), then renormalizes the
k + 1 entries. Caches stored at another temperature T_c should be tempered by ``T / T_c``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

Policy = Literal["renormalize", "tail_bucket"]
POLICIES: tuple[str, ...] = ("renormalize", "tail_bucket")

LOG_ZERO = -1e4
"""Finite stand-in for log 0 in constructed log-prob tensors: exp(-1e4) is exactly 0 in every float dtype, yet it
keeps differences and log-mixtures finite, so gradients never meet ``-inf - (-inf)``."""


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − exp(x)) for x ≤ 0, stable at both ends (Mächler 2012); x ≥ 0 gives -inf (clamped, no NaN)."""
    x = x.clamp(max=0.0)
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


@dataclass(frozen=True)
class TeacherSignal:
    """The teacher's distribution at N positions, dense or sparse top-k (see the module docstring)."""

    logits: torch.Tensor | None = None
    """Dense teacher logits ``[N, V_t]`` (raw, temperature 1). Mutually exclusive with the sparse fields."""

    ids: torch.Tensor | None = None
    """Sparse: int64 vocabulary ids ``[N, k]`` of the kept teacher tokens."""

    logprobs: torch.Tensor | None = None
    """Sparse: float ``[N, k]`` log-probabilities of ``ids`` under the full teacher distribution."""

    tail_logmass: torch.Tensor | None = None
    """Sparse: float ``[N]``, log of the teacher mass outside ``ids`` (≤ 0; ``-inf`` or very negative if none)."""

    policy: Policy = "renormalize"
    """How a sparse signal's missing mass is treated: ``"renormalize"`` or ``"tail_bucket"``."""

    target_logprobs: torch.Tensor | None = None
    """Sparse, optional: float ``[N]`` exact log-probability (temperature 1) of the token that actually follows each
    row, when known (a teacher cache stores it). Cross-tokenizer merges of multi-token groups then use it instead of
    looking the token up in ``ids`` (where it may be missing)."""

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"TeacherSignal.policy={self.policy!r} is not one of {POLICIES}")
        sparse = (self.ids, self.logprobs, self.tail_logmass)
        if self.logits is not None:
            if any(t is not None for t in sparse):
                raise ValueError("TeacherSignal: pass either logits (dense) or ids/logprobs/tail_logmass (sparse)")
            if self.logits.dim() != 2:
                raise ValueError(f"TeacherSignal.logits must be [N, V], got shape {tuple(self.logits.shape)}")
            return
        if any(t is None for t in sparse):
            raise ValueError(
                "TeacherSignal: a sparse signal needs ids, logprobs and tail_logmass "
                "(use TeacherSignal.sparse(...) to derive tail_logmass), or pass dense logits"
            )
        if self.ids.dim() != 2 or self.ids.dtype != torch.int64:
            raise ValueError(f"TeacherSignal.ids must be int64 [N, k], got {self.ids.dtype} {tuple(self.ids.shape)}")
        if self.logprobs.shape != self.ids.shape or not self.logprobs.is_floating_point():
            raise ValueError(
                f"TeacherSignal.logprobs must be float with the shape of ids {tuple(self.ids.shape)}, "
                f"got {self.logprobs.dtype} {tuple(self.logprobs.shape)}"
            )
        if self.tail_logmass.shape != self.ids.shape[:1]:
            raise ValueError(
                f"TeacherSignal.tail_logmass must be [N]={tuple(self.ids.shape[:1])}, "
                f"got {tuple(self.tail_logmass.shape)}"
            )
        if self.target_logprobs is not None and self.target_logprobs.shape != self.ids.shape[:1]:
            raise ValueError(f"TeacherSignal.target_logprobs must be [N]={tuple(self.ids.shape[:1])}, "
                             f"got {tuple(self.target_logprobs.shape)}")
        if self.ids.numel() and int(self.ids.min()) < 0:
            raise ValueError(f"TeacherSignal.ids contains a negative id ({int(self.ids.min())})")

    # -- constructors -------------------------------------------------------------------------------------------

    @classmethod
    def dense(cls, logits: torch.Tensor) -> TeacherSignal:
        """Dense signal from teacher logits ``[N, V_t]``."""
        return cls(logits=logits)

    @classmethod
    def sparse(
        cls,
        ids: torch.Tensor,
        logprobs: torch.Tensor,
        tail_logmass: torch.Tensor | None = None,
        policy: Policy = "renormalize",
    ) -> TeacherSignal:
        """Sparse signal; ``tail_logmass`` defaults to log(1 − Σ exp(logprobs)), computed in log space."""
        if tail_logmass is None:
            tail_logmass = log1mexp(
                torch.logsumexp(logprobs.to(torch.promote_types(logprobs.dtype, torch.float32)), dim=-1)
            )
        return cls(ids=ids.long(), logprobs=logprobs, tail_logmass=tail_logmass, policy=policy)

    @classmethod
    def top_k(
        cls, logits: torch.Tensor, k: int, policy: Policy = "renormalize", temperature: float = 1.0
    ) -> TeacherSignal:
        """Sparse signal from dense logits ``[N, V]``: the k most probable ids of softmax(logits / temperature).

        The tail mass is computed exactly (log-sum-exp of the dropped entries), not as 1 − Σ kept.
        """
        if not 1 <= k <= logits.shape[-1]:
            raise ValueError(f"k={k} must be in [1, V={logits.shape[-1]}]")
        logp = torch.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=-1)
        kept, ids = logp.topk(k, dim=-1)
        rest = logp.scatter(-1, ids, -math.inf)
        tail = torch.logsumexp(rest, dim=-1) if k < logp.shape[-1] else torch.full_like(kept[:, 0], -math.inf)
        return cls(ids=ids, logprobs=kept, tail_logmass=tail, policy=policy)

    # -- accessors ----------------------------------------------------------------------------------------------

    @property
    def is_sparse(self) -> bool:
        return self.logits is None

    @property
    def num_positions(self) -> int:
        return int((self.logits if self.logits is not None else self.ids).shape[0])

    @property
    def k(self) -> int | None:
        return None if self.ids is None else int(self.ids.shape[1])

    def select(self, index: torch.Tensor) -> TeacherSignal:
        """Rows ``index`` (int64 ``[M]`` or bool ``[N]``) of the signal, same policy."""
        if self.logits is not None:
            return replace(self, logits=self.logits[index])
        return replace(self, ids=self.ids[index], logprobs=self.logprobs[index], tail_logmass=self.tail_logmass[index],
                       target_logprobs=None if self.target_logprobs is None else self.target_logprobs[index])

    def to(self, device: torch.device | str) -> TeacherSignal:
        """The same signal with every tensor on ``device``."""
        return replace(self, **{f: getattr(self, f).to(device) for f in
                                ("logits", "ids", "logprobs", "tail_logmass", "target_logprobs")
                                if getattr(self, f) is not None})

    def tempered_sparse(self, temperature: float, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Kept log-probs ``[N, k]`` and tail log-mass ``[N]`` at distillation temperature ``temperature`` (fp32).

        Kept ids are exact up to the shared normalizer; the tail assumes even spread over the ``vocab_size − k``
        dropped ids (module docstring). At temperature 1 the stored values are returned (upcast, tail floored).
        """
        if not self.is_sparse:
            raise ValueError("tempered_sparse() needs a sparse signal")
        dtype = torch.promote_types(self.logprobs.dtype, torch.float32)
        kept = self.logprobs.to(dtype)
        tail = self.tail_logmass.to(dtype).clamp(min=LOG_ZERO)
        if temperature == 1.0:
            return kept, tail
        n_rest = vocab_size - kept.shape[-1]
        kept = kept / temperature
        if n_rest > 0:
            log_rest = math.log(n_rest)
            tail = log_rest + (tail - log_rest) / temperature
        else:
            tail = torch.full_like(tail, LOG_ZERO)
        log_z = torch.logaddexp(torch.logsumexp(kept, dim=-1), tail)
        return kept - log_z[:, None], (tail - log_z).clamp(min=LOG_ZERO)
