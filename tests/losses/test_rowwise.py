"""Row-chunked per-row functionals of the student's logits. Run: python -m pytest tests/losses/test_rowwise.py -q"""

from __future__ import annotations

import pytest
import torch

from crossdistill.losses.rowwise import rowwise_from_hidden, target_logprob_stats

F64 = torch.float64


def setup(n=7, h=4, v=9, pad=2, seed=0):
    torch.manual_seed(seed)
    hidden = torch.randn(n, h, dtype=F64, requires_grad=True)
    weight = torch.randn(v + pad, h, dtype=F64, requires_grad=True)
    bias = torch.randn(v + pad, dtype=F64, requires_grad=True)
    return hidden, weight, bias


@pytest.mark.parametrize("chunk", [1, 3, 50])
@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_target_logprob_stats_match_log_softmax(chunk, temperature):
    hidden, weight, bias = setup()
    v = 9
    y = torch.randint(0, v, (7,))
    mask = torch.zeros(v, dtype=torch.bool)
    mask[[1, 4, 8]] = True
    lp, mp = target_logprob_stats(hidden, weight, y, mask, bias=bias, logit_scale=0.7, vocab_size=v,
                                  temperature=temperature, chunk_rows=chunk)
    ref = torch.log_softmax(((hidden @ weight.T + bias) * 0.7)[:, :v] / temperature, -1)
    ref_lp, ref_mp = ref.gather(-1, y[:, None])[:, 0], ref[:, mask].logsumexp(-1)
    torch.testing.assert_close(lp, ref_lp)
    torch.testing.assert_close(mp, ref_mp)
    loss = (lp * torch.arange(7)).sum() + (mp**2).sum()
    ref_loss = (ref_lp * torch.arange(7)).sum() + (ref_mp**2).sum()
    for a, b in zip(torch.autograd.grad(loss, (hidden, weight, bias)), torch.autograd.grad(ref_loss, (hidden, weight,
                                                                                                      bias))):
        torch.testing.assert_close(a, b)


def test_rowwise_generic_fn_and_padding_gets_no_gradient():
    hidden, weight, _ = setup()
    out = rowwise_from_hidden(hidden, weight, lambda z, lo, hi: (z**2).sum(-1, keepdim=True) * (lo + 1),
                              vocab_size=9, chunk_rows=2)
    assert out.shape == (7, 1)
    g_w = torch.autograd.grad(out.sum(), weight)[0]
    assert torch.all(g_w[9:] == 0) and torch.any(g_w[:9] != 0)


def test_only_target_logprob_and_empty_rows():
    hidden, weight, _ = setup()
    lp, mp = target_logprob_stats(hidden, weight, torch.zeros(7, dtype=torch.long), vocab_size=9)
    assert mp is None and lp.shape == (7,)
    empty = torch.zeros(0, 4, dtype=F64, requires_grad=True)
    lp0, _ = target_logprob_stats(empty, weight, torch.zeros(0, dtype=torch.long), vocab_size=9)
    assert lp0.shape == (0,)
    lp0.sum().backward()


def test_errors():
    hidden, weight, _ = setup()
    with pytest.raises(ValueError, match="exceeds"):
        rowwise_from_hidden(hidden, weight, lambda z, lo, hi: z.sum(-1), vocab_size=100)
    with pytest.raises(ValueError, match="no token"):
        target_logprob_stats(hidden, weight, torch.zeros(7).long(), torch.zeros(11, dtype=torch.bool))
