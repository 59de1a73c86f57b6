"""MultiLevelOT vs naive references (paper and official variants). Run: python -m pytest tests/losses/test_mlot.py -q"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from crossdistill.losses.mlot import MultiLevelOTConfig, multilevel_ot_terms
from crossdistill.losses.signal import TeacherSignal


def naive_plan(cost, a, b, eps, iters):
    plan = torch.exp(-cost / eps)
    for _ in range(iters):
        plan = plan * (a / plan.sum(1))[:, None]
        plan = plan * (b / plan.sum(0))[None, :]
    return plan


def brute_force_q(t_ranked, s_probs):
    """Q* by enumerating every injective map of the k' ranks to student ids (tiny vocabularies only)."""
    k = t_ranked.shape[1]
    p = min(t_ranked.shape[0], s_probs.shape[0])
    best, best_ids = math.inf, None
    for ids in itertools.permutations(range(s_probs.shape[1]), k):
        c = sum(abs(float(t_ranked[t, i]) - float(s_probs[t, ids[i]])) for t in range(p) for i in range(k))
        if c < best - 1e-12:
            best, best_ids = c, list(ids)
    return best_ids


def naive_paper(student_logits, teacher_logits, k, eps=0.1, iters=20, tau_sd=2.0):
    """Element-by-element MultiLevelOT (paper) with brute-force Q*; autograd through plain loops."""
    had = sl = sd = 0.0
    for s_z, t_z in zip(student_logits, teacher_logits):
        n, m = s_z.shape[0], t_z.shape[0]
        p = min(n, m)

        def ranked(tau, s_z=s_z, t_z=t_z):
            t = torch.softmax(t_z / tau, -1)
            order = sorted(range(t.shape[1]), key=lambda v: -float(t[:, v].sum()))[:k]
            tk = t[:, order]
            s = torch.softmax(s_z / tau, -1)
            ids = brute_force_q(tk, s.detach())
            return tk, s[:, ids]

        tk, sk = ranked(1.0)
        for t in range(p):
            for i in range(tk.shape[1]):
                had = had + abs(tk[t, i] - sk[t, i])
                sl = sl - tk[t, i] * torch.log(sk[t, i])
        tk2, sk2 = ranked(tau_sd)
        cost = torch.stack([torch.stack([(tk2[i] - sk2[j]).abs().sum() for j in range(n)]) for i in range(m)])
        plan = naive_plan(cost, torch.full((m,), n / m), torch.ones(n), eps, iters)
        sd = sd + (plan * cost).sum()
    return {"had": had, "sl": sl, "sd": sd}


def _inputs(lens, v_s=6, v_t=7, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    s = [(torch.randn(n, v_s, generator=g) * scale).requires_grad_() for n, _ in lens]
    t = [torch.randn(m, v_t, generator=g) * scale for _, m in lens]
    return s, t


@pytest.mark.parametrize("lens", [[(4, 4)], [(3, 5), (6, 2), (1, 1)]])
def test_paper_matches_naive_value_and_gradient(lens):
    s, t = _inputs(lens)
    cfg = MultiLevelOTConfig(top_k=3, student_candidates=6)  # candidates = V_s: Q* exact over the vocabulary
    ours = multilevel_ot_terms(s, t, cfg)
    grads = torch.autograd.grad(sum(ours.values()), s)
    s2 = [x.detach().clone().requires_grad_() for x in s]
    ref = naive_paper(s2, t, k=3)
    ref_grads = torch.autograd.grad(sum(ref.values()), s2)
    for name in ("had", "sl", "sd"):
        torch.testing.assert_close(ours[name], ref[name].float(), atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_student_assignment_beats_own_ranking():
    # Q* minimizes the L1 objective, so the paper's HAD can never exceed the official own-ranking HAD on paired rows.
    s, t = _inputs([(8, 8)], v_s=9, v_t=9, seed=3)
    paper = multilevel_ot_terms(s, t, MultiLevelOTConfig(top_k=4, student_candidates=9))
    own = multilevel_ot_terms(s, t, MultiLevelOTConfig(top_k=4, student_ranking="own"))
    assert paper["had"].detach().item() <= own["had"].detach().item() + 1e-6


def test_identical_distributions_give_zero_had_and_entropy_sl():
    z = torch.randn(5, 8)
    out = multilevel_ot_terms([z.clone().requires_grad_()], [z], MultiLevelOTConfig(top_k=8, student_candidates=8))
    assert out["had"].detach().item() < 1e-6
    p = torch.softmax(z, -1)
    torch.testing.assert_close(out["sl"], -(p * p.log()).sum(), atol=1e-5, rtol=1e-5)


def test_sparse_teacher_signal_equals_dense_when_k_covers_vocab():
    s, t = _inputs([(5, 6), (3, 3)], v_s=6, v_t=7, seed=5)
    cfg = MultiLevelOTConfig(top_k=3, student_candidates=6)
    dense = multilevel_ot_terms(s, t, cfg)
    sparse = multilevel_ot_terms(s, [TeacherSignal.top_k(x, 7) for x in t], cfg, teacher_vocab_size=7)
    for name in dense:
        torch.testing.assert_close(dense[name], sparse[name], atol=1e-5, rtol=1e-5)
    # A truncated signal (k = 4 of 7) still runs and stays finite.
    trunc = multilevel_ot_terms(s, [TeacherSignal.top_k(x, 4) for x in t], cfg, teacher_vocab_size=7)
    assert all(torch.isfinite(v) for v in trunc.values())
    with pytest.raises(ValueError, match="teacher_vocab_size"):
        multilevel_ot_terms(s, [TeacherSignal.top_k(x, 4) for x in t], cfg)


def test_empty_sequence_contributes_zero_and_gradients_are_finite():
    s, t = _inputs([(0, 3), (4, 0), (3, 3)], seed=7)
    out = multilevel_ot_terms(s, t, MultiLevelOTConfig(top_k=3))
    total = sum(out.values())
    total.backward()
    assert torch.isfinite(total)
    assert all(torch.isfinite(x.grad).all() for x in s if x.grad is not None)
    alone = multilevel_ot_terms([s[2]], [t[2]], MultiLevelOTConfig(top_k=3))
    for name in out:
        torch.testing.assert_close(out[name], alone[name])


def naive_official(student_logits, teacher_logits, k, iters):
    """Line-by-line restatement of the official DistillationLoss distillation terms."""
    def norm_softmax(z):
        return torch.softmax(z / (z.std(-1, keepdim=True) + 1e-4), -1)

    sizes_s = [x.shape[0] for x in student_logits]
    sizes_t = [x.shape[0] for x in teacher_logits]
    length = max(sizes_s + sizes_t)
    bsz = len(sizes_s)
    s = torch.zeros(bsz, length, student_logits[0].shape[1])
    t = torch.zeros(bsz, length, teacher_logits[0].shape[1])
    for b in range(bsz):
        s = s.index_put((torch.tensor(b), torch.arange(sizes_s[b])), norm_softmax(student_logits[b]))
        t = t.index_put((torch.tensor(b), torch.arange(sizes_t[b])), norm_softmax(teacher_logits[b]))
    t = t[:, :, t.sum((0, 1)).argsort(descending=True)[:k]]
    s = s[:, :, s.sum((0, 1)).detach().argsort(descending=True)[:k]]
    had = torch.stack([(s[b, :min(sizes_s[b], sizes_t[b])] - t[b, :min(sizes_s[b], sizes_t[b])]).abs().sum(-1).mean()
                       for b in range(bsz)]).mean()
    sl = -(torch.softmax(s, -1) * torch.log_softmax(t, -1)).sum(-1).mean()
    sd = 0.0
    for b in range(bsz):
        x, y = torch.softmax(t[b] / 2, -1), torch.softmax(s[b] / 2, -1)
        w = torch.cdist(x, y, p=1)
        kmat = torch.exp(-w / 0.1)
        for _ in range(iters):
            kmat = kmat / kmat.sum(1, keepdim=True)
            kmat = kmat / kmat.sum(0, keepdim=True)
        sd = sd + 0.001 * (kmat * w).sum()
    return {"had": had, "sl": sl, "sd": sd}


def test_official_variant_matches_its_restatement():
    s, t = _inputs([(4, 6), (5, 3)], v_s=60, v_t=70, seed=11)
    cfg = MultiLevelOTConfig(reference_impl="official", sinkhorn_iters=10)
    ours = multilevel_ot_terms(s, t, cfg)
    grads = torch.autograd.grad(sum(ours.values()), s)
    s2 = [x.detach().clone().requires_grad_() for x in s]
    ref = naive_official(s2, t, k=50, iters=10)
    ref_grads = torch.autograd.grad(sum(ref.values()), s2)
    for name in ("had", "sl", "sd"):
        torch.testing.assert_close(ours[name], ref[name], atol=1e-5, rtol=1e-5)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="top_k"):
        MultiLevelOTConfig(top_k=0)
    with pytest.raises(ValueError, match="reference_impl"):
        MultiLevelOTConfig(reference_impl="nope")
    with pytest.raises(ValueError, match="sinkhorn_epsilon"):
        MultiLevelOTConfig(sinkhorn_epsilon=0)


def test_student_vocab_smaller_than_k_truncates_both_sides():
    s, t = _inputs([(4, 5)], v_s=3, v_t=7, seed=13)
    big = multilevel_ot_terms(s, t, MultiLevelOTConfig(top_k=50, student_candidates=50))
    small = multilevel_ot_terms(s, t, MultiLevelOTConfig(top_k=3, student_candidates=50))
    for name in big:
        torch.testing.assert_close(big[name], small[name])
