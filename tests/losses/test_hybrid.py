"""GOLD hybrid loss against a naive reference. Run: python -m pytest tests/losses/test_hybrid.py -q"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_uld import naive_sorted_l1, random_alignment

from crossdistill.align.merge import merge_probs
from crossdistill.align.spans import BatchAlignment
from crossdistill.align.vocab_map import identity_map
from crossdistill.losses.divergences import generalized_jsd
from crossdistill.losses.hybrid import gold_hybrid
from crossdistill.losses.signal import TeacherSignal

F64 = torch.float64


def naive_hybrid(zs, zt, ys, yt, al, vmap, beta, strategy, w=None):
    ps, pt = torch.softmax(zs, -1), torch.softmax(zt, -1)
    mt = np.nonzero(vmap >= 0)[0]
    ms = vmap[mt]
    ut = np.nonzero(vmap < 0)[0]
    us = np.setdiff1d(np.arange(zs.shape[-1]), ms)
    w_m = len(mt) / zt.shape[-1] if w is None else w[0]
    w_u = 1 - w_m if w is None else w[1]
    total = zs.new_zeros(())
    for g in range(al.num_groups):
        rs = al.student_rows[al.student_groups == g]
        rt = al.teacher_rows[al.teacher_groups == g]
        s = merge_probs(ps[rs], ys[rs], strategy)
        t = merge_probs(pt[rt], yt[rt], strategy)
        jsd = generalized_jsd(s[ms].log(), t[mt].log(), beta=beta)
        total = total + w_m * jsd + w_u * naive_sorted_l1(s[us], t[ut])
    return total


def random_map(v_t, v_s, n_match, seed):
    rng = np.random.default_rng(seed)
    m = np.full(v_t, -1, dtype=np.int64)
    m[rng.choice(v_t, n_match, replace=False)] = rng.choice(v_s, n_match, replace=False)
    return m


@pytest.mark.parametrize("strategy", ["observed", "bayesian"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
def test_matches_naive_value_and_grad(strategy, beta):
    torch.manual_seed(0)
    n_s, n_t, Vs, Vt, G = 10, 14, 23, 31, 6
    zs = torch.randn(n_s, Vs, dtype=F64, requires_grad=True)
    zt = torch.randn(n_t, Vt, dtype=F64)
    ys, yt = torch.randint(0, Vs, (n_s,)), torch.randint(0, Vt, (n_t,))
    al = random_alignment(n_s, n_t, G, seed=2)
    vmap = random_map(Vt, Vs, 15, seed=1)
    out = gold_hybrid(zs, zt, al, vmap, ys, yt, beta=beta, merge=strategy, chunk_groups=4)
    ref = naive_hybrid(zs, zt, ys, yt, al, vmap, beta, strategy)
    torch.testing.assert_close(out.loss, ref)
    assert abs(out.matched_weight - 15 / Vt) < 1e-12
    g1, = torch.autograd.grad(out.loss, zs)
    g2, = torch.autograd.grad(ref, zs)
    torch.testing.assert_close(g1, g2)


def test_fixed_weights_and_terms():
    torch.manual_seed(1)
    zs, zt = torch.randn(5, 12, dtype=F64), torch.randn(5, 15, dtype=F64)
    al = random_alignment(5, 5, 5, seed=0)
    vmap = random_map(15, 12, 6, seed=3)
    out = gold_hybrid(zs, zt, al, vmap, matched_weight=0.3, unmatched_weight=2.0)
    torch.testing.assert_close(out.loss, 0.3 * out.matched + 2.0 * out.unmatched)
    ref = naive_hybrid(zs, zt, torch.zeros(5, dtype=torch.long), torch.zeros(5, dtype=torch.long), al, vmap, 0.5,
                       "observed", w=(0.3, 2.0))
    torch.testing.assert_close(out.loss, ref)
    with pytest.raises(ValueError, match="both"):
        gold_hybrid(zs, zt, al, vmap, matched_weight=0.3)


def test_identical_tokenizers_equals_jsd_over_whole_vocab():
    torch.manual_seed(2)
    N, V = 12, 50
    zs = torch.randn(N, V, dtype=F64)
    zt = torch.randn(N, V, dtype=F64) * 2
    al = BatchAlignment(torch.arange(N), torch.arange(N), torch.arange(N), torch.arange(N), N,
                        torch.zeros(N, dtype=torch.long))
    for beta in (0.0, 0.3, 1.0):
        out = gold_hybrid(zs, zt, al, identity_map(V), beta=beta)
        jsd = generalized_jsd(torch.log_softmax(zs, -1), torch.log_softmax(zt, -1), beta=beta).sum()
        assert out.matched_weight == 1.0 and float(out.unmatched) == 0.0
        assert abs(float(out.loss) - float(jsd)) < 1e-6


def test_topk_unmatched_within_bound():
    torch.manual_seed(3)
    zs, zt = torch.randn(20, 200, dtype=F64) * 3, torch.randn(20, 260, dtype=F64) * 3
    al = random_alignment(20, 20, 20, seed=0)
    vmap = random_map(260, 200, 60, seed=4)
    full = gold_hybrid(zs, zt, al, vmap, matched_weight=0.0, unmatched_weight=1.0)
    top = gold_hybrid(zs, zt, al, vmap, matched_weight=0.0, unmatched_weight=1.0, top_k=16)
    assert float(top.unmatched) <= float(full.unmatched) + 1e-9
    assert float(full.unmatched) <= float(top.unmatched) + float(top.bound.sum()) + 1e-9


def test_sparse_signal_full_width_equals_dense_and_grad_only_to_student():
    torch.manual_seed(4)
    zs = torch.randn(7, 20, requires_grad=True)
    zt = torch.randn(9, 25, requires_grad=True)
    ys, yt = torch.randint(0, 20, (7,)), torch.randint(0, 25, (9,))
    al = random_alignment(7, 9, 4, seed=1)
    vmap = random_map(25, 20, 10, seed=0)
    dense = gold_hybrid(zs, zt, al, vmap, ys, yt)
    sig = TeacherSignal.top_k(zt.detach(), 25, policy="tail_bucket")
    sparse = gold_hybrid(zs, sig, al, vmap, ys, yt)
    torch.testing.assert_close(sparse.loss, dense.loss, atol=1e-5, rtol=1e-5)
    dense.loss.backward()
    assert zs.grad.abs().sum() > 0 and zt.grad is None
    small = gold_hybrid(zs, TeacherSignal.top_k(zt.detach(), 5, policy="tail_bucket"), al, vmap, ys, yt)
    assert torch.isfinite(small.loss)
    small_ren = gold_hybrid(zs, TeacherSignal.top_k(zt.detach(), 5), al, vmap, ys, yt)
    assert torch.isfinite(small_ren.loss)


def test_empty_alignment():
    zs = torch.randn(3, 8, requires_grad=True)
    empty = BatchAlignment(*(torch.zeros(0, dtype=torch.long),) * 4, 0, torch.zeros(0, dtype=torch.long))
    out = gold_hybrid(zs, torch.randn(3, 9), empty, random_map(9, 8, 3, 0))
    out.loss.backward()
    assert float(out.loss) == 0.0 and torch.all(zs.grad == 0)


def test_chunking_by_elements_changes_nothing(monkeypatch):
    """gold_hybrid's group chunks, bounded by ROW_CHUNK_ELEMENTS (one group at a time here), give the value and
    gradient of one pass (the terms are per group)."""
    import crossdistill.losses.uld as uld_mod

    torch.manual_seed(5)
    n_s, n_t, Vs, Vt, G = 13, 10, 17, 23, 6
    zs = torch.randn(n_s, Vs, dtype=F64, requires_grad=True)
    zt = torch.randn(n_t, Vt, dtype=F64)
    ys, yt = torch.randint(0, Vs, (n_s,)), torch.randint(0, Vt, (n_t,))
    al = random_alignment(n_s, n_t, G, seed=9)
    vmap = random_map(Vt, Vs, 9, seed=1)

    def run():
        out = gold_hybrid(zs, zt, al, vmap, ys, yt, beta=0.5)
        return out.loss, torch.autograd.grad(out.loss, zs)[0]

    v1, g1 = run()
    monkeypatch.setattr(uld_mod, "ROW_CHUNK_ELEMENTS", 1)
    v2, g2 = run()
    torch.testing.assert_close(v1, v2, rtol=1e-12, atol=0)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-15)
