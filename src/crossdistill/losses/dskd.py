"""Dual-space knowledge distillation: DSKD (same vocabulary), DSKD-CMA (cross-model attention, different
vocabularies) and DSKDv2-ETA (exact token alignment); docs/cross_tokenizer_methods.md describes all three.

Each model's distribution is also produced in the OTHER model's representation space, through learnable projectors
and the other model's frozen lm_head:

* student space: z_t2s = P_t2s(h_T) · sg(W_S)ᵀ. ``t2s_ce`` = CE(z_t2s, y) trains P_t2s; ``t2s_kd`` =
  D(z_S, sg(z_t2s)) distills into the student.
* teacher space: z_s2t = P_s2t(h_S) · sg(W_T)ᵀ; ``s2t_kd`` = KL(p_T ‖ softmax(z_s2t)) (DSKD, CMA; ETA uses D);
  the gradient reaches h_S and P_s2t.

Recipe: (1 − kd_rate)·CE + kd_rate·(t2s_kd + t2s_ce + s2t_kd), kd_rate = 0.5, KD temperature 2 on the KD terms
(no T², as in the official code), divergence D = forward KL by default.

Every function needs the teacher's HIDDEN STATES: a cached or served teacher signal (top-k log-probabilities) is not
enough; :func:`require_hidden` raises a clear error.

Projectors are an ``nn.Module`` (:class:`DSKDProjectors`) owned by the run, not by the student: train them with their
own learning rate (``projector_parameters()``) and save them next to the run (:func:`save_projectors`).
All terms are SUMS over positions; the trainer divides by the global student target count.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from crossdistill.losses.divergences import divergence, forward_kl

TERMS = ("t2s_kd", "t2s_ce", "s2t_kd")
DEFAULT_WEIGHTS = {"ce": 0.5, "t2s_kd": 0.5, "t2s_ce": 0.5, "s2t_kd": 0.5}
"""(1 − kd_rate)·CE + kd_rate·(t2s_kd + t2s_ce + s2t_kd) with kd_rate = 0.5."""


class DSKDProjectors(nn.Module):
    """The learnable projectors (``configs/projector_config.json`` of the official code).

    Args:
        student_dim: d_S; teacher_dim: d_T.
        cross_attention: also build the CMA query projector Linear(2 d_S → 2 d_T).
    """

    def __init__(self, student_dim: int, teacher_dim: int, cross_attention: bool = False) -> None:
        super().__init__()
        self.student_dim = int(student_dim)
        self.teacher_dim = int(teacher_dim)
        self.t2s = nn.Linear(teacher_dim, student_dim)
        self.s2t = nn.Linear(student_dim, teacher_dim)
        self.query = nn.Linear(2 * student_dim, 2 * teacher_dim) if cross_attention else None

    def projector_parameters(self) -> list[nn.Parameter]:
        """Parameters the trainer optimizes (own param group / learning rate); frozen ones excluded."""
        return [p for p in self.parameters() if p.requires_grad]


def require_hidden(teacher_hidden: Any, what: str = "DSKD") -> torch.Tensor:
    """The teacher hidden states, or a clear error when only a teacher signal (logits/top-k) is available."""
    if teacher_hidden is None:
        raise ValueError(f"{what} needs the teacher's last-layer hidden states (its projectors map h_T into the "
                         "student space); a cached or served teacher signal (top-k log-probabilities) cannot be "
                         "used. Run the teacher online (teacher.source: model) or pick a logit-based objective "
                         "(uld, gold_hybrid, multilevel_ot, cdm)")
    return teacher_hidden


def _div(name: str, s_logp: torch.Tensor, t_logp: torch.Tensor, params: dict[str, float]) -> torch.Tensor:
    return forward_kl(s_logp, t_logp) if name == "forward_kl" else divergence(name, s_logp, t_logp, **params)


def _weight(head: torch.Tensor, vocab_size: int | None) -> torch.Tensor:
    return head[:vocab_size] if vocab_size else head


# ----------------------------------------------------------------------------------------------- DSKD (same vocab)


def dskd_terms(student_hidden: torch.Tensor, student_head: torch.Tensor, teacher_hidden: torch.Tensor | None,
               teacher_head: torch.Tensor, targets: torch.Tensor, projectors: DSKDProjectors, *,
               temperature: float = 2.0, kd_divergence: str = "forward_kl",
               divergence_params: dict[str, float] | None = None, chunk_tokens: int = 1024,
               vocab_size: int | None = None) -> dict[str, torch.Tensor]:
    """DSKD term sums over N target positions (teacher and student share the vocabulary and the positions).

    Args:
        student_hidden: ``[N, H_s]`` student final hidden states at the target positions (grad).
        student_head: ``[V, H_s]`` student lm_head weight (grad for the student's own logits only).
        teacher_hidden: ``[N, H_t]`` teacher hidden states at the same positions (no grad).
        teacher_head: ``[V, H_t]`` teacher lm_head weight (frozen).
        targets: ``[N]`` int64 gold next tokens.
        projectors: the run's :class:`DSKDProjectors`.
        temperature: KD temperature dividing every logit in the KD terms (not in ``t2s_ce``).
        kd_divergence: name in :mod:`crossdistill.losses.divergences` for ``t2s_kd`` (``s2t_kd`` is forward KL).
        chunk_tokens: rows per chunk; each chunk is recomputed in backward (activation checkpointing), so peak
            memory is O(chunk_tokens · V), not O(N · V).
        vocab_size: real vocabulary; head rows beyond it (padding) are sliced off.

    Returns:
        ``{"t2s_kd", "t2s_ce", "s2t_kd"}`` scalar fp32 sums.
    """
    h_t = require_hidden(teacher_hidden, "DSKD")
    if student_hidden.shape[0] != h_t.shape[0] or targets.shape[0] != student_hidden.shape[0]:
        raise ValueError(f"DSKD needs the same N rows for student_hidden {tuple(student_hidden.shape)}, "
                         f"teacher_hidden {tuple(h_t.shape)} and targets {tuple(targets.shape)}")
    w_s = _weight(student_head, vocab_size)
    w_t = _weight(teacher_head, vocab_size).detach()
    if w_s.shape[0] != w_t.shape[0]:
        raise ValueError(f"DSKD (same vocabulary) got student vocab {w_s.shape[0]} and teacher vocab {w_t.shape[0]}; "
                         "use dskd_cma or dskd_eta for different tokenizers")
    params = dict(divergence_params or {})

    def chunk(hs, ht, y, ws):
        zs = F.linear(hs, ws).float()
        zt = F.linear(ht, w_t).float()
        z_t2s = F.linear(projectors.t2s(ht.to(projectors.t2s.weight.dtype)), ws.detach()).float()
        z_s2t = F.linear(projectors.s2t(hs.to(projectors.s2t.weight.dtype)), w_t).float()
        t2s_ce = F.cross_entropy(z_t2s, y, reduction="sum")
        t2s_kd = _div(kd_divergence, F.log_softmax(zs / temperature, -1),
                      F.log_softmax(z_t2s.detach() / temperature, -1), params).sum()
        s2t_kd = forward_kl(F.log_softmax(z_s2t / temperature, -1), F.log_softmax(zt / temperature, -1)).sum()
        return torch.stack([t2s_kd, t2s_ce, s2t_kd])

    total = student_hidden.new_zeros(3, dtype=torch.float32)
    n = student_hidden.shape[0]
    for start in range(0, n, max(1, chunk_tokens)):
        sl = slice(start, min(n, start + chunk_tokens))
        args = (student_hidden[sl], h_t[sl].detach(), targets[sl], w_s)
        if n > chunk_tokens and torch.is_grad_enabled():
            total = total + torch.utils.checkpoint.checkpoint(chunk, *args, use_reentrant=False)
        else:
            total = total + chunk(*args)
    return dict(zip(TERMS, total.unbind()))


# ----------------------------------------------------------------------------------------------- DSKD-CMA


def dskd_cma_terms(
    student_hidden: torch.Tensor, student_head: torch.Tensor, student_embed: torch.Tensor,
    student_input_ids: torch.Tensor, student_targets: torch.Tensor, student_mask: torch.Tensor,
    teacher_hidden: torch.Tensor | None, teacher_head: torch.Tensor, teacher_embed: torch.Tensor,
    teacher_input_ids: torch.Tensor, teacher_targets: torch.Tensor, teacher_mask: torch.Tensor,
    projectors: DSKDProjectors, *, temperature: float = 2.0, kd_divergence: str = "forward_kl",
    divergence_params: dict[str, float] | None = None, student_vocab_size: int | None = None,
    teacher_vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """DSKD with cross-model attention (different vocabularies), term sums.

    Args:
        student_hidden: ``[B, T_s, H_s]`` (grad). student_head: ``[V_s, H_s]``. student_embed: ``[V_s, H_s]`` input
            embedding table (detached here). student_input_ids: ``[B, T_s]``. student_targets: ``[B, T_s]`` shifted
            targets (−100 off-target). student_mask: ``[B, T_s]`` bool target positions.
        teacher_*: the same over the teacher's own rendering ``[B, T_t, ...]`` (no grad).
        projectors: :class:`DSKDProjectors` built with ``cross_attention=True``.

    Attention runs from student target positions (queries) to teacher target positions (keys); other pairs get
    −1e5 before the softmax, as the official code masks padding (its targets are −100 off the completion).

    Returns:
        ``{"t2s_kd", "t2s_ce", "s2t_kd"}``: t2s terms summed over student target positions (``t2s_kd`` only where
        argmax z_t2s equals the gold token), ``s2t_kd`` over teacher target positions.
    """
    h_t = require_hidden(teacher_hidden, "DSKD-CMA").detach().float()
    if projectors.query is None:
        raise ValueError("DSKD-CMA needs DSKDProjectors(..., cross_attention=True) (the query projector)")
    if student_hidden.dim() != 3 or h_t.dim() != 3:
        raise ValueError(f"DSKD-CMA takes [B, T, H] hidden states; got student {tuple(student_hidden.shape)}, "
                         f"teacher {tuple(h_t.shape)}")
    params = dict(divergence_params or {})
    w_s = _weight(student_head, student_vocab_size)
    w_t = _weight(teacher_head, teacher_vocab_size).detach()
    e_s = student_embed.detach()
    e_t = teacher_embed.detach()
    y_s = student_targets.clamp_min(0)                                       # pad/-100 -> id 0 before lookup
    y_t = teacher_targets.clamp_min(0)
    x_s = student_input_ids.clamp_min(0)
    x_t = teacher_input_ids.clamp_min(0)
    dt = projectors.query.weight.dtype
    q = projectors.query(torch.cat([F.embedding(x_s, e_s), F.embedding(y_s, e_s)], -1).to(dt)).float()
    k_idx = torch.cat([F.embedding(x_t, e_t), F.embedding(y_t, e_t)], -1).float()
    k = k_idx / k_idx.std()                                                  # global std over the tensor
    e_yt = F.embedding(y_t, e_t).float()
    v_t = projectors.t2s((h_t / h_t.std() + e_yt / e_yt.std()).to(dt)).float()       # [B, T_t, H_s]
    v_s = projectors.s2t(student_hidden.to(dt)).float()                               # [B, T_s, H_t]
    att = q @ k.transpose(1, 2) / math.sqrt(k.shape[-1])                              # [B, T_s, T_t]
    pair = student_mask.bool()[:, :, None] & teacher_mask.bool()[:, None, :]
    att = att.masked_fill(~pair, -1e5)
    h_t2s = torch.softmax(att, dim=-1) @ v_t                                          # [B, T_s, H_s]
    h_s2t = torch.softmax(att.transpose(1, 2), dim=-1) @ v_s                          # [B, T_t, H_t]

    sm, tm = student_mask.bool(), teacher_mask.bool()
    y = student_targets[sm]
    z_t2s = F.linear(h_t2s[sm], w_s.detach().float())                                 # [N_s, V_s]
    z_s = F.linear(student_hidden[sm], w_s).float()
    t2s_ce = F.cross_entropy(z_t2s, y, reduction="sum")
    hit = (z_t2s.argmax(-1) == y).float()
    t2s_kd = (_div(kd_divergence, F.log_softmax(z_s / temperature, -1),
                   F.log_softmax(z_t2s.detach() / temperature, -1), params) * hit).sum()
    z_s2t = F.linear(h_s2t[tm], w_t.float())                                          # [N_t, V_t]
    z_t = F.linear(h_t[tm], w_t.float())
    s2t_kd = forward_kl(F.log_softmax(z_s2t / temperature, -1), F.log_softmax(z_t / temperature, -1)).sum()
    return {"t2s_kd": t2s_kd, "t2s_ce": t2s_ce, "s2t_kd": s2t_kd}


# ----------------------------------------------------------------------------------------------- DSKDv2-ETA


def dskd_eta_terms(
    student_hidden: torch.Tensor, student_head: torch.Tensor, teacher_hidden: torch.Tensor | None,
    teacher_head: torch.Tensor, teacher_rows: torch.Tensor, student_rows: torch.Tensor,
    teacher_to_student: torch.Tensor, projectors: DSKDProjectors, *, temperature: float = 2.0,
    kd_divergence: str = "forward_kl", divergence_params: dict[str, float] | None = None,
    t2s_agreement: float = 1.0, student_vocab_size: int | None = None, teacher_vocab_size: int | None = None,
) -> dict[str, torch.Tensor]:
    """DSKDv2 with exact token alignment, term sums over the P aligned pairs.

    Args:
        student_hidden: ``[N_s, H_s]`` student hidden rows (grad). student_head: ``[V_s, H_s]``.
        teacher_hidden: ``[N_t, H_t]`` teacher hidden rows (no grad). teacher_head: ``[V_t, H_t]``.
        teacher_rows / student_rows: ``[P]`` int64, the aligned pairs (from :func:`crossdistill.align.eta.eta_align`,
            offset into the flattened rows).
        teacher_to_student: ``[V_t]`` int64, the student id of a teacher token that is exactly one student token
            (EOS ↔ EOS), else −1: turns the teacher's argmax into a student label.
        t2s_agreement: ``t2s_kd`` is masked by agreement (argmax z_t2s = teacher label) when the agreement rate is
            ≤ this (default 1.0: always); otherwise by all aligned pairs.

    Returns:
        ``{"t2s_kd", "t2s_ce", "s2t_kd", "aligned"}`` sums (``aligned`` = P, a diagnostic: P / count is the
        official ``align_ratio``). The official code divides t2s_ce and s2t_kd by P; here every term is a sum and
        the trainer divides by the global student target count.
    """
    h_t = require_hidden(teacher_hidden, "DSKDv2-ETA").detach()
    params = dict(divergence_params or {})
    w_s = _weight(student_head, student_vocab_size)
    w_t = _weight(teacher_head, teacher_vocab_size).detach()
    zero = student_hidden.float().sum() * 0.0
    if teacher_rows.numel() == 0:
        return {"t2s_kd": zero, "t2s_ce": zero, "s2t_kd": zero, "aligned": torch.zeros((), device=zero.device)}
    ht = h_t[teacher_rows]
    hs = student_hidden[student_rows]
    z_t = F.linear(ht, w_t).float()                                                   # [P, V_t]
    label = teacher_to_student.to(z_t.device)[z_t.argmax(-1)]                         # [P], -1 = none
    z_t2s = F.linear(projectors.t2s(ht.to(projectors.t2s.weight.dtype)), w_s.detach()).float()
    has = label >= 0
    t2s_ce = F.cross_entropy(z_t2s[has], label[has], reduction="sum") if has.any() else zero
    agree = (z_t2s.argmax(-1) == label) & has
    rate = agree.float().mean()
    kd_mask = agree.float() if float(rate) <= t2s_agreement else torch.ones_like(rate).expand(agree.shape)
    z_s = F.linear(hs, w_s).float()
    t2s_kd = (_div(kd_divergence, F.log_softmax(z_s / temperature, -1),
                   F.log_softmax(z_t2s.detach() / temperature, -1), params) * kd_mask).sum()
    z_s2t = F.linear(projectors.s2t(hs.to(projectors.s2t.weight.dtype)), w_t).float()
    s2t_kd = _div(kd_divergence, F.log_softmax(z_s2t / temperature, -1), F.log_softmax(z_t / temperature, -1),
                  params).sum()
    return {"t2s_kd": t2s_kd, "t2s_ce": t2s_ce, "s2t_kd": s2t_kd,
            "aligned": torch.tensor(float(teacher_rows.numel()), device=z_t.device)}


@torch.no_grad()
def pinv_projector_init(projectors: DSKDProjectors, student_head: torch.Tensor, teacher_head: torch.Tensor,
                        teacher_ids: torch.Tensor, student_ids: torch.Tensor, *, topk_vocab: int | None = None,
                        init_s2t: bool = True, freeze_s2t: bool = False) -> int:
    """DSKDv2's logit-equivalence initialization over the overlap vocabulary.

    With W^t = teacher_headᵀ ``[H_t, V_t]`` and W^s = student_headᵀ restricted to the overlap columns, sets
    t2s = (W^t_ov pinv(W^s_ov))ᵀ (so h W^t_ov ≈ h W^{t2s} W^s_ov in the least-squares sense) and, with ``init_s2t``,
    s2t = (W^s_ov pinv(W^t_ov))ᵀ; biases 0. ``freeze_s2t`` (the official ``--init-s2t-projector``) keeps s2t fixed.

    Args:
        teacher_ids / student_ids: ``[n]`` the overlap pairs (same token text), e.g. the vocabulary map's matches.
        topk_vocab: use only the first k overlap pairs.

    Returns:
        The number of overlap pairs used.
    """
    if teacher_ids.shape != student_ids.shape or teacher_ids.numel() == 0:
        raise ValueError(f"pinv_projector_init needs matching non-empty overlap id lists; got teacher "
                         f"{tuple(teacher_ids.shape)}, student {tuple(student_ids.shape)} (no shared tokens?)")
    if topk_vocab:
        teacher_ids, student_ids = teacher_ids[:topk_vocab], student_ids[:topk_vocab]
    wt = teacher_head[teacher_ids].double().T                                        # [H_t, n]
    ws = student_head[student_ids].double().T                                        # [H_s, n]
    t2s = wt @ torch.linalg.pinv(ws)                                                 # [H_t, H_s]
    projectors.t2s.weight.copy_(t2s.T.to(projectors.t2s.weight.dtype))
    projectors.t2s.bias.zero_()
    if init_s2t:
        s2t = ws @ torch.linalg.pinv(wt)                                             # [H_s, H_t]
        projectors.s2t.weight.copy_(s2t.T.to(projectors.s2t.weight.dtype))
        projectors.s2t.bias.zero_()
    if freeze_s2t:
        projectors.s2t.requires_grad_(False)
    return int(teacher_ids.numel())


# ----------------------------------------------------------------------------------------------- persistence


def save_projectors(projectors: DSKDProjectors, path: str | os.PathLike) -> Path:
    """Write the projectors' state dict as safetensors, atomically (temp file + rename), with their dims."""
    from crossdistill.io import save_safetensors

    state = {k: v.detach().contiguous().cpu() for k, v in projectors.state_dict().items()}
    meta = {"student_dim": str(projectors.student_dim), "teacher_dim": str(projectors.teacher_dim),
            "cross_attention": str(projectors.query is not None)}
    return save_safetensors(path, state, metadata=meta)


def load_projectors(path: str | os.PathLike) -> DSKDProjectors:
    """Rebuild :class:`DSKDProjectors` from :func:`save_projectors` output."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    try:
        proj = DSKDProjectors(int(meta["student_dim"]), int(meta["teacher_dim"]),
                              cross_attention=meta.get("cross_attention") == "True")
    except KeyError as err:
        raise ValueError(f"{path} is not a DSKD projector file (missing metadata {err}); write it with "
                         "save_projectors") from None
    proj.load_state_dict(load_file(str(path)))
    return proj
