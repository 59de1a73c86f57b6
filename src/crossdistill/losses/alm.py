"""ALM — Approximate Likelihood Matching (Minixhofer, Vulić, Ponti, arXiv 2503.20083; tokenkit): the two models'
likelihoods of the same chunk of text, compared chunk by chunk (docs/cross_tokenizer_methods.md, "ALM").

Per side, a chunk's log-likelihood is the sum of the log-probabilities of the ACTUAL tokens in it (a scatter-add of
per-row log-probs over the token -> chunk map) — nothing else of either distribution is needed, which is exactly
what a teacher cache or a served teacher returns. Chunks come from :mod:`crossdistill.align.chunks`:

1. *unconstrained*: every group of the span alignment (every shared boundary), or the *space* variant's unions;
2. ``merge_by_space_prob``: consecutive chunks merge until the TEACHER's probability that the next token starts with
   a boundary byte (space, tab, newline, or a special token) exceeds ``threshold`` — a chunk ending in the middle of a
   word is merged with what follows;
3. ``append_space`` (debiasing): each side's chunk log-likelihood gains ``log P(next token starts with a boundary
   byte)`` at the row after the chunk, so the compared event is "this text, then a word boundary" on both sides
   (at the end of an example, where nothing follows, the boundary is certain: +0).

Chunk log-likelihoods are clipped at 0 and compared by a distance on the pair (teacher ``log y_t``, student
``log y_s``), :func:`alm_distance`:

* ``binary_ce`` (default): each likelihood binarized at temperature τ (``y = exp(log y / τ − ε)``, τ = 100) and
  treated as a Bernoulli: ``−[y_t log y_s + (1 − y_t) log(1 − y_s)]``;
* ``reverse_binary_kl``: ``KL(Bern(y_s) ‖ Bern(y_t))`` at the same τ;
* ``abs``: ``|log y_t − log y_s|`` (no τ);
* ``abs_exp``: ``|y_t − y_s|`` at τ;
* ``renyi``: the Rényi divergence of order α between ``Bern(y_t)`` and ``Bern(y_s)`` (no τ, as tokenkit).

The loss is a SUM over chunks (each weighted 1, or by its number of student target tokens with
``chunk_weight="tokens"``); the trainer divides it by the step's student target count (docs/design.md, contract 2).
The teacher side never carries gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from crossdistill.align.chunks import ids_from_closures, last_of_example
from crossdistill.align.spans import BatchAlignment
from crossdistill.losses.signal import LOG_ZERO, log1mexp

ALMDistance = Literal["binary_ce", "reverse_binary_kl", "abs", "abs_exp", "renyi"]
ALM_DISTANCES: tuple[str, ...] = ("binary_ce", "reverse_binary_kl", "abs", "abs_exp", "renyi")
ChunkWeight = Literal["one", "tokens"]


def alm_distance(name: str, teacher_logp: torch.Tensor, student_logp: torch.Tensor, *,
                 binarization_temperature: float = 100.0, epsilon: float = 1e-6,
                 renyi_alpha: float = 0.5) -> torch.Tensor:
    """Elementwise distance between chunk log-likelihoods ``[C], [C] -> [C]`` (module docstring).

    Args:
        name: one of :data:`ALM_DISTANCES`.
        teacher_logp, student_logp: log-likelihoods ``≤ 0`` (natural log).
        binarization_temperature: τ of the binarized distances.
        epsilon: subtracted after dividing by τ, so ``log(1 − y)`` stays finite at ``log y = 0``.
        renyi_alpha: order α of ``renyi`` (α > 0, α ≠ 1).
    """
    if name not in ALM_DISTANCES:
        raise ValueError(f"ALM distance {name!r} is not one of {ALM_DISTANCES}")
    if not binarization_temperature > 0:
        raise ValueError(f"binarization_temperature={binarization_temperature} must be > 0")
    t = teacher_logp.to(student_logp.dtype)
    s = student_logp
    if name == "abs":
        return (t - s).abs()
    if name == "renyi":
        if not (renyi_alpha > 0 and renyi_alpha != 1):
            raise ValueError(f"renyi_alpha={renyi_alpha} must be > 0 and != 1")
        lt, ls = t - epsilon, s - epsilon
        a = renyi_alpha
        return torch.logaddexp(a * lt + (1 - a) * ls, a * log1mexp(lt) + (1 - a) * log1mexp(ls)) / (a - 1)
    lt = t / binarization_temperature - epsilon
    ls = s / binarization_temperature - epsilon
    if name == "binary_ce":
        return -(lt.exp() * ls + (-torch.expm1(lt)) * log1mexp(ls))
    if name == "reverse_binary_kl":
        return ls.exp() * (ls - lt) + (-torch.expm1(ls)) * (log1mexp(ls) - log1mexp(lt))
    return (lt.exp() - ls.exp()).abs()  # abs_exp


def group_sums(row_values: torch.Tensor, rows: torch.Tensor, groups: torch.Tensor, num_groups: int) -> torch.Tensor:
    """``[G]`` sum of ``row_values[rows]`` per group (the token -> chunk matrix product)."""
    out = torch.zeros(num_groups, dtype=row_values.dtype, device=row_values.device)
    return out.index_add(0, groups, row_values[rows])


def next_row_values(row_values: torch.Tensor, last_rows: torch.Tensor, row_example: torch.Tensor) -> torch.Tensor:
    """``row_values`` at the row AFTER each of ``last_rows`` (the distribution over the token that follows), or 0
    where no target row of the same example follows."""
    n = row_values.numel()
    if last_rows.numel() == 0:
        return row_values.new_zeros(0)
    nxt = last_rows + 1
    safe = nxt.clamp(max=max(n - 1, 0))
    ok = (nxt < n) & (row_example[safe] == row_example[last_rows])
    return torch.where(ok, row_values[safe], torch.zeros_like(row_values[safe]))


def _last_unit(ids: torch.Tensor, count: int) -> torch.Tensor:
    """``[count]`` index of the last unit of each chunk (ids non-decreasing)."""
    pos = torch.arange(ids.numel(), device=ids.device)
    return torch.zeros(count, dtype=torch.long, device=ids.device).scatter_reduce(0, ids, pos, "amax",
                                                                                  include_self=False)


@dataclass
class ALMOutput:
    """Result of :func:`alm_loss`."""

    loss: torch.Tensor
    """Scalar Σ_chunks weight · distance."""
    per_chunk: torch.Tensor
    """``[C]`` distance of every chunk (detached)."""
    student_logp: torch.Tensor
    """``[C]`` the student's chunk log-likelihoods (debiased when ``append_space``), detached."""
    teacher_logp: torch.Tensor
    """``[C]`` the teacher's, detached."""
    chunk_tokens: torch.Tensor
    """``[C]`` student target tokens per chunk."""
    num_chunks: int


def alm_loss(student_logp: torch.Tensor, teacher_logp: torch.Tensor, alignment: BatchAlignment, *,
             student_row_example: torch.Tensor, teacher_row_example: torch.Tensor,
             student_boundary_logp: torch.Tensor | None = None, teacher_boundary_logp: torch.Tensor | None = None,
             group_closures: torch.Tensor | None = None, merge_by_space_prob: bool = True, threshold: float = 0.1,
             append_space: bool = True, distance: str = "binary_ce", binarization_temperature: float = 100.0,
             epsilon: float = 1e-6, renyi_alpha: float = 0.5, chunk_weight: ChunkWeight = "one") -> ALMOutput:
    """ALM summed over chunks (module docstring).

    Args:
        student_logp: ``[N_s]`` log-probability of the actual token at every student target row (with grad).
        teacher_logp: ``[N_t]`` the same for the teacher's target rows (no grad needed).
        alignment: the groups (:class:`~crossdistill.align.spans.BatchAlignment`) — the unconstrained chunks.
        student_row_example, teacher_row_example: ``[N_s]`` / ``[N_t]`` example index of every target row.
        student_boundary_logp, teacher_boundary_logp: ``[N]`` per row, ``log P(next token starts with a boundary
            byte)`` of each side (needed for ``append_space``; the teacher's also for ``merge_by_space_prob``).
        group_closures: ``[G]`` bool (:func:`crossdistill.align.chunks.space_closures`) for the space variant;
            None: unconstrained (one chunk per group).
        merge_by_space_prob, threshold: merge chunks until the teacher's boundary probability exceeds ``threshold``.
        append_space: debias with the boundary log-probability after each chunk.
        distance, binarization_temperature, epsilon, renyi_alpha: :func:`alm_distance`.
        chunk_weight: ``"one"`` (each chunk counts once) or ``"tokens"`` (by its student target tokens).
    """
    if chunk_weight not in ("one", "tokens"):
        raise ValueError(f"chunk_weight={chunk_weight!r} must be 'one' or 'tokens'")
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold} must be in [0, 1]")
    if (append_space or merge_by_space_prob) and teacher_boundary_logp is None:
        raise ValueError("append_space / merge_by_space_prob need teacher_boundary_logp")
    if append_space and student_boundary_logp is None:
        raise ValueError("append_space needs student_boundary_logp")
    G = alignment.num_groups
    dev = student_logp.device
    teacher_logp = teacher_logp.detach().to(student_logp.dtype)
    if G == 0:
        zero = student_logp.sum() * 0.0
        empty = student_logp.new_zeros(0)
        return ALMOutput(zero, empty, empty, empty, empty, 0)
    g_s = group_sums(student_logp, alignment.student_rows, alignment.student_groups, G)
    g_t = group_sums(teacher_logp, alignment.teacher_rows, alignment.teacher_groups, G)
    g_n = torch.bincount(alignment.student_groups, minlength=G).to(student_logp.dtype)
    if group_closures is None:
        ids, C = torch.arange(G, device=dev), G
    else:
        if group_closures.shape != (G,):
            raise ValueError(f"group_closures must be [G={G}] bool, got {tuple(group_closures.shape)}")
        ids, C = ids_from_closures(group_closures | last_of_example(alignment.group_example))

    def pool(x: torch.Tensor, into: torch.Tensor, count: int) -> torch.Tensor:
        return torch.zeros(count, dtype=x.dtype, device=dev).index_add(0, into, x)

    c_s, c_t, c_n = pool(g_s, ids, C), pool(g_t, ids, C), pool(g_n, ids, C)
    last_group = _last_unit(ids, C)
    example = alignment.group_example[last_group]
    need_bounds = append_space or merge_by_space_prob
    if need_bounds:
        _, t_last = alignment.first_last("teacher")
        b_t = next_row_values(teacher_boundary_logp.detach().to(student_logp.dtype), t_last[last_group],
                              teacher_row_example)
        if student_boundary_logp is not None:
            _, s_last = alignment.first_last("student")
            b_s = next_row_values(student_boundary_logp, s_last[last_group], student_row_example)
        else:
            b_s = None
        if merge_by_space_prob:
            close = (b_t.exp() > threshold) | last_of_example(example)
            ids2, C2 = ids_from_closures(close)
            last_chunk = _last_unit(ids2, C2)
            c_s, c_t, c_n = pool(c_s, ids2, C2), pool(c_t, ids2, C2), pool(c_n, ids2, C2)
            b_t = b_t[last_chunk]
            b_s = None if b_s is None else b_s[last_chunk]
            C = C2
        if append_space:
            c_s = c_s + b_s
            c_t = c_t + b_t
    c_s = c_s.clamp(max=0.0)
    c_t = c_t.clamp(max=0.0)
    d = alm_distance(distance, c_t, c_s, binarization_temperature=binarization_temperature, epsilon=epsilon,
                     renyi_alpha=renyi_alpha)
    w = c_n if chunk_weight == "tokens" else torch.ones_like(d)
    return ALMOutput((w * d).sum(), d.detach(), c_s.detach(), c_t.detach(), c_n.detach(), C)


def sparse_boundary_logp(ids: torch.Tensor, logprobs: torch.Tensor, tail_logmass: torch.Tensor,
                         mask: torch.Tensor) -> torch.Tensor:
    """``[N]`` estimated ``log P(next token ∈ mask)`` from a top-k signal: the kept ids' mass inside the mask plus
    the tail's share, assuming the tail is spread evenly over the ``V − k`` dropped ids (exact when the tail is 0).

    Args:
        ids, logprobs: ``[N, k]`` kept ids and their log-probs (temperature 1); tail_logmass: ``[N]``.
        mask: ``[V]`` bool.
    """
    v, k = mask.numel(), ids.shape[1]
    dtype = torch.promote_types(logprobs.dtype, torch.float32)
    lp = logprobs.to(dtype)
    in_mask = mask[ids]
    kept = torch.logsumexp(lp.masked_fill(~in_mask, float("-inf")), dim=-1)
    rest = (int(mask.sum()) - in_mask.sum(-1)).clamp(min=0).to(dtype)
    n_rest = max(v - k, 1)
    share = torch.where(rest > 0, torch.log(rest.clamp(min=1)) - math.log(n_rest), torch.full_like(rest, -math.inf))
    out = torch.logaddexp(kept, tail_logmass.to(dtype) + share)
    return out.clamp(min=LOG_ZERO, max=0.0)


@torch.no_grad()
def dense_row_stats(logits: torch.Tensor, rows: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None,
                    chunk_rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor | None]:
    """No-grad per-row ``log p(target)`` and ``log P(token ∈ mask)`` of dense logits, ``chunk_rows`` rows at a time
    (the teacher side of ALM).

    Args:
        logits: ``[R, V]`` raw logits (e.g. the teacher's, flattened over batch and length).
        rows: ``[n]`` rows of ``logits`` to read; targets: ``[n]`` the actual token of each.
        mask: ``[V]`` bool, or None.
    """
    lp, bd = [], []
    for lo in range(0, rows.numel(), chunk_rows):
        z = logits[rows[lo:lo + chunk_rows]]
        z = z if z.dtype == torch.float64 else z.float()
        lse = torch.logsumexp(z, dim=-1)
        lp.append(z.gather(-1, targets[lo:lo + chunk_rows, None]).squeeze(-1) - lse)
        if mask is not None:
            bd.append(torch.logsumexp(z.masked_fill(~mask, float("-inf")), dim=-1) - lse)
    empty = logits.new_zeros(0, dtype=torch.float32)
    logp = torch.cat(lp) if lp else empty
    if mask is None:
        return logp, None
    return logp, (torch.cat(bd) if bd else empty).clamp(min=LOG_ZERO, max=0.0)


__all__ = ["ALMDistance", "ALMOutput", "ALM_DISTANCES", "alm_distance", "alm_loss", "dense_row_stats", "group_sums",
           "next_row_values", "sparse_boundary_logp"]
