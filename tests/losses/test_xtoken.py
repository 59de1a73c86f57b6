"""X-Token P-KL and H-KL against naive references, hand-computed cases and the same-tokenizer reduction.

Run: python -m pytest tests/losses/test_xtoken.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_uld import random_alignment

from crossdistill.align.projection import Projection
from crossdistill.align.spans import BatchAlignment
from crossdistill.losses.divergences import forward_kl
from crossdistill.losses.hybrid import gold_hybrid
from crossdistill.losses.signal import TeacherSignal
from crossdistill.losses.sparse import sparse_divergence
from crossdistill.losses.xtoken import group_first_rows, hybrid_kl, pkl_rows, projected_kl

F64 = torch.float64


def random_projection(v_s: int, v_t: int, seed: int, uncovered: int = 2, empty: int = 1) -> Projection:
    """Random sparse rows (1-3 entries), ``empty`` student rows with none, ``uncovered`` teacher columns unused."""
    rng = np.random.default_rng(seed)
    usable = np.arange(uncovered, v_t)
    rows = {}
    for s in range(empty, v_s):
        k = int(rng.integers(1, 4))
        rows[s] = {int(t): float(w) for t, w in zip(rng.choice(usable, k, replace=False), rng.random(k) + 0.1)}
    return Projection.from_rows(rows, v_s, v_t, top_k=3)


def naive_pkl(zs: torch.Tensor, zt: torch.Tensor, w: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Row by row from the definition: q = p_S W, both restricted to W's covered columns and renormalized."""
    cov = w.sum(0) > 0
    out = []
    for g in range(zs.shape[0]):
        p = torch.softmax(zs[g] / temperature, -1)
        q = p @ w
        q = q[cov] / q.sum()
        a = torch.softmax(zt[g] / temperature, -1)[cov]
        a = a / a.sum()
        out.append((a * (a.log() - q.log())).sum())
    return torch.stack(out)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 0.7])
def test_pkl_rows_match_naive_value_and_grad(temperature):
    torch.manual_seed(0)
    proj = random_projection(9, 13, seed=1)
    zs = torch.randn(6, 9, dtype=F64, requires_grad=True)
    zt = torch.randn(6, 13, dtype=F64)
    got = pkl_rows(zs, zt, proj, temperature)
    ref = naive_pkl(zs, zt, proj.to_dense(), temperature)
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    g1, = torch.autograd.grad(got.sum(), zs)
    g2, = torch.autograd.grad(ref.sum(), zs)
    torch.testing.assert_close(g1, g2, rtol=1e-9, atol=1e-12)


def test_pkl_hand_computed_multi_digit_case():
    """Student vocab {"201", "2"}, teacher vocab {"2", "0", "1"}; W["201"] = the decayed (0.9009, 0.0901, 0.0090),
    W["2"] = one-hot. p_S = (0.5, 0.5), p_T = (0.9, 0.05, 0.05)."""
    w201 = [0.9 / 0.999, 0.09 / 0.999, 0.009 / 0.999]
    proj = Projection.from_rows({0: dict(enumerate(w201)), 1: {0: 1.0}}, 2, 3, top_k=3)
    q = [0.5 * w201[0] + 0.5, 0.5 * w201[1], 0.5 * w201[2]]  # 0.95045.., 0.04505.., 0.0045..
    pt = [0.9, 0.05, 0.05]
    expected = sum(a * math.log(a / b) for a, b in zip(pt, q))
    zs = torch.tensor([[0.0, 0.0]], dtype=F64)
    zt = torch.tensor([pt], dtype=F64).log()
    assert float(pkl_rows(zs, zt, proj)[0]) == pytest.approx(expected, rel=1e-7)  # W is stored in float32
    assert expected == pytest.approx(0.0764781, abs=1e-6)


def test_pkl_drops_uncovered_teacher_mass_and_unmapped_student_mass():
    """Teacher token 2 has no preimage; student token 1 has no row. p_S = (0.25, 0.75) puts 0.25 on token 0 ->
    teacher 0; p_T = (0.5, 0.3, 0.2) renormalized over {0, 1}: (0.625, 0.375), against q̃ = (1, 0)."""
    proj = Projection.from_rows({0: {0: 1.0}, 2: {1: 1.0}}, 3, 3, top_k=1)
    zs = torch.tensor([[math.log(0.25), math.log(0.5), math.log(0.25)]], dtype=F64)
    zt = torch.tensor([[0.5, 0.3, 0.2]], dtype=F64).log()
    # q = (0.25, 0.25), q̃ = (0.5, 0.5)
    expected = 0.625 * math.log(0.625 / 0.5) + 0.375 * math.log(0.375 / 0.5)
    assert float(pkl_rows(zs, zt, proj)[0]) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_identical_tokenizers_pkl_is_forward_kl(temperature):
    torch.manual_seed(3)
    zs = torch.randn(7, 11, dtype=F64, requires_grad=True)
    zt = torch.randn(7, 11, dtype=F64)
    got = pkl_rows(zs, zt, Projection.identity(11), temperature)
    ref = forward_kl(torch.log_softmax(zs / temperature, -1), torch.log_softmax(zt / temperature, -1))
    torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-12)
    g1, = torch.autograd.grad(got.sum(), zs)
    g2, = torch.autograd.grad(ref.sum(), zs)
    torch.testing.assert_close(g1, g2)


def test_projected_kl_from_hidden_chunks_and_identity_alignment():
    """From hidden states through the chunked head: any chunk size gives the same value and gradients, and with
    W = I and one token per group it is the forward KL summed over positions."""
    torch.manual_seed(4)
    n, h, v = 9, 5, 8
    hidden = torch.randn(n, h, dtype=F64, requires_grad=True)
    weight = torch.randn(v + 3, h, dtype=F64, requires_grad=True)  # 3 padding rows
    bias = torch.randn(v + 3, dtype=F64, requires_grad=True)
    zt = torch.randn(n, v, dtype=F64)
    al = BatchAlignment(torch.arange(n), torch.arange(n), torch.arange(n), torch.arange(n), n,
                        torch.zeros(n, dtype=torch.long))
    zs = ((hidden @ weight.T + bias) * 1.5)[:, :v]
    ref = forward_kl(torch.log_softmax(zs / 2.0, -1), torch.log_softmax(zt / 2.0, -1)).sum()
    ref_grads = torch.autograd.grad(ref, (hidden, weight, bias))
    for chunk in (1, 4, 100):
        out = projected_kl(hidden, weight, zt, al, Projection.identity(v), temperature=2.0, student_bias=bias,
                           logit_scale=1.5, vocab_size=v, chunk_rows=chunk)
        torch.testing.assert_close(out.loss, ref)
        grads = torch.autograd.grad(out.loss, (hidden, weight, bias))
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b)
        assert torch.all(grads[1][v:] == 0)  # padding rows of the head get no gradient


def test_projected_kl_uses_each_groups_first_rows():
    torch.manual_seed(5)
    proj = random_projection(7, 10, seed=2)
    n_s, n_t, G = 8, 11, 4
    al = random_alignment(n_s, n_t, G, seed=3)
    hidden = torch.randn(n_s, 3, dtype=F64, requires_grad=True)
    weight = torch.randn(7, 3, dtype=F64)
    zt = torch.randn(n_t, 10, dtype=F64)
    out = projected_kl(hidden, weight, zt, al, proj, chunk_rows=3)
    s_rows, t_rows = group_first_rows(al)
    assert s_rows.tolist() == [int(al.student_rows[al.student_groups == g][0]) for g in range(G)]
    ref = naive_pkl((hidden @ weight.T)[s_rows], zt[t_rows], proj.to_dense()).sum()
    torch.testing.assert_close(out.loss, ref)
    torch.testing.assert_close(torch.autograd.grad(out.loss, hidden)[0], torch.autograd.grad(ref, hidden)[0])
    assert out.num_groups == G and out.per_group.shape == (G,)


def test_empty_alignment_gives_a_differentiable_zero():
    hidden = torch.randn(3, 4, requires_grad=True)
    al = BatchAlignment(*(torch.zeros(0, dtype=torch.long),) * 4, 0, torch.zeros(0, dtype=torch.long))
    out = projected_kl(hidden, torch.randn(6, 4), torch.randn(2, 6), al, Projection.identity(6))
    assert float(out.loss.detach()) == 0.0 and out.num_groups == 0
    out.loss.backward()
    assert torch.all(hidden.grad == 0)


@pytest.mark.parametrize("policy", ["renormalize", "tail_bucket"])
def test_sparse_teacher_with_everything_kept_equals_dense(policy):
    torch.manual_seed(6)
    proj = random_projection(9, 13, seed=4)
    zs = torch.randn(5, 9, dtype=F64, requires_grad=True)
    zt = torch.randn(5, 13, dtype=F64)
    dense = pkl_rows(zs, zt, proj, 1.5)
    sparse = pkl_rows(zs, TeacherSignal.top_k(zt, 13, policy=policy), proj, 1.5)
    torch.testing.assert_close(sparse, dense, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(torch.autograd.grad(sparse.sum(), zs)[0], torch.autograd.grad(dense.sum(), zs)[0],
                               rtol=1e-8, atol=1e-10)


def test_sparse_top_k_policies_by_definition():
    torch.manual_seed(7)
    proj = random_projection(9, 13, seed=5)
    cov = torch.as_tensor(proj.covered_teacher())
    zs = torch.randn(4, 9, dtype=F64)
    zt = torch.randn(4, 13, dtype=F64)
    k = 5
    w = proj.to_dense()
    q = torch.softmax(zs, -1) @ w
    q = q / q.sum(-1, keepdim=True)
    lt = torch.log_softmax(zt, -1)
    for policy in ("renormalize", "tail_bucket"):
        sig = TeacherSignal.top_k(zt, k, policy=policy)
        got = pkl_rows(zs, sig, proj)
        for r in range(4):
            ids = sig.ids[r]
            keep = ids[cov[ids]]
            a = lt[r, keep].exp()
            if policy == "renormalize":
                a = a / a.sum()
                ref = (a * (a.log() - q[r, keep].log())).sum()
            else:
                tail = float(sig.tail_logmass[r].exp())
                t_all = torch.cat([a, torch.tensor([tail], dtype=F64)])
                t_all = t_all / t_all.sum()
                s_all = torch.cat([q[r, keep], (1 - q[r, keep].sum()).reshape(1)])
                ref = (t_all * (t_all.log() - s_all.log())).sum()
            assert float(got[r]) == pytest.approx(float(ref), rel=1e-9, abs=1e-12), (policy, r)


def test_identity_sparse_equals_the_projects_sparse_forward_kl():
    torch.manual_seed(8)
    zs = torch.randn(6, 10, dtype=F64)
    zt = torch.randn(6, 10, dtype=F64)
    for policy in ("renormalize", "tail_bucket"):
        sig = TeacherSignal.top_k(zt, 4, policy=policy)
        got = pkl_rows(zs, sig, Projection.identity(10))
        kept, tail = sig.tempered_sparse(1.0, 10)
        ref = sparse_divergence("forward_kl", torch.log_softmax(zs, -1), sig.ids, kept, tail, policy)
        torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-10)


def test_shape_errors_name_the_fix():
    proj = Projection.identity(5)
    with pytest.raises(ValueError, match="slice the head"):
        pkl_rows(torch.randn(2, 6), torch.randn(2, 5), proj)
    with pytest.raises(ValueError, match="temperature"):
        pkl_rows(torch.randn(2, 5), torch.randn(2, 5), proj, 0.0)


def test_hybrid_kl_is_gold_hybrid_on_the_relaxed_map():
    torch.manual_seed(9)
    proj = random_projection(9, 13, seed=6, empty=0)
    zs = torch.randn(10, 9, dtype=F64, requires_grad=True)
    zt = torch.randn(12, 13, dtype=F64)
    ys, yt = torch.randint(0, 9, (10,)), torch.randint(0, 13, (12,))
    al = random_alignment(10, 12, 5, seed=1)
    out = hybrid_kl(zs, zt, al, proj, ys, yt, top_k=None, chunk_groups=2)
    ref = gold_hybrid(zs, zt, al, proj.relaxed_map(0.6), ys, yt, beta=0.0, matched_weight=1.0, unmatched_weight=1.0)
    torch.testing.assert_close(out.loss, ref.loss)
    torch.testing.assert_close(out.loss, out.matched + out.unmatched)


def test_identical_tokenizers_hkl_is_forward_kl():
    torch.manual_seed(10)
    zs = torch.randn(6, 8, dtype=F64, requires_grad=True)
    zt = torch.randn(6, 8, dtype=F64)
    al = random_alignment(6, 6, 6, seed=0)
    out = hybrid_kl(zs, zt, al, Projection.identity(8), temperature=1.3)
    ref = forward_kl(torch.log_softmax(zs / 1.3, -1), torch.log_softmax(zt / 1.3, -1)).sum()
    torch.testing.assert_close(out.loss, ref)
    assert float(out.unmatched) == 0.0
