"""CDM — Contextual Dynamic Mapping (Chen et al., Findings of ACL 2025, arXiv 2502.11104).

Per sequence (completion positions only; "base" = student, "blending" = teacher in the authors' code):

1. **Entropy weights** per position and side: H = entropy(softmax(z)), Ĥ = min-max normalized over the sequence,
   weight = int(3·sigmoid(4Ĥ − 2) + 3) ∈ {3, 4, 5} (uncertain positions cost more to align).
2. **Weighted DTW** over the token strings (spaces removed): cost(i, j) = ed(t_i, s_j)·w_T(i)·w_S(j); EOS ↔ EOS (and
   identical special tokens) cost 0. Backtrack → many-to-many pairs (:mod:`crossdistill.align.dtw`).
3. **Merge**: each student position gets the mean teacher logits over the teacher positions paired with it; runs of
   student positions paired with the same teacher set are collapsed and their logits averaged, so both sides have one
   row per group.
4. **Dynamic vocabulary map** (:class:`crossdistill.align.dynamic_map.DynamicVocabMap`): unmapped teacher top-k ids
   (k = 100) get the closest student top-k candidate at that group if its normalized edit distance is < 0.3.
5. **Gather** in both directions: teacher top-k ids → their student ids, student top-k ids → their teacher ids;
   logits of unmapped entries set to −10000 on both sides; the two k-vectors concatenated (2k entries).
6. **KD** = forward KL(p_T ‖ p_S) over the 2k gathered logits at ``kd_temperature`` (0.8), summed over groups.
   Recipe weight: 0.9·CE + 0.1·KD (``kd_alpha = 0.9``).

Deviations from the reconstructed copy of the authors' code (quirks of that copy, not of the method): the temperature
divides both sides, no T² inside (the trainer applies it if configured), the sum is over groups (the trainer
divides by the global student target count) instead of a mean over all finite elements.

The DTW and map update run on the CPU in NumPy (they are discrete); only the gather/KL touch autograd.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from crossdistill.align.dtw import pairwise_edit_distance, weighted_dtw
from crossdistill.align.dynamic_map import DynamicVocabMap
from crossdistill.losses.divergences import forward_kl
from crossdistill.losses.signal import TeacherSignal

UNMAPPED_LOGIT = -10000.0
"""Logit given to gathered entries without a counterpart (the CDM code's value): exp of it is exactly 0."""


@dataclass(kw_only=True)
class CDMConfig:
    """Hyperparameters of CDM (the copy's ``ModelArguments`` defaults)."""

    kd_temperature: float = 0.8
    """Temperature dividing both sides' gathered logits in the KL."""
    top_k: int = 100
    """Top-k ids per side used by the dynamic map and the gather."""
    threshold: float = 0.3
    """Normalized edit distance below which a context pair is added to the map."""
    zero_cost_pairs: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    """(teacher token, student token) strings whose DTW cost is 0 (e.g. the two EOS tokens); identical strings
    already cost 0."""

    def __post_init__(self) -> None:
        if not self.kd_temperature > 0:
            raise ValueError(f"CDMConfig.kd_temperature={self.kd_temperature} must be > 0")
        if self.top_k < 1:
            raise ValueError(f"CDMConfig.top_k={self.top_k} must be >= 1")
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"CDMConfig.threshold={self.threshold} must be in (0, 1]")


def entropy_weights(logp: torch.Tensor, normalized: bool = False) -> np.ndarray:
    """CDM's integer alignment weights from per-position log-probabilities.

    Args:
        logp: ``[n, V]`` logits, or log-probabilities with ``normalized=True`` (skips a log-softmax).

    Returns:
        ``[n]`` int64 in {3, 4, 5}. A sequence with constant entropy gets 3 everywhere (Ĥ = 0).
    """
    with torch.no_grad():
        lp = logp.float() if normalized else torch.log_softmax(logp.float(), dim=-1)
        h = -(lp.exp() * lp).sum(-1)
        if h.numel() == 0:
            return np.zeros(0, dtype=np.int64)
        span = h.max() - h.min()
        hn = (h - h.min()) / span if span > 0 else torch.zeros_like(h)
        factor = torch.sigmoid(4.0 * hn - 2.0)
        return (3.0 * factor + 3.0).floor().long().cpu().numpy()


def dtw_groups(teacher_strings: Sequence[str], student_strings: Sequence[str], t_weights: np.ndarray,
               s_weights: np.ndarray, zero_cost_pairs: frozenset[tuple[str, str]] = frozenset()
               ) -> tuple[np.ndarray, np.ndarray]:
    """Weighted-DTW alignment collapsed into groups.

    Args:
        teacher_strings: m teacher token strings; student_strings: n student token strings.
        t_weights: ``[m]``; s_weights: ``[n]`` entropy weights.

    Returns:
        ``(student_group [n], teacher_range [G, 2])``: the group of every student position (groups are runs of
        consecutive positions, numbered 0..G−1 in order) and each group's inclusive teacher position range.
    """
    t_clean = [s.replace(" ", "").replace("\u2581", "") for s in teacher_strings]
    s_clean = [s.replace(" ", "").replace("\u2581", "") for s in student_strings]
    cost = pairwise_edit_distance(t_clean, s_clean).astype(np.float64)
    if zero_cost_pairs:
        t_arr = np.asarray(list(teacher_strings), dtype=object)
        s_arr = np.asarray(list(student_strings), dtype=object)
        for t_tok, s_tok in zero_cost_pairs:
            cost[np.ix_(np.nonzero(t_arr == t_tok)[0], np.nonzero(s_arr == s_tok)[0])] = 0.0
    cost *= np.asarray(t_weights, dtype=np.float64)[:, None] * np.asarray(s_weights, dtype=np.float64)[None, :]
    path, _ = weighted_dtw(cost)
    n = len(student_strings)
    lo = np.full(n, np.iinfo(np.int64).max)
    hi = np.full(n, -1)
    if path:
        pi = np.array([p[0] for p in path])
        pj = np.array([p[1] for p in path])
        np.minimum.at(lo, pj, pi)
        np.maximum.at(hi, pj, pi)
    new = np.ones(n, dtype=bool)
    new[1:] = (lo[1:] != lo[:-1]) | (hi[1:] != hi[:-1])
    group = np.cumsum(new) - 1
    starts = np.nonzero(new)[0]
    return group, np.stack([lo[starts], hi[starts]], axis=1) if n else np.zeros((0, 2), dtype=np.int64)


def _teacher_logp(t: torch.Tensor | TeacherSignal, vocab_size: int | None) -> torch.Tensor:
    """``[m, V_t]`` teacher log-probabilities (no grad). A sparse signal is spread: kept ids exact, the tail mass
    shared evenly by the other ids (softmax- and mean-equivalent to logits for what CDM uses: top-k and ratios)."""
    with torch.no_grad():
        if isinstance(t, TeacherSignal):
            if not t.is_sparse:
                return torch.log_softmax(t.logits.float(), -1)
            if vocab_size is None:
                raise ValueError("CDM with a sparse teacher signal needs teacher_vocab_size")
            kept, tail = t.tempered_sparse(1.0, vocab_size)
            rest = max(vocab_size - kept.shape[1], 1)
            out = (tail - float(np.log(rest)))[:, None].expand(-1, vocab_size).clone()
            return out.scatter(1, t.ids, kept)
        return torch.log_softmax(t.float(), -1)


def cdm_terms(
    student_logits: Sequence[torch.Tensor],
    teacher: Sequence[torch.Tensor | TeacherSignal],
    student_strings: Sequence[Sequence[str]],
    teacher_strings: Sequence[Sequence[str]],
    vocab_map: DynamicVocabMap,
    config: CDMConfig | None = None,
    *,
    teacher_vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """CDM term sums over a batch of sequences; updates ``vocab_map`` in place.

    Args:
        student_logits: per sequence, ``[n_b, V_s]`` student logits at its completion positions (grad).
        teacher: per sequence, ``[m_b, V_t]`` teacher logits at its completion positions, or a
            :class:`TeacherSignal` over them (sparse: k ≥ ``top_k`` is needed for an exact top-k).
        student_strings / teacher_strings: per sequence, the token strings of the TARGET tokens of those positions
            (what each position predicts), lengths n_b / m_b.
        vocab_map: the run's persistent :class:`DynamicVocabMap` (teacher → student).
        config: hyperparameters.
        teacher_vocab_size: V_t, needed for a sparse teacher.

    Returns:
        ``{"kd": Σ_groups KL, "groups": number of groups (float, no grad), "mapped": Σ_groups fraction of the 2k
        gathered entries that are mapped (no grad)}``.
    """
    cfg = config or CDMConfig()
    if not (len(student_logits) == len(teacher) == len(student_strings) == len(teacher_strings)):
        raise ValueError("student_logits, teacher, student_strings and teacher_strings must have one entry per "
                         f"sequence; got {len(student_logits)}, {len(teacher)}, {len(student_strings)}, "
                         f"{len(teacher_strings)}")
    dev = student_logits[0].device if len(student_logits) else torch.device("cpu")
    kd = torch.zeros((), device=dev)
    n_groups = 0
    mapped = 0.0
    for zs, t, ss, ts in zip(student_logits, teacher, student_strings, teacher_strings):
        n = zs.shape[0]
        t_logp = _teacher_logp(t, teacher_vocab_size).to(dev)
        m = t_logp.shape[0]
        if n != len(ss) or m != len(ts):
            raise ValueError(f"a sequence has {n} student rows but {len(ss)} student strings, or {m} teacher rows "
                             f"but {len(ts)} teacher strings")
        if n == 0 or m == 0:
            kd = kd + 0.0 * zs.float().sum()
            continue
        zs = zs.float()
        group, t_range = dtw_groups(ts, ss, entropy_weights(t_logp, normalized=True), entropy_weights(zs),
                                    cfg.zero_cost_pairs)
        g = t_range.shape[0]
        gid = torch.as_tensor(group, device=dev)
        count_s = torch.bincount(gid, minlength=g).float()
        s_merged = torch.zeros(g, zs.shape[1], device=dev).index_add(0, gid, zs) / count_s[:, None]
        lens = t_range[:, 1] - t_range[:, 0] + 1
        rows = torch.as_tensor(np.concatenate([np.arange(a, b + 1) for a, b in t_range]), device=dev)
        owner = torch.as_tensor(np.repeat(np.arange(g), lens), device=dev)
        t_merged = torch.zeros(g, t_logp.shape[1], device=dev).index_add(0, owner, t_logp[rows])
        t_merged = t_merged / torch.as_tensor(lens, device=dev, dtype=torch.float32)[:, None]
        kd_seq, frac = _gathered_kl(s_merged, t_merged, vocab_map, cfg)
        kd = kd + kd_seq
        n_groups += g
        mapped += frac
    return {"kd": kd, "groups": torch.tensor(float(n_groups), device=dev), "mapped": torch.tensor(mapped, device=dev)}


def _gathered_kl(s_merged: torch.Tensor, t_merged: torch.Tensor, vocab_map: DynamicVocabMap,
                 cfg: CDMConfig) -> tuple[torch.Tensor, float]:
    """Steps 4–6 on merged rows ``[G, V_s]`` (grad) and ``[G, V_t]``: Σ_g KL over the 2k gathered logits."""
    k_t = min(cfg.top_k, t_merged.shape[1])
    k_s = min(cfg.top_k, s_merged.shape[1])
    t_ids = t_merged.topk(k_t, dim=-1).indices                               # [G, k]
    with torch.no_grad():
        s_ids = s_merged.topk(k_s, dim=-1).indices
    vocab_map.update(t_ids.cpu().numpy(), s_ids.cpu().numpy())
    fwd = torch.as_tensor(vocab_map.mapping, device=t_ids.device)[t_ids]    # teacher top-k -> student ids
    inv = torch.as_tensor(vocab_map.inverse(), device=t_ids.device)[s_ids]  # student top-k -> teacher ids
    m1, m2 = fwd >= 0, inv >= 0
    neg = torch.full((), UNMAPPED_LOGIT, device=t_ids.device)
    t_cat = torch.cat([torch.where(m1, t_merged.gather(1, t_ids), neg),
                       torch.where(m2, t_merged.gather(1, inv.clamp_min(0)), neg)], dim=1)
    s_cat = torch.cat([torch.where(m1, s_merged.gather(1, fwd.clamp_min(0)), neg),
                       torch.where(m2, s_merged.gather(1, s_ids), neg)], dim=1)
    any_mapped = (m1.any(1) | m2.any(1)).float()
    tau = cfg.kd_temperature
    kl = forward_kl(torch.log_softmax(s_cat / tau, -1), torch.log_softmax(t_cat / tau, -1))
    frac = float(torch.cat([m1, m2], 1).float().mean(1).sum())
    return (kl * any_mapped).sum(), frac


DEFAULT_WEIGHTS = {"ce": 0.9, "kd": 0.1, "groups": 0.0, "mapped": 0.0}
"""CDM recipe: ``kd_alpha·CE + (1 − kd_alpha)·KD`` with kd_alpha = 0.9; the diagnostics are logged only."""
