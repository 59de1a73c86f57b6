"""ALM: distances by hand, chunk likelihoods against a naive loop, merging and debiasing, sparse boundary estimates.

Run: python -m pytest tests/losses/test_alm.py -q
"""

from __future__ import annotations

import math

import pytest
import torch
from test_uld import random_alignment

from crossdistill.align.spans import BatchAlignment
from crossdistill.losses.alm import (
    ALM_DISTANCES,
    alm_distance,
    alm_loss,
    dense_row_stats,
    next_row_values,
    sparse_boundary_logp,
)

F64 = torch.float64


def naive_distance(name, t, s, tau=100.0, eps=1e-6, alpha=0.5):
    """Scalar formulas written out (plain log(1 - y), no stable helpers)."""
    if name == "abs":
        return (t - s).abs()
    if name == "renyi":
        yt, ys = torch.exp(t - eps), torch.exp(s - eps)
        return torch.log(yt**alpha * ys ** (1 - alpha) + (1 - yt) ** alpha * (1 - ys) ** (1 - alpha)) / (alpha - 1)
    yt, ys = torch.exp(t / tau - eps), torch.exp(s / tau - eps)
    if name == "binary_ce":
        return -(yt * torch.log(ys) + (1 - yt) * torch.log(1 - ys))
    if name == "reverse_binary_kl":
        return ys * torch.log(ys / yt) + (1 - ys) * torch.log((1 - ys) / (1 - yt))
    return (yt - ys).abs()


HAND = {"binary_ce": 0.3434852968975936, "reverse_binary_kl": 0.034935926608227724, "abs": 10.0,
        "abs_exp": 0.08610657885135575, "renyi": 4.4791158295569075e-05}


@pytest.mark.parametrize("name", ALM_DISTANCES)
def test_distances_by_hand_and_gradient(name):
    """log y_t = -10, log y_s = -20 (τ = 100, ε = 1e-6, α = 0.5); the values were computed with plain floats."""
    t = torch.tensor([-10.0], dtype=F64)
    s = torch.tensor([-20.0], dtype=F64, requires_grad=True)
    got = alm_distance(name, t, s)
    assert float(got.detach()) == pytest.approx(HAND[name], rel=1e-9)
    s2 = torch.tensor([-3.0, -0.5, -40.0, -7.0], dtype=F64, requires_grad=True)
    t2 = torch.tensor([-2.0, -1.5, -35.0, -7.0], dtype=F64)
    got = alm_distance(name, t2, s2)
    ref = torch.stack([naive_distance(name, a, b) for a, b in zip(t2, s2)])
    torch.testing.assert_close(got, ref, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), s2)[0], torch.autograd.grad(ref.sum(), s2)[0],
                               rtol=1e-8, atol=1e-12)


def test_binary_ce_is_minimized_at_the_teacher_likelihood():
    t = torch.full((1,), -12.0, dtype=F64)
    s = torch.linspace(-30, -1, 2901, dtype=F64)
    d = alm_distance("binary_ce", t.expand_as(s), s)
    assert float(s[d.argmin()]) == pytest.approx(-12.0, abs=0.011)
    assert float(alm_distance("abs", t, t)) == 0.0 and float(alm_distance("reverse_binary_kl", t, t)) < 1e-12


def test_distance_errors():
    with pytest.raises(ValueError, match="not one of"):
        alm_distance("l2", torch.zeros(1), torch.zeros(1))
    with pytest.raises(ValueError, match="renyi_alpha"):
        alm_distance("renyi", torch.zeros(1), torch.zeros(1), renyi_alpha=1.0)


def _groups(al, side):
    rows, groups = (al.student_rows, al.student_groups) if side == "s" else (al.teacher_rows, al.teacher_groups)
    return [[int(r) for r, g in zip(rows, groups) if int(g) == k] for k in range(al.num_groups)]


def naive_alm(s_logp, t_logp, al, s_ex, t_ex, s_b, t_b, closures, merge, thr, append, dist, weight):
    """Straight from the definition, one Python loop per stage."""
    sg, tg, ex = _groups(al, "s"), _groups(al, "t"), al.group_example.tolist()
    G = al.num_groups

    def ends_example(g):
        return g == G - 1 or ex[g + 1] != ex[g]

    chunks, cur = [], []
    for g in range(G):
        cur.append(g)
        if closures is None or bool(closures[g]) or ends_example(g):
            chunks.append(cur)
            cur = []

    def after(chunk, side):
        rows, vals, rex = (sg, s_b, s_ex) if side == "s" else (tg, t_b, t_ex)
        last = rows[chunk[-1]][-1]
        nxt = last + 1
        return vals[nxt] if nxt < len(rex) and rex[nxt] == rex[last] else torch.zeros((), dtype=F64)

    if merge:
        merged, cur = [], []
        for ch in chunks:
            cur = cur + ch
            if float(after(ch, "t").exp()) > thr or ends_example(ch[-1]):
                merged.append(cur)
                cur = []
        chunks = merged
    total = torch.zeros((), dtype=F64)
    for ch in chunks:
        ls = sum(s_logp[r] for g in ch for r in sg[g])
        lt = sum(t_logp[r] for g in ch for r in tg[g])
        if append:
            ls, lt = ls + after(ch, "s"), lt + after(ch, "t")
        d = naive_distance(dist, torch.clamp(lt, max=0.0), torch.clamp(ls, max=0.0))
        total = total + d * (1 if weight == "one" else sum(len(sg[g]) for g in ch))
    return total, len(chunks)


def two_examples(seed):
    """Two examples: 5 student / 7 teacher rows in 3 groups, then 4 / 3 rows in 2 groups."""
    a, b = random_alignment(5, 7, 3, seed), random_alignment(4, 3, 2, seed + 1)
    al = BatchAlignment(torch.cat([a.student_rows, b.student_rows + 5]),
                        torch.cat([a.student_groups, b.student_groups + 3]),
                        torch.cat([a.teacher_rows, b.teacher_rows + 7]),
                        torch.cat([a.teacher_groups, b.teacher_groups + 3]), 5, torch.tensor([0, 0, 0, 1, 1]))
    s_ex = torch.tensor([0] * 5 + [1] * 4)
    t_ex = torch.tensor([0] * 7 + [1] * 3)
    return al, s_ex, t_ex


@pytest.mark.parametrize("merge", [False, True])
@pytest.mark.parametrize("append", [False, True])
@pytest.mark.parametrize("space", [False, True])
@pytest.mark.parametrize("dist,weight", [("binary_ce", "one"), ("abs", "tokens"), ("reverse_binary_kl", "one"),
                                         ("renyi", "one"), ("abs_exp", "tokens")])
def test_alm_matches_naive_value_and_grad(merge, append, space, dist, weight):
    torch.manual_seed(0)
    al, s_ex, t_ex = two_examples(3)
    s_logp = (-torch.rand(9, dtype=F64) * 4).requires_grad_(True)
    t_logp = -torch.rand(10, dtype=F64) * 4
    s_b = (-torch.rand(9, dtype=F64) * 3).requires_grad_(True)
    t_b = torch.tensor([-0.05, -4.0, -0.01, -3.0, -0.2, -5.0, -0.02, -0.1, -6.0, -0.3], dtype=F64)
    closures = torch.tensor([True, False, True, False, True]) if space else None
    out = alm_loss(s_logp, t_logp, al, student_row_example=s_ex, teacher_row_example=t_ex, student_boundary_logp=s_b,
                   teacher_boundary_logp=t_b, group_closures=closures, merge_by_space_prob=merge, threshold=0.1,
                   append_space=append, distance=dist, chunk_weight=weight)
    ref, n = naive_alm(s_logp, t_logp, al, s_ex.tolist(), t_ex.tolist(), s_b, t_b, closures, merge, 0.1, append, dist,
                       weight)
    torch.testing.assert_close(out.loss, ref, rtol=1e-10, atol=1e-12)
    assert out.num_chunks == n and out.per_chunk.shape == (n,)
    assert int(out.chunk_tokens.sum()) == 9
    inputs = (s_logp, s_b) if append else (s_logp,)
    for a, b in zip(torch.autograd.grad(out.loss, inputs), torch.autograd.grad(ref, inputs)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_unconstrained_chunks_are_the_groups_and_hand_case():
    """Three one-token groups (identical tokenizers): three chunks, each the token's own log-prob."""
    al = BatchAlignment(torch.arange(3), torch.arange(3), torch.arange(3), torch.arange(3), 3, torch.zeros(3).long())
    s = torch.tensor([-1.0, -2.0, -0.5], dtype=F64)
    t = torch.tensor([-1.5, -2.0, -0.1], dtype=F64)
    ex = torch.zeros(3, dtype=torch.long)
    out = alm_loss(s, t, al, student_row_example=ex, teacher_row_example=ex, merge_by_space_prob=False,
                   append_space=False, distance="abs")
    assert out.num_chunks == 3
    torch.testing.assert_close(out.per_chunk, torch.tensor([0.5, 0.0, 0.4], dtype=F64))
    assert float(out.loss) == pytest.approx(0.9)
    # merging with a teacher that never sees a word boundary: one chunk, |(-3.6) - (-3.5)|
    tb = torch.full((3,), -10.0, dtype=F64)
    merged = alm_loss(s, t, al, student_row_example=ex, teacher_row_example=ex, teacher_boundary_logp=tb,
                      student_boundary_logp=tb, merge_by_space_prob=True, append_space=False, distance="abs")
    assert merged.num_chunks == 1 and float(merged.loss) == pytest.approx(0.1)


def test_debiasing_adds_the_next_rows_boundary_and_nothing_at_the_end():
    """Groups {0,1} and {2}: chunk 0 gains the boundary log-prob of row 2 (the row after its last token); the last
    chunk of the example gains 0."""
    al = BatchAlignment(torch.arange(3), torch.tensor([0, 0, 1]), torch.arange(2), torch.tensor([0, 1]), 2,
                        torch.zeros(2).long())
    s = torch.tensor([-1.0, -1.0, -1.0], dtype=F64)
    t = torch.tensor([-2.0, -1.0], dtype=F64)
    s_b = torch.tensor([-9.0, -9.0, -0.3], dtype=F64)
    t_b = torch.tensor([-9.0, -0.7], dtype=F64)
    out = alm_loss(s, t, al, student_row_example=torch.zeros(3).long(), teacher_row_example=torch.zeros(2).long(),
                   student_boundary_logp=s_b, teacher_boundary_logp=t_b, merge_by_space_prob=False,
                   append_space=True, distance="abs")
    torch.testing.assert_close(out.student_logp, torch.tensor([-2.3, -1.0], dtype=F64))
    torch.testing.assert_close(out.teacher_logp, torch.tensor([-2.7, -1.0], dtype=F64))


def test_merging_never_crosses_examples():
    al, s_ex, t_ex = two_examples(5)
    s, t = -torch.rand(9, dtype=F64), -torch.rand(10, dtype=F64)
    never = torch.full((10,), -50.0, dtype=F64)  # the teacher never expects a boundary: merge everything possible
    out = alm_loss(s, t, al, student_row_example=s_ex, teacher_row_example=t_ex, student_boundary_logp=never[:9],
                   teacher_boundary_logp=never, merge_by_space_prob=True, append_space=True)
    assert out.num_chunks == 2  # one per example
    torch.testing.assert_close(out.chunk_tokens, torch.tensor([5.0, 4.0], dtype=F64))


def test_empty_alignment_and_argument_errors():
    al = BatchAlignment(*(torch.zeros(0, dtype=torch.long),) * 4, 0, torch.zeros(0, dtype=torch.long))
    s = torch.zeros(0, dtype=F64, requires_grad=True)
    out = alm_loss(s, torch.zeros(0), al, student_row_example=torch.zeros(0).long(),
                   teacher_row_example=torch.zeros(0).long(), merge_by_space_prob=False, append_space=False)
    assert out.num_chunks == 0 and float(out.loss.detach()) == 0.0
    with pytest.raises(ValueError, match="teacher_boundary_logp"):
        alm_loss(s, torch.zeros(0), al, student_row_example=torch.zeros(0).long(),
                 teacher_row_example=torch.zeros(0).long())
    with pytest.raises(ValueError, match="chunk_weight"):
        alm_loss(s, torch.zeros(0), al, student_row_example=torch.zeros(0).long(),
                 teacher_row_example=torch.zeros(0).long(), merge_by_space_prob=False, append_space=False,
                 chunk_weight="bytes")


def test_next_row_values():
    vals = torch.tensor([1.0, 2.0, 3.0, 4.0])
    ex = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(next_row_values(vals, torch.tensor([0, 1, 2, 3]), ex), torch.tensor([2.0, 0, 4.0, 0]))


def test_dense_row_stats():
    torch.manual_seed(1)
    z = torch.randn(6, 9, dtype=F64)
    rows, y = torch.tensor([1, 4, 5]), torch.tensor([0, 8, 3])
    mask = torch.zeros(9, dtype=torch.bool)
    mask[[2, 3, 7]] = True
    lp, bd = dense_row_stats(z, rows, y, mask, chunk_rows=2)
    ref = torch.log_softmax(z[rows], -1)
    torch.testing.assert_close(lp, ref.gather(-1, y[:, None])[:, 0])
    torch.testing.assert_close(bd, ref[:, mask].logsumexp(-1))
    assert dense_row_stats(z, rows, y, None)[1] is None


def test_sparse_boundary_estimate():
    torch.manual_seed(2)
    z = torch.randn(4, 12, dtype=F64)
    mask = torch.zeros(12, dtype=torch.bool)
    mask[[0, 5, 6, 11]] = True
    from crossdistill.losses.signal import TeacherSignal

    full = TeacherSignal.top_k(z, 12)
    exact = torch.log_softmax(z, -1)[:, mask].logsumexp(-1)
    torch.testing.assert_close(sparse_boundary_logp(full.ids, full.logprobs, full.tail_logmass, mask), exact)
    # k = 3: the kept ids' masked mass plus (masked ids left / ids left) of the tail
    sig = TeacherSignal.top_k(z, 3)
    p = torch.softmax(z, -1)
    for r in range(4):
        ids = sig.ids[r]
        kept = float(p[r, ids][mask[ids]].sum())
        share = (int(mask.sum()) - int(mask[ids].sum())) / 9
        want = math.log(kept + float(sig.tail_logmass[r].exp()) * share)
        got = float(sparse_boundary_logp(sig.ids, sig.logprobs, sig.tail_logmass, mask)[r])
        assert got == pytest.approx(want, rel=1e-9)
