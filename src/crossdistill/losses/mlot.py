"""MultiLevelOT (Cui et al., AAAI 2025, arXiv 2412.14528): token-level and sequence-level optimal
transport between a teacher and a student with different vocabularies.

Paper version (canonical, ``reference_impl="paper"``), per sequence, with t / s the teacher / student probabilities
at temperature τ over their own vocabularies:

1. **Sequence-level ranking.** Teacher vocabulary ranked once per sequence by Σ_t t(t) (descending). The student is
   permuted by Q*, the permutation minimizing Σ_t Σ_i |t_SR,i(t) − [Q s(t)]_i|: one permutation for the whole
   sequence (ULD sorts every token separately).
2. **Top-k truncation** (k = 50) of both ranked vectors.
3. **HAD** = Σ_t Σ_i |t^k_i(t) − s^k_i(t)|;  **SL** = −Σ_t Σ_i t^k_i(t) log s^k_i(t) (τ = 1).
4. **SD** (sequence level, τ_SD = 2): C_ij = ‖t^k(i) − s^k(j)‖₁ between teacher position i and student position j,
   entropic OT with λ = 0.1 and N = 20 Sinkhorn rounds, SD = ⟨P, C⟩.
5. Total = CE + α (HAD + β SL + γ SD), α = 0.15, β = 0.1, γ = 0.1.

HAD and SL pair the teacher's and the student's completion positions left-aligned (position t with position t, up to
the shorter length), as the paper and ULD do; SD needs no pairing (that is its purpose), so it uses every position
of both sides, with row marginals n/m and column marginals 1 so its mass is the student's token count.

Implementation choices, stated because the paper leaves them open:

* Q* is solved on the k kept teacher ranks only (the truncated losses do not see the others), as a rectangular
  linear assignment (``scipy.optimize.linear_sum_assignment``) of the k ranks to the student's ``student_candidates``
  most probable ids by summed probability. With ``student_candidates >= V_s`` it is the exact minimizer over all
  student ids; the default (8·k) is exact whenever the optimal ids lie among those candidates, which is the case
  for peaked LLM distributions (the ids outside carry too little summed mass to beat them).
* The ranking and Q* are recomputed on the τ_SD probabilities for SD (each term ranks its own t and s).
* Ranking/assignment are discrete: no gradient flows through them, only through the gathered probabilities.

All terms are SUMS over student positions (HAD/SL over paired positions); the caller divides by the global count.

``reference_impl="official"`` reproduces the authors' code (2018cx/Multi-Level-OT) instead: see
:func:`official_terms`; docs/cross_tokenizer_methods.md lists where the two differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from crossdistill.losses.signal import TeacherSignal
from crossdistill.losses.sinkhorn import log_sinkhorn_plan, sinkhorn_distance

TERMS = ("had", "sl", "sd")


@dataclass(kw_only=True)
class MultiLevelOTConfig:
    """Hyperparameters of MultiLevelOT (paper defaults)."""

    top_k: int = 50
    """k of the top-k truncation of the ranked vectors (paper Table 8: 50 is best)."""
    temperature: float = 1.0
    """τ for HAD and SL (paper τ_SL = 1)."""
    sd_temperature: float = 2.0
    """τ_SD, the temperature of the probabilities compared by the Sinkhorn distance."""
    sinkhorn_epsilon: float = 0.1
    """λ, the entropic regularization: K = exp(−C/λ)."""
    sinkhorn_iters: int = 20
    """N, the number of Sinkhorn rounds (paper Table 7: 20; the official code uses 10)."""
    sinkhorn_grad: Literal["unroll", "envelope"] = "unroll"
    """How SD is differentiated: through every Sinkhorn round, or with the plan held constant."""
    student_ranking: Literal["assignment", "own"] = "assignment"
    """``assignment``: the paper's Q* (student permuted to best match the ranked teacher); ``own``: the student
    ranked by its own summed probability (the official code's default ``f=1``)."""
    student_candidates: int = 400
    """Student ids (by summed probability) that Q* may choose from; ≥ V_s makes it exact over the vocabulary."""
    reference_impl: Literal["paper", "official"] = "paper"
    """``paper`` (canonical) or ``official`` (reproduces the authors' code, 2018cx/Multi-Level-OT)."""

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"MultiLevelOTConfig.top_k={self.top_k} must be >= 1")
        for name in ("temperature", "sd_temperature", "sinkhorn_epsilon"):
            if not getattr(self, name) > 0:
                raise ValueError(f"MultiLevelOTConfig.{name}={getattr(self, name)} must be > 0")
        if self.sinkhorn_iters < 1:
            raise ValueError(f"MultiLevelOTConfig.sinkhorn_iters={self.sinkhorn_iters} must be >= 1")
        if self.student_ranking not in ("assignment", "own"):
            raise ValueError(f"MultiLevelOTConfig.student_ranking={self.student_ranking!r}: 'assignment' or 'own'")
        if self.student_candidates < self.top_k:
            raise ValueError(f"MultiLevelOTConfig.student_candidates={self.student_candidates} must be >= top_k="
                             f"{self.top_k}")
        if self.reference_impl not in ("paper", "official"):
            raise ValueError(f"MultiLevelOTConfig.reference_impl={self.reference_impl!r}: 'paper' or 'official'")


# ------------------------------------------------------------------------------------------------ teacher side


def _teacher_ranked(teacher: torch.Tensor | TeacherSignal, k: int, tau: float,
                    vocab_size: int | None) -> torch.Tensor:
    """Teacher probabilities at temperature τ, ranked by their sequence sum and truncated: ``[m, k']``, k' ≤ k.

    Dense ``[m, V_t]`` logits or a sparse signal over the m positions (ids outside a position's top-k count as 0 in
    the sum and in the vector: the sparse signal's error is at most its tail mass per position).
    """
    with torch.no_grad():
        if isinstance(teacher, TeacherSignal) and teacher.is_sparse:
            if vocab_size is None:
                raise ValueError("MultiLevelOT with a sparse teacher signal needs teacher_vocab_size (to temper "
                                 "the tail at τ != 1)")
            logp, _ = teacher.tempered_sparse(tau, vocab_size)
            ids = teacher.ids
            probs = logp.exp()
            total = torch.zeros(int(ids.max()) + 1 if ids.numel() else 1, device=probs.device)
            total.scatter_add_(0, ids.reshape(-1), probs.reshape(-1))
            order = total.argsort(descending=True)[: min(k, total.numel())]
            # [m, K_sig, k'] match of stored ids against the ranked ids; each id appears at most once per row.
            match = ids[:, :, None] == order[None, None, :]
            return (probs[:, :, None] * match).sum(1)
        logits = teacher.logits if isinstance(teacher, TeacherSignal) else teacher
        probs = torch.softmax(logits.float() / tau, dim=-1)
        order = probs.sum(0).argsort(descending=True)[: min(k, probs.shape[-1])]
        return probs[:, order]


# ------------------------------------------------------------------------------------------------ student side


def _student_ids(s_probs_nograd: torch.Tensor, t_ranked: torch.Tensor, cfg: MultiLevelOTConfig) -> torch.Tensor:
    """The student ids Q* puts at ranks 0..k'-1: ``[k']`` int64.

    Args:
        s_probs_nograd: ``[n, V_s]`` student probabilities (no grad).
        t_ranked: ``[m, k']`` ranked truncated teacher probabilities.
    """
    from scipy.optimize import linear_sum_assignment

    k = t_ranked.shape[1]
    summed = s_probs_nograd.sum(0)
    if cfg.student_ranking == "own":
        return summed.argsort(descending=True)[:k]
    c = min(cfg.student_candidates, summed.numel())
    cand = summed.argsort(descending=True)[:c]
    p = min(s_probs_nograd.shape[0], t_ranked.shape[0])
    if p == 0:
        return cand[:k]
    # cost[i, j] = Σ_t |t_i(t) − s_cand_j(t)| over the paired positions.
    cost = torch.cdist(t_ranked[:p].T.double(), s_probs_nograd[:p][:, cand].T.double(), p=1)
    rows, cols = linear_sum_assignment(cost.cpu().numpy())
    ids = torch.empty(k, dtype=torch.long, device=cand.device)
    ids[torch.as_tensor(rows, device=cand.device)] = cand[torch.as_tensor(cols, device=cand.device)]
    return ids


def _student_ranked_logp(s_logits: torch.Tensor, t_ranked: torch.Tensor, tau: float,
                         cfg: MultiLevelOTConfig) -> torch.Tensor:
    """Student log-probabilities at τ at the Q* ids, ``[n, k']``, differentiable; the [n, V_s] softmax is never
    kept for backward (only a log-sum-exp and a gather)."""
    z = s_logits.float() / tau
    with torch.no_grad():
        ids = _student_ids(torch.softmax(z, dim=-1), t_ranked, cfg)
    return z[:, ids] - torch.logsumexp(z, dim=-1, keepdim=True)


# ------------------------------------------------------------------------------------------------ paper


def multilevel_ot_terms(
    student_logits: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor | TeacherSignal],
    config: MultiLevelOTConfig | None = None,
    *,
    teacher_vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """MultiLevelOT term sums over a batch of sequences.

    Args:
        student_logits: per sequence, ``[n_b, V_s]`` student logits at its completion positions, in order (grad).
        teacher: per sequence, ``[m_b, V_t]`` teacher logits at its completion positions, or a
            :class:`TeacherSignal` (dense or sparse top-k, k ≥ ``top_k`` recommended) over those m_b positions.
        config: hyperparameters; ``reference_impl="official"`` dispatches to :func:`official_terms`.
        teacher_vocab_size: V_t, needed only for a sparse teacher (tail tempering at τ_SD).

    Returns:
        ``{"had", "sl", "sd"}``: scalar fp32 sums (HAD/SL over the min(n_b, m_b) paired positions, SD over the
        student's n_b positions). Weight them α, αβ, αγ (:data:`DEFAULT_WEIGHTS`).
    """
    cfg = config or MultiLevelOTConfig()
    if len(student_logits) != len(teacher):
        raise ValueError(f"student_logits has {len(student_logits)} sequences, teacher {len(teacher)}")
    if cfg.reference_impl == "official":
        return official_terms(student_logits, teacher, cfg)
    dev = student_logits[0].device if len(student_logits) else torch.device("cpu")
    had = torch.zeros((), device=dev)
    sl = torch.zeros((), device=dev)
    t_sd, s_sd = [], []
    for s_logits, t in zip(student_logits, teacher):
        n = s_logits.shape[0]
        m = t.num_positions if isinstance(t, TeacherSignal) else t.shape[0]
        if n == 0 or m == 0:
            t_sd.append(s_logits.new_zeros(m, 1).float())
            s_sd.append(s_logits.new_zeros(n, 1).float() + 0.0 * s_logits.float().sum())
            continue
        p = min(n, m)
        k = min(cfg.top_k, s_logits.shape[-1])          # a student vocabulary smaller than k bounds the support
        tk = _teacher_ranked(t, k, cfg.temperature, teacher_vocab_size)                     # [m, k]
        s_logp = _student_ranked_logp(s_logits, tk, cfg.temperature, cfg)                   # [n, k]
        had = had + (tk[:p] - s_logp[:p].exp()).abs().sum()
        sl = sl - (tk[:p] * s_logp[:p]).sum()
        tk2 = _teacher_ranked(t, k, cfg.sd_temperature, teacher_vocab_size)                # [m, k]
        s_sd.append(_student_ranked_logp(s_logits, tk2, cfg.sd_temperature, cfg).exp())    # [n, k]
        t_sd.append(tk2)
    sd = sequence_sinkhorn_sum(t_sd, s_sd, cfg)
    return {"had": had, "sl": sl, "sd": sd}


def sequence_sinkhorn_sum(teacher_vecs: Sequence[torch.Tensor], student_vecs: Sequence[torch.Tensor],
                          cfg: MultiLevelOTConfig) -> torch.Tensor:
    """Σ_b ⟨P_b, C_b⟩ with C_b[i, j] = ‖t_b(i) − s_b(j)‖₁, batched over sequences (padded, masked).

    Args:
        teacher_vecs: per sequence ``[m_b, k]`` truncated teacher vectors (rows).
        student_vecs: per sequence ``[n_b, k]`` truncated student vectors (columns), with grad.

    Marginals: rows n_b/m_b, columns 1 (total mass n_b, one unit per student position).
    """
    bsz = len(teacher_vecs)
    if bsz == 0:
        return torch.zeros(())
    k = max(max(v.shape[1] for v in teacher_vecs), max(v.shape[1] for v in student_vecs))
    t_pad = _pad([F.pad(v, (0, k - v.shape[1])) for v in teacher_vecs])                   # [B, M, k]
    s_pad = _pad([F.pad(v, (0, k - v.shape[1])) for v in student_vecs])                   # [B, N, k]
    m = torch.tensor([v.shape[0] for v in teacher_vecs], device=t_pad.device)
    n = torch.tensor([v.shape[0] for v in student_vecs], device=t_pad.device)
    row_mask = torch.arange(t_pad.shape[1], device=t_pad.device)[None] < m[:, None]
    col_mask = torch.arange(s_pad.shape[1], device=t_pad.device)[None] < n[:, None]
    if t_pad.shape[1] == 0 or s_pad.shape[1] == 0:
        return s_pad.sum() * 0.0
    cost = torch.cdist(t_pad, s_pad, p=1)                                                   # [B, M, N]
    a = row_mask.float() * (n.float() / m.clamp_min(1).float())[:, None]
    return sinkhorn_distance(cost, a, col_mask.float(), epsilon=cfg.sinkhorn_epsilon, n_iters=cfg.sinkhorn_iters,
                             row_mask=row_mask, col_mask=col_mask, grad=cfg.sinkhorn_grad).sum()


def _pad(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.nn.utils.rnn.pad_sequence(list(rows), batch_first=True)


# ------------------------------------------------------------------------------------------------ official code


def _official_probs(logits: torch.Tensor) -> torch.Tensor:
    """The official ``normalize`` (divide by the unbiased per-row std + 1e-4, no centering) then softmax, T = 1."""
    z = logits.float()
    return torch.softmax(z / (z.std(dim=-1, keepdim=True) + 1e-4), dim=-1)


def official_terms(student_logits: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor | TeacherSignal],
                   cfg: MultiLevelOTConfig) -> dict[str, torch.Tensor]:
    """The official code's three distillation terms as BATCH values, not sums.

    ``had`` = mean over sequences of the per-position L1 mean; ``sl`` = KL_wo(teacher, student), a mean over all
    padded [B, L] positions of −Σ softmax(s^k)·log_softmax(t^k); ``sd`` = Σ_b 0.001·⟨P_b, C_b⟩ with a second softmax
    at T = 2, plain-domain Sinkhorn (rows then columns to 1) over the padded L × L positions, ε and N from the config
    (the code uses N = 10). The official total is CE + 1.5·(had + 0.1·sl + 0.1·sd); to fit the sum contract the
    objective adapter multiplies these by the micro-batch's target count. Dense teacher logits only.
    """
    if any(isinstance(t, TeacherSignal) and t.is_sparse for t in teacher):
        raise ValueError("MultiLevelOT reference_impl='official' needs dense teacher logits (the official code "
                         "normalizes by the full-vocabulary std); use reference_impl='paper' with a sparse signal")
    t_list = [(t.logits if isinstance(t, TeacherSignal) else t) for t in teacher]
    sizes_s = [int(s.shape[0]) for s in student_logits]
    sizes_t = [int(t.shape[0]) for t in t_list]
    length = max(sizes_s + sizes_t)
    s_pad = F.pad(_pad([_official_probs(s) for s in student_logits]), (0, 0, 0, length - max(sizes_s)))
    t_pad = F.pad(_pad([_official_probs(t) for t in t_list]), (0, 0, 0, length - max(sizes_t)))
    k = cfg.top_k
    # improved_sort: one vocabulary permutation per batch, from the sum over batch and time; student by its own sum.
    t_k = t_pad[:, :, t_pad.sum(dim=(0, 1)).argsort(descending=True)[:k]]
    with torch.no_grad():
        s_order = s_pad.sum(dim=(0, 1)).argsort(descending=True)[:k]
    s_k = s_pad[:, :, s_order]
    had_rows = []
    for b in range(len(sizes_s)):
        p = min(sizes_s[b], sizes_t[b])
        had_rows.append((s_k[b, :p] - t_k[b, :p]).abs().sum(-1).mean() if p else s_k.sum() * 0.0)
    had = torch.stack(had_rows).mean()
    sl = -(torch.softmax(s_k, dim=-1) * torch.log_softmax(t_k, dim=-1)).sum(-1).mean()
    p_t = torch.softmax(t_k / 2.0, dim=-1)
    p_s = torch.softmax(s_k / 2.0, dim=-1)
    cost = torch.cdist(p_t, p_s, p=1)                                                       # [B, L, L]
    plan = log_sinkhorn_plan(cost, epsilon=cfg.sinkhorn_epsilon, n_iters=cfg.sinkhorn_iters)
    sd = 0.001 * (plan * cost).sum()
    return {"had": had, "sl": sl, "sd": sd}


DEFAULT_WEIGHTS = {"ce": 1.0, "had": 0.15, "sl": 0.15 * 0.1, "sd": 0.15 * 0.1}
"""Paper weights: CE + α(HAD + β SL + γ SD) with α = 0.15, β = γ = 0.1."""

OFFICIAL_WEIGHTS = {"ce": 1.0, "had": 1.5, "sl": 1.5 * 0.1, "sd": 1.5 * 0.1}
"""Official code: CE + distil_factor·(HAD + 0.1·SL_code + 0.1·SD_code), distil_factor = 1.5."""
