"""Memory-bounded distillation loss: lm_head + CE + divergence over chunks of target tokens.

:func:`fused_distill_loss` takes the student's final hidden states and lm_head weight instead of logits. It

1. drops every non-target position BEFORE the matmul (``index_select`` on the target positions),
2. walks the remaining M target tokens in chunks of a FIXED number C of tokens (``chunk_size``; the last chunk may be
   smaller), computing the chunk's student logits, the teacher's (from its hidden states + head, or from a
   :class:`TeacherSignal`), the CE and divergence sums, and their gradients with respect to the chunk's logits,
3. turns those logit gradients into gradients for the hidden states and the weight right away (Liger pattern:
   gradients computed in forward), so only one chunk of ``[C, V]`` temporaries is ever alive.

Peak extra memory is a few ``[C, V]`` fp32 tiles plus the gradient buffers (``[M, H]`` and ``[V, H]`` per term,
the same size as the gradients autograd would hold anyway): it does not grow with N. Backward only scales the
stored gradients by the incoming ``grad_output`` of each term. Nothing flows to the teacher.

Vocabulary padding (docs/design.md, contract 5): both heads are sliced to ``vocab_size`` (default: the smaller
head) after checking that no target id lies in the padding. :func:`distill_loss_from_logits` is the same computation
for callers that already hold logits (no chunking).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from crossdistill.losses.closed_form import CLOSED_FORM, ce_value_and_grad, kd_value_and_grad
from crossdistill.losses.divergences import resolve
from crossdistill.losses.signal import TeacherSignal
from crossdistill.losses.sparse import signal_divergence, sparse_divergence


@dataclass(frozen=True, kw_only=True)
class ChunkedLossConfig:
    """What :func:`fused_distill_loss` / :func:`distill_loss_from_logits` compute."""

    divergence: str = "forward_kl"
    """Divergence name (``crossdistill.losses.divergences.DIVERGENCES`` or an alias)."""

    divergence_params: dict[str, float] = field(default_factory=dict)
    """Divergence parameters, e.g. ``{"beta": 0.5}`` for ``generalized_jsd``."""

    temperature: float = 1.0
    """Distillation temperature: both models' logits are divided by it for the KD term (not for CE). No T² here."""

    chunk_size: int = 512
    """Target tokens per chunk (a fixed token count, never a fixed number of chunks)."""

    ignore_index: int = -100
    """Target id marking non-target positions."""

    vocab_size: int | None = None
    """Real tokenizer vocabulary; heads padded beyond it are sliced. Default: the smaller of the two heads."""

    compute_ce: bool = True
    """Also return the student's cross-entropy sum on the targets (at temperature 1)."""

    grad_weights: dict[str, float] | None = None
    """Optional memory saver for CE + KD: the factors the caller will multiply the ``"ce"`` and ``"kd"`` sums by in
    the final loss, up to one common scale (e.g. ``{"ce": w_ce, "kd": w_kd * T**2}``). The two terms then share one
    gradient buffer instead of two; backward checks that the incoming gradients have these proportions and raises
    otherwise. None (default): separate buffers, any weighting works."""

    student_logit_scale: float = 1.0
    """Multiplier applied to the student's raw logits (e.g. ``1 / logits_scaling`` for Granite)."""

    student_softcap: float | None = None
    """Final-logit soft-cap ``c · tanh(z / c)`` of the student (Gemma 2); applied after the scale."""

    teacher_logit_scale: float = 1.0
    """Multiplier on the teacher's raw logits (teacher head path only)."""

    teacher_softcap: float | None = None
    """Soft-cap of the teacher's logits (teacher head path only)."""

    def __post_init__(self) -> None:
        resolve(self.divergence, self.divergence_params)  # fails now, with the accepted names, not mid-training
        if not self.temperature > 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if self.grad_weights is not None and set(self.grad_weights) != {"ce", "kd"}:
            raise ValueError(f"grad_weights must have exactly the keys 'ce' and 'kd', got {sorted(self.grad_weights)}")
        if self.chunk_size < 1:
            raise ValueError(f"chunk_size={self.chunk_size} must be a positive number of target tokens")
        for name in ("student_softcap", "teacher_softcap"):
            cap = getattr(self, name)
            if cap is not None and not cap > 0:
                raise ValueError(f"{name}={cap} must be > 0 or None")


@dataclass(frozen=True)
class TeacherHead:
    """The teacher as final hidden states + lm_head, for the fused path (no gradient ever flows here)."""

    hidden: torch.Tensor
    """``[N, H_t]`` (or ``[B, T, H_t]``) teacher hidden states at the same positions as the student's."""

    weight: torch.Tensor
    """``[V_t, H_t]`` teacher lm_head weight (possibly padded beyond the real vocabulary)."""

    bias: torch.Tensor | None = None
    """Optional ``[V_t]`` lm_head bias."""


@dataclass(frozen=True)
class LossSums:
    """Term sums over the target positions of one micro-batch, and how many there were."""

    sums: dict[str, torch.Tensor]
    """``"ce"`` and/or ``"kd"`` -> scalar fp32 sum (differentiable w.r.t. the student)."""

    num_targets: int
    """Number of target positions in this micro-batch (add these up across the step for the global count)."""


def _upcast(x: torch.Tensor) -> torch.Tensor:
    """Logits go to at least fp32 for the loss (bf16/fp16 -> fp32; fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _transform(z: torch.Tensor, scale: float, softcap: float | None) -> torch.Tensor:
    if scale != 1.0:
        z = z * scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    return z


def _transform_grad(raw: torch.Tensor, scale: float, softcap: float | None) -> torch.Tensor | float | None:
    """d transform / d raw, elementwise (None for the identity)."""
    if softcap is None:
        return None if scale == 1.0 else scale
    th = torch.tanh(raw * (scale / softcap))
    return (1.0 - th * th) * scale


def _resolve_vocab(cfg: ChunkedLossConfig, v_student: int, v_teacher: int | None) -> int:
    vocab = cfg.vocab_size
    if vocab is None:
        vocab = v_student if v_teacher is None else min(v_student, v_teacher)
    if vocab > v_student or (v_teacher is not None and vocab > v_teacher):
        raise ValueError(
            f"vocab_size={vocab} exceeds a head (student {v_student} rows, teacher {v_teacher}); "
            "vocab_size must be the real tokenizer size, at most each head's row count"
        )
    return vocab


def _check_targets(targets: torch.Tensor, vocab: int, v_student: int, ignore_index: int) -> None:
    valid = targets[targets != ignore_index]
    if valid.numel() == 0:
        return
    lo, hi = int(valid.min()), int(valid.max())
    if lo < 0:
        raise ValueError(f"target id {lo} is negative and not ignore_index={ignore_index}; fix the labels")
    if hi >= vocab:
        where = "padded rows" if hi < v_student else "beyond the student head"
        raise ValueError(
            f"target id {hi} falls in the {where} of the lm_head (real vocab_size={vocab}, student head "
            f"{v_student} rows); labels must be real tokenizer ids, or set vocab_size to the tokenizer's size"
        )


def _prepare_teacher(teacher: TeacherHead | TeacherSignal | None, m: int, n: int) -> tuple[object, bool]:
    """Validate the teacher; returns it (hidden flattened, detached) and whether its rows are per POSITION (N) rather
    than per target position (M). Nothing is copied: rows are gathered chunk by chunk."""
    if teacher is None:
        return None, False
    if isinstance(teacher, TeacherHead):
        hidden = teacher.hidden.reshape(-1, teacher.hidden.shape[-1]).detach()
        if hidden.shape[0] != n:
            raise ValueError(f"TeacherHead.hidden has {hidden.shape[0]} positions, the student {n}")
        bias = None if teacher.bias is None else teacher.bias.detach()
        return TeacherHead(hidden, teacher.weight.detach(), bias), True
    if isinstance(teacher, TeacherSignal):
        rows = teacher.num_positions
        if rows == n:
            return teacher, True
        if rows == m:
            return teacher, False
        raise ValueError(
            f"TeacherSignal has {rows} rows; expected one per position ({n}) or one per target position ({m})"
        )
    raise TypeError(f"teacher must be TeacherHead, TeacherSignal or None, got {type(teacher).__name__}")


def _teacher_chunk(teacher: object, rows: torch.Tensor | slice, vocab: int, cfg: ChunkedLossConfig) -> TeacherSignal:
    """The teacher at ``rows``: dense fp32 logits ``[C, vocab]`` or the sparse rows."""
    if isinstance(teacher, TeacherHead):
        with torch.no_grad():
            t_z = teacher.hidden[rows] @ teacher.weight.T  # [C, V_t_pad]
            if teacher.bias is not None:
                t_z = t_z + teacher.bias
            return TeacherSignal.dense(
                _transform(_upcast(t_z), cfg.teacher_logit_scale, cfg.teacher_softcap)[:, :vocab]
            )
    signal = teacher.select(rows)
    if signal.is_sparse:
        return signal
    return TeacherSignal.dense(_upcast(signal.logits[:, :vocab].detach()))


def _chunk_grads(
    raw: torch.Tensor, targets: torch.Tensor, teacher: object, rows: torch.Tensor | slice, vocab: int,
    cfg: ChunkedLossConfig, terms: list[str],
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:  # fmt: skip
    """Term -> (sum, ∂sum/∂raw ``[C, V_pad]``) for one chunk of fp32 raw student logits ``raw [C, V_pad]``."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    signal = _teacher_chunk(teacher, rows, vocab, cfg) if "kd" in terms else None
    canonical = resolve(cfg.divergence, cfg.divergence_params)[0]
    closed = signal is None or (not signal.is_sparse and canonical in CLOSED_FORM)
    if closed:
        with torch.no_grad():
            z = _transform(raw, cfg.student_logit_scale, cfg.student_softcap)[:, :vocab]
            if "ce" in terms:
                out["ce"] = ce_value_and_grad(z, targets)
            if "kd" in terms:
                out["kd"] = kd_value_and_grad(cfg.divergence, cfg.divergence_params, z, signal.logits, cfg.temperature)
            del z
            chain = _transform_grad(raw, cfg.student_logit_scale, cfg.student_softcap)
            for t, (value, dz) in out.items():
                if chain is not None:
                    dz = dz * (chain[:, :vocab] if isinstance(chain, torch.Tensor) else chain)
                if vocab < raw.shape[1]:  # padded head: the padding columns get exactly zero gradient
                    dz = torch.nn.functional.pad(dz, (0, raw.shape[1] - vocab))
                out[t] = (value, dz)
        return out
    raw = raw.detach().requires_grad_(True)
    with torch.enable_grad():
        z = _transform(raw, cfg.student_logit_scale, cfg.student_softcap)[:, :vocab]
        values = {}
        if "ce" in terms:
            values["ce"] = F.cross_entropy(z, targets, reduction="sum")
        if "kd" in terms:
            temp = cfg.temperature
            s_logp = torch.log_softmax(z / temp if temp != 1.0 else z, dim=-1)
            values["kd"] = signal_divergence(cfg.divergence, s_logp, signal, temp, **cfg.divergence_params).sum()
        for i, t in enumerate(terms):
            (dz,) = torch.autograd.grad(values[t], raw, retain_graph=i + 1 < len(terms))
            out[t] = (values[t].detach(), dz)
    return out


def _mix_scale(mix: dict[str, float], grad_ce: torch.Tensor, grad_kd: torch.Tensor) -> torch.Tensor:
    """The common scale s with (grad_ce, grad_kd) = s · (w_ce, w_kd); raises if the loss used other proportions."""
    w_ce, w_kd = float(mix["ce"]), float(mix["kd"])
    lhs, rhs = float(grad_ce) * w_kd, float(grad_kd) * w_ce
    if abs(lhs - rhs) > 1e-6 * max(abs(lhs), abs(rhs), 1e-30):
        raise RuntimeError(
            f"ChunkedLossConfig.grad_weights={mix} promised the loss weights 'ce' and 'kd' in that ratio, but the "
            f"incoming gradients are ce={float(grad_ce):.6g}, kd={float(grad_kd):.6g}; pass the weights (with T²) "
            "you actually use in the loss, or grad_weights=None"
        )
    return grad_kd / w_kd if w_kd != 0 else grad_ce / w_ce


class _FusedDistill(torch.autograd.Function):
    """Forward computes both term sums AND their gradients chunk by chunk; backward only scales them."""

    @staticmethod
    def forward(ctx, hidden, weight, bias, idx, targets, teacher, teacher_per_position, cfg, vocab):  # noqa: D102
        n, h = hidden.shape
        m = idx.numel()
        terms = (["ce"] if cfg.compute_ce else []) + (["kd"] if teacher is not None else [])
        mix = cfg.grad_weights if len(terms) == 2 and cfg.grad_weights is not None else None
        groups = ["mix"] if mix else terms  # one gradient buffer per group
        need_w, need_b = weight.requires_grad, bias is not None and bias.requires_grad
        h_all = hidden.detach()
        w = weight.detach()
        acc = torch.promote_types(hidden.dtype, torch.float32)  # fp32 accumulation (fp64 stays fp64)
        # [N, H] per group: the hidden-state gradient itself (rows of non-targets stay 0), no [M, H] staging copy.
        g_h = {t: torch.zeros(n, h, dtype=acc, device=hidden.device) for t in groups}
        g_w = {t: torch.zeros(w.shape, dtype=acc, device=w.device) for t in groups} if need_w else {}
        g_b = {t: torch.zeros(w.shape[0], dtype=acc, device=w.device) for t in groups} if need_b else {}
        sums = {t: torch.zeros((), dtype=acc, device=hidden.device) for t in terms}
        for lo in range(0, m, cfg.chunk_size):
            hi = min(lo + cfg.chunk_size, m)
            rows = idx[lo:hi]
            h_c = h_all.index_select(0, rows)  # [C, H]: masked positions never reach the matmul
            raw = h_c @ w.T  # [C, V_pad], GEMM in the weight's dtype
            if bias is not None:
                raw = raw + bias.detach()
            raw = raw.to(acc)
            grads = {}
            t_rows = rows if teacher_per_position else slice(lo, hi)
            for t, (value, dz) in _chunk_grads(raw, targets[lo:hi], teacher, t_rows, vocab, cfg, terms).items():
                sums[t] += value
                grads[t] = dz
            del raw
            if mix:
                grads = {"mix": grads["ce"].mul_(float(mix["ce"])).add_(grads.pop("kd"), alpha=float(mix["kd"]))}
            for t, dz in grads.items():
                dz_w = dz.to(w.dtype)  # [C, V_pad]
                g_h[t].index_copy_(0, rows, (dz_w @ w).to(acc))
                if need_w:
                    if w.dtype == acc:
                        g_w[t].addmm_(dz_w.T, h_c)
                    else:
                        g_w[t] += dz_w.T @ h_c
                if need_b:
                    g_b[t] += dz.sum(0)
                del dz, dz_w
            del grads
        ctx.mix = mix
        ctx.n = n
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        ctx.save_for_backward(idx)
        ctx.grads = (g_h, g_w, g_b)
        zero = torch.zeros((), dtype=acc, device=hidden.device)
        return sums.get("ce", zero), sums.get("kd", zero.clone())

    @staticmethod
    def backward(ctx, grad_ce, grad_kd):  # noqa: D102
        (idx,) = ctx.saved_tensors
        if ctx.grads is None:
            raise RuntimeError("fused_distill_loss supports one backward pass per forward (gradients are consumed)")
        g_h, g_w, g_b = ctx.grads
        h_dtype, w_dtype, b_dtype = ctx.dtypes
        if ctx.mix:
            scale = {"mix": _mix_scale(ctx.mix, grad_ce, grad_kd)}
        else:
            scale = {"ce": grad_ce, "kd": grad_kd}

        def combine(bufs: dict[str, torch.Tensor]) -> torch.Tensor | None:
            # In place: the buffers are dropped after backward, so no extra [V, H] copy is made.
            total = None
            for t, buf in bufs.items():
                part = buf.mul_(scale[t])
                total = part if total is None else total.add_(part)
            return total

        gh = combine(g_h)
        grad_hidden = gh.to(h_dtype) if gh is not None and ctx.needs_input_grad[0] else None
        gw = combine(g_w)
        gb = combine(g_b)
        ctx.grads = None
        return (
            grad_hidden,
            None if gw is None else gw.to(w_dtype),
            None if gb is None else gb.to(b_dtype),
            None,
            None,
            None,
            None,
            None,
            None,
        )


def fused_distill_loss(
    student_hidden: torch.Tensor,
    student_weight: torch.Tensor,
    targets: torch.Tensor,
    teacher: TeacherHead | TeacherSignal | None,
    config: ChunkedLossConfig | None = None,
    student_bias: torch.Tensor | None = None,
) -> LossSums:
    """CE and divergence SUMS over target positions, computed chunk by chunk from hidden states.

    Args:
        student_hidden: ``[N, H_s]`` or ``[B, T, H_s]`` final hidden states (requires grad).
        student_weight: ``[V_s, H_s]`` lm_head weight (grad accumulated only if it requires grad).
        targets: ``[N]`` or ``[B, T]`` SHIFTED targets (``crossdistill.positions.shift_targets``), ``ignore_index``
            on non-target positions.
        teacher: :class:`TeacherHead` (hidden ``[N, H_t]`` + weight ``[V_t, H_t]``), a :class:`TeacherSignal` with
            one row per position (N) or per target position (M), or None for CE only.
        config: what to compute (:class:`ChunkedLossConfig`).
        student_bias: optional ``[V_s]`` lm_head bias.

    Returns:
        :class:`LossSums` with ``"ce"`` (if ``compute_ce``) and ``"kd"`` (if a teacher is given) fp32 scalar sums,
        and the number of target positions. Divide by the GLOBAL count (``combine_terms``); T² is applied there.
    """
    cfg = config or ChunkedLossConfig()
    hidden = student_hidden.reshape(-1, student_hidden.shape[-1])
    flat_targets = targets.reshape(-1)
    if hidden.shape[0] != flat_targets.shape[0]:
        raise ValueError(f"student_hidden has {hidden.shape[0]} positions but targets has {flat_targets.shape[0]}")
    if student_weight.dim() != 2 or student_weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"student_weight must be [V, H={hidden.shape[1]}], got {tuple(student_weight.shape)}")
    if teacher is None and not cfg.compute_ce:
        raise ValueError("nothing to compute: no teacher and compute_ce=False")
    v_teacher = None
    if isinstance(teacher, TeacherHead):
        v_teacher = teacher.weight.shape[0]
        if teacher.weight.shape[1] != teacher.hidden.shape[-1]:
            raise ValueError(
                f"TeacherHead.weight {tuple(teacher.weight.shape)} does not match the teacher hidden size "
                f"{teacher.hidden.shape[-1]}"
            )
    elif isinstance(teacher, TeacherSignal) and not teacher.is_sparse:
        v_teacher = teacher.logits.shape[-1]
    vocab = _resolve_vocab(cfg, student_weight.shape[0], v_teacher)
    _check_targets(flat_targets, vocab, student_weight.shape[0], cfg.ignore_index)
    idx = (flat_targets != cfg.ignore_index).nonzero().squeeze(1)
    sel_targets = flat_targets.index_select(0, idx)
    teacher, per_position = _prepare_teacher(teacher, idx.numel(), hidden.shape[0])
    ce, kd = _FusedDistill.apply(
        hidden, student_weight, student_bias, idx, sel_targets, teacher, per_position, cfg, vocab
    )
    sums = {}
    if cfg.compute_ce:
        sums["ce"] = ce
    if teacher is not None:
        sums["kd"] = kd
    return LossSums(sums=sums, num_targets=int(idx.numel()))


def distill_loss_from_logits(
    student_logits: torch.Tensor,
    targets: torch.Tensor,
    teacher: TeacherSignal | torch.Tensor | None,
    config: ChunkedLossConfig | None = None,
) -> LossSums:
    """Same sums as :func:`fused_distill_loss` for callers that already hold logits (no chunking).

    Args:
        student_logits: ``[N, V_s]`` or ``[B, T, V_s]`` (already soft-capped/scaled as the model outputs them).
        targets: ``[N]`` or ``[B, T]`` shifted targets.
        teacher: dense teacher logits ``[N, V_t]`` / ``[B, T, V_t]``, a :class:`TeacherSignal`, or None (CE only).
        config: only ``divergence``, ``divergence_params``, ``temperature``, ``ignore_index``, ``vocab_size`` and
            ``compute_ce`` are used.

    Returns:
        :class:`LossSums` (sums over target positions; no T², no normalization).
    """
    cfg = config or ChunkedLossConfig()
    logits = student_logits.reshape(-1, student_logits.shape[-1])
    flat_targets = targets.reshape(-1)
    if logits.shape[0] != flat_targets.shape[0]:
        raise ValueError(f"student_logits has {logits.shape[0]} positions but targets has {flat_targets.shape[0]}")
    if isinstance(teacher, torch.Tensor):
        teacher = TeacherSignal.dense(teacher.reshape(-1, teacher.shape[-1]))
    v_teacher = None if teacher is None or teacher.is_sparse else teacher.logits.shape[-1]
    vocab = _resolve_vocab(cfg, logits.shape[-1], v_teacher)
    _check_targets(flat_targets, vocab, logits.shape[-1], cfg.ignore_index)
    idx = (flat_targets != cfg.ignore_index).nonzero().squeeze(1)
    z = _upcast(logits.index_select(0, idx)[:, :vocab])
    sums = {}
    if cfg.compute_ce:
        sums["ce"] = F.cross_entropy(z, flat_targets.index_select(0, idx), reduction="sum")
    if teacher is not None:
        teacher, per_position = _prepare_teacher(teacher, idx.numel(), logits.shape[0])
        rows = teacher.select(idx) if per_position else teacher
        if not rows.is_sparse:
            rows = TeacherSignal.dense(_upcast(rows.logits[:, :vocab].detach()))
        else:
            rows = TeacherSignal(
                ids=rows.ids,
                logprobs=rows.logprobs.detach(),
                tail_logmass=rows.tail_logmass.detach(),
                policy=rows.policy,
            )
        s_logp = torch.log_softmax(z / cfg.temperature, dim=-1)
        sums["kd"] = signal_divergence(cfg.divergence, s_logp, rows, cfg.temperature, **cfg.divergence_params).sum()
    return LossSums(sums=sums, num_targets=int(idx.numel()))


__all__ = [
    "ChunkedLossConfig",
    "LossSums",
    "TeacherHead",
    "distill_loss_from_logits",
    "fused_distill_loss",
    "sparse_divergence",
]
