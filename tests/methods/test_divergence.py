"""The CE and same-vocabulary divergence methods against naive references (value and gradient)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from crossdistill.errors import ConfigError
from crossdistill.losses.objective import combine_terms
from crossdistill.methods import METHODS, StepContext, get_method
from crossdistill.positions import shift_targets


def make_ctx(B=3, T=11, H=7, V=13, Ht=5, Vt_pad=0, seed=0, all_masked=False):
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(B, T, H, generator=g, requires_grad=True)
    w = torch.randn(V, H, generator=g, requires_grad=True)
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[:, :3] = -100  # prompt
    labels[1, 8:] = -100  # padding of a shorter row
    if all_masked:
        labels[:] = -100
    targets, mask = shift_targets(labels)
    th = torch.randn(B, T, Ht, generator=g)
    tw = torch.randn(V + Vt_pad, Ht, generator=g)
    ctx = StepContext(student_hidden=h, lm_head_weight=w, targets=targets, mask=mask, vocab_size=V,
                      teacher_hidden=th, teacher_lm_head_weight=tw, teacher_vocab_size=V, chunk_tokens=4)
    return ctx


def naive(ctx, divergence, temperature=1.0):
    zs = ctx.student_hidden @ ctx.lm_head_weight.T
    zt = (ctx.teacher_hidden @ ctx.teacher_lm_head_weight.T)[..., : zs.shape[-1]]
    m = ctx.mask
    ce = F.cross_entropy(zs[m], ctx.targets[m], reduction="sum")
    ls, lt = F.log_softmax(zs[m] / temperature, -1), F.log_softmax(zt[m] / temperature, -1)
    if divergence == "forward_kl":
        kd = (lt.exp() * (lt - ls)).sum()
    elif divergence == "reverse_kl":
        kd = (ls.exp() * (ls - lt)).sum()
    else:  # generalized JSD, beta = 0.5 (teacher weight)
        mix = torch.logsumexp(torch.stack([ls + torch.log(torch.tensor(0.5)), lt + torch.log(torch.tensor(0.5))]), 0)
        kd = 0.5 * (lt.exp() * (lt - mix)).sum() + 0.5 * (ls.exp() * (ls - mix)).sum()
    return ce, kd


def test_registry_has_builtins():
    for name in ("ce", "forward_kl", "reverse_kl", "jsd", "skew_kl", "skew_reverse_kl", "tvd", "adaptive_kl"):
        assert name in METHODS
    assert not METHODS["ce"].needs_teacher and METHODS["forward_kl"].needs_teacher
    assert not METHODS["forward_kl"].cross_tokenizer and METHODS["forward_kl"].sparse_teacher
    assert METHODS["jsd"].parse_params({}).beta == 0.5
    with pytest.raises(ConfigError, match="not a registered method"):
        get_method("nope")


def test_ce_matches_naive():
    ctx = make_ctx()
    out = get_method("ce")(ctx)
    ref, _ = naive(ctx, "forward_kl")
    assert out.count == int(ctx.mask.sum())
    torch.testing.assert_close(out.terms["ce"], ref, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(out.terms["ce"], [ctx.student_hidden, ctx.lm_head_weight])
    g2 = torch.autograd.grad(ref, [ctx.student_hidden, ctx.lm_head_weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name, params", [("forward_kl", {}), ("reverse_kl", {}), ("jsd", {"beta": 0.5})])
@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("pad", [0, 5])
def test_divergences_match_naive(name, params, temperature, pad):
    ctx = make_ctx(Vt_pad=pad)
    ctx.temperature = temperature
    out = get_method(name)(ctx, params)
    ce_ref, kd_ref = naive(ctx, name, temperature)
    torch.testing.assert_close(out.terms["kd"], kd_ref, atol=1e-5, rtol=1e-4)  # no T² inside the method
    torch.testing.assert_close(out.terms["ce"], ce_ref, atol=1e-5, rtol=1e-5)
    g1 = torch.autograd.grad(out.terms["kd"], [ctx.student_hidden, ctx.lm_head_weight])
    g2 = torch.autograd.grad(kd_ref, [ctx.student_hidden, ctx.lm_head_weight])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_all_masked_gives_zero_and_finite_grads():
    ctx = make_ctx(all_masked=True)
    out = get_method("forward_kl")(ctx)
    obj = combine_terms(out.terms, {"kd": 1.0, "ce": 1.0}, 0)
    assert out.count == 0 and float(obj.loss) == 0.0
    obj.loss.backward()
    assert torch.isfinite(ctx.student_hidden.grad).all()


def test_split_batches_sum_to_whole_batch():
    """Sums over micro-batches / the global count == the whole batch's mean (docs/design.md, contract 2)."""
    ctx = make_ctx(B=4)
    whole = get_method("forward_kl")(ctx)
    n = ctx.num_targets
    parts = []
    for rows in (slice(0, 1), slice(1, 4)):
        sub = StepContext(student_hidden=ctx.student_hidden[rows], lm_head_weight=ctx.lm_head_weight,
                          targets=ctx.targets[rows], mask=ctx.mask[rows], vocab_size=ctx.vocab_size,
                          teacher_hidden=ctx.teacher_hidden[rows], teacher_lm_head_weight=ctx.teacher_lm_head_weight,
                          chunk_tokens=3)
        parts.append(combine_terms(get_method("forward_kl")(sub).terms, {"kd": 1.0, "ce": 0.5}, n).loss)
    full = combine_terms(whole.terms, {"kd": 1.0, "ce": 0.5}, n).loss
    torch.testing.assert_close(sum(parts), full, atol=1e-6, rtol=1e-6)
