"""Completion NLL and bits per byte: the one implementation that training validation and ``crossdistill eval`` share.

The NLL of a completion is the sum, over its target tokens (EOS included), of ``-log p(token)`` under the model's
next-token distribution. Logits are computed from the final hidden states only at target positions, ``chunk`` rows
at a time, so no ``[B, T, V]`` tensor is materialized. Bits per byte divides that sum (nats) by ``ln 2`` times the
UTF-8 bytes of the completion text: both mean the same thing for any tokenizer, so models with different tokenizers
compare on equal terms.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from crossdistill.data.render import Rendered
from crossdistill.positions import shift_targets


def token_nll(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float,
              vocab: int | None, labels: torch.Tensor, chunk: int, *, softcap: float | None = None,
              with_argmax: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """NLL (nats) of every target token, and optionally the model's top-ranked id at the same rows.

    Args:
        hidden: ``[B, T, H]`` final hidden states (the lm_head input).
        weight, bias, scale: the output head (``[V', H]``, ``[V']`` or None, logit scale); ``V' >= vocab``.
        vocab: real vocabulary size; head columns beyond it (padding rows of the embedding) are sliced off.
        labels: ``[B, T]`` unshifted labels (``-100`` off the completion); shifted here by ``shift_targets``.
        chunk: target rows per lm_head call (bounds memory at ``[chunk, V']``).
        softcap: ``final_logit_softcapping`` of the model, applied after the scale as the model does.

    Returns:
        ``(nll [N] float32, argmax [N] int64 or None)`` over the ``N`` target positions in row-major order
        (example by example, left to right).
    """
    targets, mask = shift_targets(labels)
    rows, cols = mask.nonzero(as_tuple=True)
    nll: list[torch.Tensor] = []
    top: list[torch.Tensor] = []
    for s in range(0, rows.numel(), chunk):
        r, c = rows[s:s + chunk], cols[s:s + chunk]
        z = F.linear(hidden[r, c], weight, bias).float() * scale  # [n, V']
        if softcap:
            z = torch.tanh(z / softcap) * softcap
        if vocab:
            z = z[:, :vocab]
        nll.append(F.cross_entropy(z, targets[r, c], reduction="none"))
        if with_argmax:
            top.append(z.argmax(-1))
    empty = hidden.new_zeros(0, dtype=torch.float32)
    out = torch.cat(nll) if nll else empty
    if not with_argmax:
        return out, None
    return out, torch.cat(top) if top else torch.zeros(0, dtype=torch.long, device=hidden.device)


def per_row_ce(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, scale: float,
               vocab: int | None, labels: torch.Tensor, chunk: int, *,
               softcap: float | None = None) -> torch.Tensor:
    """``[B]`` summed cross-entropy (nats) of each row over its target positions (:func:`token_nll` summed)."""
    nll, _ = token_nll(hidden, weight, bias, scale, vocab, labels, chunk, softcap=softcap)
    rows = shift_targets(labels)[1].nonzero(as_tuple=True)[0]
    return hidden.new_zeros(labels.shape[0], dtype=torch.float32).index_add_(0, rows, nll)


def completion_bytes(r: Rendered) -> int:
    """UTF-8 bytes of the completion text the rendered tokens cover (less than the whole text when truncated)."""
    return len(r.completion[: r.covered].encode("utf-8"))


def bits_per_byte(nll_nats: float, nbytes: float) -> float:
    """``nll_nats / (ln 2 * nbytes)``; raises on a non-positive byte count."""
    if nbytes <= 0:
        raise ValueError(f"bits per byte needs a positive number of bytes; got {nbytes}")
    return nll_nats / (math.log(2) * nbytes)
