"""Per-row functionals of the student's logits, memory-bounded: lm_head + a function of each row, in row chunks.

:func:`rowwise_from_hidden` applies ``fn`` to the student's logits of some rows (``[n, H] -> [n, V] -> [n, m]``)
without ever holding more than ``chunk_rows`` rows of logits: forward runs every chunk under ``no_grad`` and keeps
only the small outputs; backward recomputes each chunk's logits, differentiates ``fn`` there with autograd and turns
the logit gradient into gradients for the hidden states, the head weight and its bias at once. Peak extra memory is a
few ``[chunk_rows, V]`` tiles, whatever ``n`` is (docs/design.md, contract 7). The price is one extra evaluation of
``fn`` and of the head GEMM per chunk.

``fn(z, lo, hi)`` gets fp32 (fp64 stays fp64) logits ``z [hi - lo, V]`` of rows ``lo:hi`` — already multiplied by
the logit scale and sliced to the real vocabulary — and must return a ``[hi - lo]`` or ``[hi - lo, m]`` tensor that
depends on ``z`` alone (plus constants it closes over, e.g. teacher rows ``lo:hi``). It is called twice per chunk,
so it must be deterministic.

:func:`target_logprob_stats` is the common case: the log-probability of each row's actual token and, optionally, of
a set of tokens (one logsumexp over a vocabulary mask) — what ALM needs from the student.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

RowFn = Callable[[torch.Tensor, int, int], torch.Tensor]


def _acc_dtype(x: torch.Tensor) -> torch.dtype:
    return x.dtype if x.dtype == torch.float64 else torch.float32


class _Rowwise(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, fn, chunk_rows, logit_scale, vocab):  # noqa: D102
        n = hidden.shape[0]
        acc = _acc_dtype(hidden)
        outs = []
        with torch.no_grad():
            for lo in range(0, n, chunk_rows):
                hi = min(n, lo + chunk_rows)
                z = F.linear(hidden[lo:hi], weight, bias).to(acc) * logit_scale
                outs.append(fn(z[:, :vocab], lo, hi).to(acc))
        ctx.fn, ctx.chunk_rows, ctx.logit_scale, ctx.vocab = fn, chunk_rows, logit_scale, vocab
        ctx.has_bias = bias is not None
        ctx.save_for_backward(hidden, weight, *([bias] if bias is not None else []))
        if not outs:
            return hidden.new_zeros(0, dtype=acc)
        return torch.cat(outs)

    @staticmethod
    def backward(ctx, grad_out):  # noqa: D102
        hidden, weight, *rest = ctx.saved_tensors
        bias = rest[0] if ctx.has_bias else None
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = ctx.has_bias and ctx.needs_input_grad[2]
        acc = _acc_dtype(hidden)
        g_h = torch.zeros(hidden.shape, dtype=acc, device=hidden.device) if need_h else None
        g_w = torch.zeros(weight.shape, dtype=acc, device=weight.device) if need_w else None
        g_b = torch.zeros(bias.shape, dtype=acc, device=bias.device) if need_b else None
        w = weight.detach()
        for lo in range(0, hidden.shape[0], ctx.chunk_rows):
            hi = min(hidden.shape[0], lo + ctx.chunk_rows)
            h_c = hidden[lo:hi].detach()
            raw = F.linear(h_c, w, None if bias is None else bias.detach()).to(acc).requires_grad_(True)
            with torch.enable_grad():
                out = ctx.fn((raw * ctx.logit_scale)[:, : ctx.vocab], lo, hi).to(acc)
                (d_raw,) = torch.autograd.grad(out, raw, grad_out[lo:hi].to(acc), allow_unused=True)
            if d_raw is None:
                continue
            if g_h is not None:
                g_h[lo:hi] = d_raw.to(w.dtype).matmul(w).to(acc)
            if g_w is not None:
                g_w += d_raw.T.to(h_c.dtype).matmul(h_c).to(acc)
            if g_b is not None:
                g_b += d_raw.sum(0)
        return (None if g_h is None else g_h.to(hidden.dtype), None if g_w is None else g_w.to(weight.dtype),
                None if g_b is None else g_b.to(bias.dtype), None, None, None, None)


def rowwise_from_hidden(hidden: torch.Tensor, weight: torch.Tensor, fn: RowFn, *, bias: torch.Tensor | None = None,
                        logit_scale: float = 1.0, vocab_size: int | None = None,
                        chunk_rows: int = 1024) -> torch.Tensor:
    """``fn`` of the student's logits at ``hidden``'s rows, chunk by chunk (module docstring).

    Args:
        hidden: ``[n, H]`` the rows' final hidden states (with grad).
        weight: ``[V_pad, H]`` lm_head weight; ``bias``: optional ``[V_pad]``.
        fn: ``fn(z [c, V], lo, hi) -> [c] or [c, m]``.
        logit_scale: the model's logit multiplier.
        vocab_size: real vocabulary (head rows beyond it are padding and never reach ``fn``).
        chunk_rows: rows per chunk.

    Returns:
        ``[n]`` or ``[n, m]`` fp32 outputs, differentiable w.r.t. ``hidden``, ``weight`` and ``bias``.
    """
    if hidden.dim() != 2 or weight.dim() != 2 or hidden.shape[1] != weight.shape[1]:
        raise ValueError(f"hidden must be [n, H] and weight [V, H]; got {tuple(hidden.shape)} and "
                         f"{tuple(weight.shape)}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows={chunk_rows} must be >= 1")
    vocab = weight.shape[0] if vocab_size is None else int(vocab_size)
    if vocab > weight.shape[0]:
        raise ValueError(f"vocab_size={vocab} exceeds the head's {weight.shape[0]} rows")
    return _Rowwise.apply(hidden, weight, bias, fn, int(chunk_rows), float(logit_scale), vocab)


def target_logprob_stats(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                         token_mask: torch.Tensor | None = None, *, bias: torch.Tensor | None = None,
                         logit_scale: float = 1.0, vocab_size: int | None = None, temperature: float = 1.0,
                         chunk_rows: int = 1024) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Per row: ``log p(target)`` and, with ``token_mask``, ``log Σ_{v ∈ mask} p(v)`` (at ``temperature``).

    Args:
        hidden: ``[n, H]``; targets: ``[n]`` int64 actual token of each row (< vocab).
        token_mask: ``[V]`` bool (or None).

    Returns:
        ``(target_logp [n], mask_logp [n] or None)``, both differentiable.
    """
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    width = 1 if token_mask is None else 2

    def fn(z: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        logp = torch.log_softmax(z / temperature if temperature != 1.0 else z, dim=-1)
        cols = [logp.gather(-1, targets[lo:hi, None])]
        if token_mask is not None:
            cols.append(torch.logsumexp(logp.masked_fill(~token_mask, float("-inf")), dim=-1, keepdim=True))
        return torch.cat(cols, dim=-1)

    if token_mask is not None and not bool(token_mask.any()):
        raise ValueError("token_mask selects no token")
    out = rowwise_from_hidden(hidden, weight, fn, bias=bias, logit_scale=logit_scale, vocab_size=vocab_size,
                              chunk_rows=chunk_rows)
    out = out.reshape(-1, width)
    return out[:, 0], (out[:, 1] if width == 2 else None)


__all__ = ["RowFn", "rowwise_from_hidden", "target_logprob_stats"]
