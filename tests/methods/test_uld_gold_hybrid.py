"""The ``uld`` and ``gold_hybrid`` methods on a real cross-tokenizer batch.
Run: python -m pytest tests/methods/test_uld_gold_hybrid.py -q"""

from __future__ import annotations

import pytest
import torch

from crossdistill.data.render import collate_rendered, render
from crossdistill.errors import ConfigError
from crossdistill.losses.objective import combine_terms
from crossdistill.methods import StepContext, get_method
from crossdistill.positions import shift_targets

MESSAGES = [{"role": "user", "content": "Add 12 and 30."}]
TEXTS = ["The answer is 42. 🚀", "日本語 e\u0301 42"]


def make_ctx(tokenizers, s_kind="bpe", t_kind="unigram", with_alignment=False):
    ts, tt = tokenizers[s_kind], tokenizers[t_kind]
    bs = collate_rendered([render(ts, MESSAGES, x) for x in TEXTS], ts.pad_token_id)
    bt = collate_rendered([render(tt, MESSAGES, x) for x in TEXTS], tt.pad_token_id)
    ys, ms = shift_targets(bs["labels"])
    yt, mt = shift_targets(bt["labels"])
    torch.manual_seed(0)
    B, T = bs["input_ids"].shape
    H = 16
    hidden = torch.randn(B, T, H, requires_grad=True)
    w = torch.randn(len(ts), H, requires_grad=True)
    zt = torch.randn(B, bt["input_ids"].shape[1], len(tt), requires_grad=True)
    ctx = StepContext(student_hidden=hidden, lm_head_weight=w, targets=ys, mask=ms, vocab_size=len(ts),
                      teacher_logits=zt, teacher_targets=yt, teacher_mask=mt, teacher_batch=bt, batch=bs,
                      student_tokenizer=ts, teacher_tokenizer=tt, teacher_vocab_size=len(tt))
    return ctx, hidden, w, zt


@pytest.mark.parametrize("name,params", [("uld", {}), ("uld", {"variant": "positional", "top_k": None}),
                                         ("uld", {"merge": "bayesian", "top_k": None}), ("gold_hybrid", {}),
                                         ("gold_hybrid", {"top_k": 8, "matched_weight": 1.0,
                                                          "unmatched_weight": 0.5})])
def test_objective_terms_and_gradients(tokenizers, tmp_path, monkeypatch, name, params):
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path))
    spec = get_method(name)
    assert spec.cross_tokenizer and spec.default_weights["ce"] == 1.0  # CE on by default (safe defaults)
    ctx, hidden, w, zt = make_ctx(tokenizers)
    out = spec(ctx, params)
    assert out.count == ctx.num_targets
    assert all(torch.isfinite(v) for v in out.terms.values())
    combined = combine_terms(out.terms, spec.default_weights, out.count, soft_terms=spec.soft_terms)
    combined.loss.backward()
    assert hidden.grad.abs().sum() > 0 and w.grad.abs().sum() > 0
    assert zt.grad is None
    assert set(combined.terms) == set(spec.default_weights)


def test_same_tokenizer_pair_uld_is_finite_and_alignment_identity(tokenizers):
    ctx, *_ = make_ctx(tokenizers, "wordpiece", "wordpiece")
    out = get_method("uld")(ctx)
    assert ctx.alignment.identity and torch.isfinite(out.terms["uld"])


def test_missing_inputs_error(tokenizers):
    ctx, *_ = make_ctx(tokenizers)
    ctx.batch = None
    with pytest.raises(ValueError, match="collate_rendered"):
        get_method("uld")(ctx)
    ctx, *_ = make_ctx(tokenizers)
    with pytest.raises(ConfigError, match=r"loss.params.variant='magic' is not allowed"):
        get_method("uld")(ctx, {"variant": "magic"})


def test_gold_one_to_one_only_keeps_exactly_the_1_to_1_groups(tokenizers, tmp_path, monkeypatch):
    """The filtered loss is the full loss minus the multi-token groups' part (the loss is a sum over groups)."""
    from crossdistill.align.spans import BatchAlignment
    from crossdistill.methods.common import batch_alignment

    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path))
    ctx, *_ = make_ctx(tokenizers)
    al = batch_alignment(ctx)
    ns = torch.bincount(al.student_groups, minlength=al.num_groups)
    nt = torch.bincount(al.teacher_groups, minlength=al.num_groups)
    one = (ns == 1) & (nt == 1)
    assert 0 < int(one.sum()) < al.num_groups  # the fixture has both kinds (emoji, accents)
    kept = al.one_to_one()
    assert kept.num_groups == int(one.sum()) and kept.student_rows.numel() == kept.num_groups
    assert kept.student_groups.tolist() == list(range(kept.num_groups)) == kept.teacher_groups.tolist()
    assert set(kept.student_rows.tolist()) == set(al.student_rows[one[al.student_groups]].tolist())
    # the complement, built by hand, carries the rest of the sum
    multi = ~one
    ids = torch.cumsum(multi.long(), 0) - 1
    sk, tk = multi[al.student_groups], multi[al.teacher_groups]
    rest = BatchAlignment(al.student_rows[sk], ids[al.student_groups[sk]], al.teacher_rows[tk],
                          ids[al.teacher_groups[tk]], int(multi.sum()), al.group_example[multi])
    fn = get_method("gold_hybrid")
    params = {"matched_weight": 1.0, "unmatched_weight": 0.5, "beta": 0.0}
    full = fn(ctx, params).terms["gold"]
    only = fn(ctx, {"one_to_one_only": True, **params}).terms["gold"]
    ctx.alignment = rest
    other = fn(ctx, params).terms["gold"]
    torch.testing.assert_close(only + other, full, rtol=1e-5, atol=1e-5)
    assert 0 < only < full


@pytest.mark.parametrize("name", ["uld", "gold_hybrid"])
def test_ce_from_the_soft_terms_logits_equals_the_fused_ce(tokenizers, tmp_path, monkeypatch, name):
    """``uld`` / ``gold_hybrid`` take CE from the target-row logits their soft term already computed (one student
    head per step): the same value and gradients as the fused chunked ``ce_sum`` (the naive path)."""
    from crossdistill.methods.common import ce_from_target_logits, ce_sum

    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path))
    ctx, hidden, w, _ = make_ctx(tokenizers)
    fused = ce_sum(ctx)
    g_fused = torch.autograd.grad(fused, (hidden, w))
    shared = ce_from_target_logits(ctx, ctx.target_logits())
    g_shared = torch.autograd.grad(shared, (hidden, w))
    torch.testing.assert_close(shared, fused, rtol=1e-6, atol=0)
    for a, b in zip(g_shared, g_fused):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    ctx, hidden, w, _ = make_ctx(tokenizers)
    out = get_method(name)(ctx)
    torch.testing.assert_close(out.terms["ce"], fused.detach(), rtol=1e-6, atol=0)
