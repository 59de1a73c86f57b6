"""ULD, positional and aligned, against naive references. Run: python -m pytest tests/losses/test_uld.py -q"""

from __future__ import annotations

import pytest
import torch

from crossdistill.align.merge import merge_probs
from crossdistill.align.spans import BatchAlignment
from crossdistill.data.render import collate_rendered, render
from crossdistill.losses.signal import TeacherSignal
from crossdistill.losses.uld import sorted_l1_full, uld_from_alignment, uld_positional
from crossdistill.positions import shift_targets

F64 = torch.float64


def naive_sorted_l1(p, q):
    v = max(p.numel(), q.numel())
    ps = torch.cat([p.sort(descending=True).values, p.new_zeros(v - p.numel())])
    qs = torch.cat([q.sort(descending=True).values, q.new_zeros(v - q.numel())])
    return (ps - qs).abs().sum()


def naive_official_uld(zs, zt, ls, lt, skip_s=True, skip_t=False):
    """Literal port of the official DistillationLoss.forward steps, per sample."""
    losses = []
    for b in range(zs.shape[0]):
        def span(lab, skip):
            valid = (lab != -100).nonzero()
            start = int(valid[0]) if len(valid) else lab.numel()
            size = len(valid) - (1 if skip else 0)
            return start, max(size, 0)
        s0, ns = span(ls[b], skip_s)
        t0, nt = span(lt[b], skip_t)
        size = min(ns, nt)
        if size == 0:
            continue
        ps = torch.softmax(zs[b, s0:s0 + size], -1)
        pt = torch.softmax(zt[b, t0:t0 + size], -1)
        losses.append(torch.stack([naive_sorted_l1(ps[i], pt[i]) for i in range(size)]).mean())
    return torch.stack(losses).mean()


def naive_aligned(zs, zt, ys, yt, al, strategy):
    ps, pt = torch.softmax(zs, -1), torch.softmax(zt, -1)
    total = zs.new_zeros(())
    for g in range(al.num_groups):
        rs = al.student_rows[al.student_groups == g]
        rt = al.teacher_rows[al.teacher_groups == g]
        total = total + naive_sorted_l1(merge_probs(ps[rs], ys[rs], strategy), merge_probs(pt[rt], yt[rt], strategy))
    return total


def random_alignment(n_s, n_t, g, seed):
    """Random monotone groups: g groups over n_s student rows and n_t teacher rows (each group non-empty)."""
    gen = torch.Generator().manual_seed(seed)

    def cuts(n):
        c = torch.randperm(n - 1, generator=gen)[: g - 1].sort().values + 1
        sizes = torch.diff(torch.cat([torch.tensor([0]), c, torch.tensor([n])]))
        return torch.repeat_interleave(torch.arange(g), sizes)

    sg, tg = cuts(n_s), cuts(n_t)
    return BatchAlignment(torch.arange(n_s), sg, torch.arange(n_t), tg, g, torch.zeros(g, dtype=torch.long))


def test_golden_sorted_l1():
    s = torch.tensor([[0.5, 0.3, 0.2]])
    t = torch.tensor([[0.1, 0.6, 0.25, 0.05]])
    torch.testing.assert_close(sorted_l1_full(s, t), torch.tensor([0.30]))
    # through the loss: logits = log-probs, one single-token group
    al = BatchAlignment(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 1,
                        torch.tensor([0]))
    out = uld_from_alignment(s.log(), t.log(), al, top_k=None)
    assert abs(float(out.loss) - 0.30) < 1e-6
    assert abs(float(uld_from_alignment(s.log(), t.log(), al, top_k=3).loss) - 0.30) < 1e-6


@pytest.mark.parametrize("skip", [(True, False), (False, False), (True, True)])
def test_positional_matches_official_steps(skip):
    torch.manual_seed(0)
    B, Ts, Tt, Vs, Vt = 3, 11, 9, 23, 31
    zs = torch.randn(B, Ts, Vs, dtype=F64, requires_grad=True)
    zt = torch.randn(B, Tt, Vt, dtype=F64)
    ls = torch.full((B, Ts), -100)
    lt = torch.full((B, Tt), -100)
    ls[0, 4:] = 1; ls[1, 2:6] = 2; ls[2, 9:] = 3  # noqa: E702
    lt[0, 3:] = 1; lt[1, 1:8] = 2; lt[2, 8:] = 3  # noqa: E702
    ref = naive_official_uld(zs, zt, ls, lt, *skip)
    out = uld_positional(zs, zt, ls, lt, skip_student_eos=skip[0], skip_teacher_eos=skip[1], reduction="official")
    torch.testing.assert_close(out.loss, ref, atol=1e-10, rtol=1e-10)
    (g1,) = torch.autograd.grad(out.loss, zs)
    (g2,) = torch.autograd.grad(ref, zs)
    torch.testing.assert_close(g1, g2)


@pytest.mark.parametrize("strategy", ["observed", "bayesian"])
def test_aligned_matches_naive_value_and_grad(strategy):
    torch.manual_seed(1)
    n_s, n_t, Vs, Vt, G = 13, 17, 19, 29, 7
    zs = torch.randn(n_s, Vs, dtype=F64, requires_grad=True)
    zt = torch.randn(n_t, Vt, dtype=F64)
    ys, yt = torch.randint(0, Vs, (n_s,)), torch.randint(0, Vt, (n_t,))
    al = random_alignment(n_s, n_t, G, seed=3)
    out = uld_from_alignment(zs, zt, al, ys, yt, top_k=None, merge=strategy, chunk_groups=3)
    ref = naive_aligned(zs, zt, ys, yt, al, strategy)
    torch.testing.assert_close(out.loss, ref)
    g1, = torch.autograd.grad(out.loss, zs)
    g2, = torch.autograd.grad(ref, zs)
    torch.testing.assert_close(g1, g2)
    # top-k with k >= V is exact
    torch.testing.assert_close(uld_from_alignment(zs, zt, al, ys, yt, top_k=Vt, merge=strategy).loss, ref)


def test_identical_tokenizers_aligned_equals_positional(tokenizers):
    tok = tokenizers["unigram"]
    texts = ["The answer is 42.", "日本語 🚀 e\u0301 done", "x"]
    items = [render(tok, [{"role": "user", "content": f"q{i}"}], t) for i, t in enumerate(texts)]
    batch = collate_rendered(items, tok.pad_token_id)
    targets, mask = shift_targets(batch["labels"])
    B, T = batch["input_ids"].shape
    V = len(tok)
    torch.manual_seed(2)
    zs = torch.randn(B, T, V, dtype=F64, requires_grad=True)
    zt = torch.randn(B, T, V, dtype=F64) * 3
    al = BatchAlignment.from_collated(batch, batch, mask, mask)
    assert al.identity
    for top_k in (None, 16):
        aligned = uld_from_alignment(zs[mask], zt[mask], al, targets[mask], targets[mask], top_k=top_k)
        positional = uld_positional(zs, zt, batch["labels"], batch["labels"], skip_student_eos=False,
                                    skip_teacher_eos=False, rows="shifted", top_k=top_k)
        assert aligned.num_groups == positional.num_groups == int(mask.sum())
        assert abs(float(aligned.loss) - float(positional.loss)) < 1e-6


def _dists(kind, n, V, gen):
    z = torch.randn(n, V, generator=gen, dtype=F64)
    if kind == "peaked":
        z = z * 4 + torch.linspace(8, 0, V, dtype=F64)[torch.randperm(V, generator=gen)]
    return z


@pytest.mark.parametrize("kind", ["random", "peaked"])
@pytest.mark.parametrize("k", [1, 8, 64])
def test_topk_within_documented_bound(kind, k):
    gen = torch.Generator().manual_seed(5)
    n_s, n_t, Vs, Vt = 40, 50, 300, 500
    zs, zt = _dists(kind, n_s, Vs, gen), _dists(kind, n_t, Vt, gen)
    ys, yt = torch.randint(0, Vs, (n_s,), generator=gen), torch.randint(0, Vt, (n_t,), generator=gen)
    al = random_alignment(n_s, n_t, 30, seed=7)
    full = uld_from_alignment(zs, zt, al, ys, yt, top_k=None).per_group
    top = uld_from_alignment(zs, zt, al, ys, yt, top_k=k)
    # W1_k <= W1_full <= W1_k + 2 min(S_k, T_k) <= W1_k + S_k + T_k
    assert torch.all(top.per_group <= full + 1e-9)
    assert torch.all(full <= top.per_group + top.bound + 1e-9)
    if k == 64 and kind == "peaked":
        assert float((full - top.per_group).abs().max()) < 0.05


def test_gradient_to_student_only():
    torch.manual_seed(3)
    zs = torch.randn(6, 10, requires_grad=True)
    zt = torch.randn(8, 12, requires_grad=True)
    al = random_alignment(6, 8, 4, seed=0)
    ys, yt = torch.randint(0, 10, (6,)), torch.randint(0, 12, (8,))
    for top_k in (None, 4):
        zs.grad = None
        out = uld_from_alignment(zs, zt, al, ys, yt, top_k=top_k)
        out.loss.backward()
        assert zs.grad is not None and zs.grad.abs().sum() > 0
        assert zt.grad is None
    pos = uld_positional(zs[None], zt[None], torch.zeros(1, 6, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))
    pos.loss.backward()
    assert zt.grad is None


def test_sparse_signal_matches_dense():
    torch.manual_seed(4)
    n_s, n_t, Vs, Vt = 9, 11, 40, 60
    zs = torch.randn(n_s, Vs, dtype=F64)
    zt = torch.randn(n_t, Vt, dtype=F64) * 2
    ys, yt = torch.randint(0, Vs, (n_s,)), torch.randint(0, Vt, (n_t,))
    al = random_alignment(n_s, n_t, 5, seed=1)
    # full-width signal: identical to dense, multi-token merging included
    sig = TeacherSignal.top_k(zt, Vt, policy="tail_bucket")
    dense = uld_from_alignment(zs, zt, al, ys, yt, top_k=None).loss
    torch.testing.assert_close(uld_from_alignment(zs, sig, al, ys, yt, top_k=None).loss.double(), dense, atol=1e-5,
                               rtol=1e-5)
    # top-k signal with single-token groups: same as the dense top-k path (same tail mass)
    ident = BatchAlignment(torch.arange(n_s), torch.arange(n_s), torch.arange(n_s), torch.arange(n_s), n_s,
                           torch.zeros(n_s, dtype=torch.long))
    sig8 = TeacherSignal.top_k(zt, 8, policy="tail_bucket")
    torch.testing.assert_close(uld_from_alignment(zs, sig8, ident, top_k=8).loss.double(),
                               uld_from_alignment(zs, zt, ident, top_k=8).loss, atol=1e-5, rtol=1e-5)
    # renormalize: the teacher tail is 0 and the kept entries sum to 1
    ren = uld_from_alignment(zs, TeacherSignal.top_k(zt, 8), ident, top_k=8)
    assert torch.isfinite(ren.loss)


def test_exact_target_logprobs_make_sparse_merges_equal_dense_top_k():
    """Multi-token groups with a top-k signal: with the exact log-prob of each actual teacher token (what a cache
    stores), the sparse path equals the dense top-k path even when those tokens fall outside the top k; without it,
    it does not (the lookup falls back to a bound). Under "renormalize" the exact values are not used."""
    from dataclasses import replace

    torch.manual_seed(5)
    n_s, n_t, Vs, Vt, k = 9, 11, 40, 60, 8
    zs = torch.randn(n_s, Vs, dtype=F64)
    zt = torch.randn(n_t, Vt, dtype=F64) * 2
    ys = torch.randint(0, Vs, (n_s,))
    sig = TeacherSignal.top_k(zt, k, policy="tail_bucket")
    yt = torch.stack([torch.tensor([i for i in range(Vt) if i not in sig.ids[r]][r % 3]) for r in range(n_t)])
    al = random_alignment(n_s, n_t, 5, seed=1)  # multi-token groups on both sides
    exact = zt.log_softmax(-1).gather(-1, yt[:, None]).squeeze(-1)
    dense = uld_from_alignment(zs, zt, al, ys, yt, top_k=k).loss
    with_exact = uld_from_alignment(zs, replace(sig, target_logprobs=exact), al, ys, yt, top_k=k).loss
    torch.testing.assert_close(with_exact.double(), dense, atol=1e-6, rtol=1e-6)
    assert abs(float(uld_from_alignment(zs, sig, al, ys, yt, top_k=k).loss) - float(dense)) > 1e-3
    ren = TeacherSignal.top_k(zt, k)
    torch.testing.assert_close(uld_from_alignment(zs, replace(ren, target_logprobs=exact), al, ys, yt, top_k=k).loss,
                               uld_from_alignment(zs, ren, al, ys, yt, top_k=k).loss)
    with pytest.raises(ValueError, match="target_logprobs must be"):
        replace(sig, target_logprobs=exact[:3])


def test_empty_alignment_and_bf16():
    zs = torch.randn(4, 10, requires_grad=True)
    empty = BatchAlignment(*(torch.zeros(0, dtype=torch.long),) * 4, 0, torch.zeros(0, dtype=torch.long))
    out = uld_from_alignment(zs, torch.randn(4, 12), empty)
    assert float(out.loss) == 0.0
    out.loss.backward()
    assert torch.all(zs.grad == 0)
    torch.manual_seed(0)
    z32 = torch.randn(5, 64)
    t32 = torch.randn(5, 80)
    al = random_alignment(5, 5, 5, seed=0)
    a = uld_from_alignment(z32, t32, al, top_k=None).loss
    b = uld_from_alignment(z32.bfloat16(), t32.bfloat16(), al, top_k=None).loss
    torch.testing.assert_close(a, b.float(), atol=5e-2, rtol=5e-2)


def test_errors():
    zs = torch.randn(4, 10)
    al = random_alignment(4, 4, 2, seed=0)
    with pytest.raises(ValueError, match="targets"):
        uld_from_alignment(zs, torch.randn(4, 12), al)
    with pytest.raises(ValueError, match="top_k"):
        uld_from_alignment(zs, torch.randn(4, 12), al, top_k=0)
    with pytest.raises(ValueError, match="merge strategy"):
        uld_from_alignment(zs, torch.randn(4, 12), al, merge="avg")


@pytest.mark.parametrize("strategy", ["observed", "bayesian"])
def test_topk_fast_path_value_and_grad_match_autograd_reference(strategy):
    """The fused top-k path (custom backward) against plain autograd on materialized merged rows."""
    from crossdistill.align.merge import merge_logprobs
    from crossdistill.losses.uld import sorted_l1_topk

    torch.manual_seed(6)
    n_s, n_t, Vs, Vt, G, k, T = 15, 12, 37, 41, 8, 5, 2.0
    zs = torch.randn(n_s, Vs, dtype=F64, requires_grad=True)
    zt = torch.randn(n_t, Vt, dtype=F64)
    ys, yt = torch.randint(0, Vs, (n_s,)), torch.randint(0, Vt, (n_t,))
    al = random_alignment(n_s, n_t, G, seed=4)
    out = uld_from_alignment(zs, zt, al, ys, yt, top_k=k, merge=strategy, student_temperature=T,
                             teacher_temperature=T, chunk_groups=4)

    def side(z, y, rows, groups):
        merged = merge_logprobs(torch.log_softmax(z / T, -1), y, rows, groups, G, strategy).exp()
        top = merged.topk(k, -1).values
        return top, merged.sum(-1) - top.sum(-1)

    s_top, s_tail = side(zs, ys, al.student_rows, al.student_groups)
    t_top, t_tail = side(zt, yt, al.teacher_rows, al.teacher_groups)
    ref, _ = sorted_l1_topk(s_top, s_tail, t_top, t_tail)
    torch.testing.assert_close(out.loss, ref.sum())
    g1, = torch.autograd.grad(out.loss, zs)
    g2, = torch.autograd.grad(ref.sum(), zs)
    torch.testing.assert_close(g1, g2)


# ---------------------------------------------------------------------------------------- fast paths vs naive ones
@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_numpy_sort_desc_equals_torch_sort_values_and_grad(dtype):
    """sort_desc (numpy on the CPU) gives torch.sort's values exactly, with and without a gradient, and the same
    gradient (no ties here: a weighted sum of the sorted values sends each weight to its own entry)."""
    from crossdistill.losses.uld import sort_desc

    torch.manual_seed(11)
    x = torch.softmax(torch.randn(7, 301, dtype=dtype) * 3, -1)
    ref = x.sort(dim=-1, descending=True).values
    assert torch.equal(sort_desc(x), ref)  # values-only path (no grad)
    xg = x.clone().requires_grad_()
    got = sort_desc(xg)
    assert torch.equal(got, ref)
    w = torch.randn_like(ref)
    (g1,) = torch.autograd.grad((got * w).sum(), xg)
    xr = x.clone().requires_grad_()
    (g2,) = torch.autograd.grad((xr.sort(dim=-1, descending=True).values * w).sum(), xr)
    assert torch.equal(g1, g2)
    if dtype == F64:
        assert torch.autograd.gradcheck(sort_desc, (torch.randn(3, 9, dtype=F64, requires_grad=True),))


def test_numpy_sort_desc_ties_and_fallbacks():
    """Ties (zeros, repeated values) sort to the same values; bf16 and 0-width inputs take torch.sort."""
    from crossdistill.losses.uld import sort_desc

    x = torch.tensor([[0.0, 0.5, 0.0, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    assert torch.equal(sort_desc(x), x.sort(dim=-1, descending=True).values)
    xg = x.clone().requires_grad_()
    sort_desc(xg).sum().backward()  # every value gets weight 1 whatever the order of ties
    assert torch.equal(xg.grad, torch.ones_like(x))
    b = x.bfloat16()
    assert torch.equal(sort_desc(b), b.sort(dim=-1, descending=True).values)
    e = torch.zeros(3, 0)
    assert sort_desc(e).shape == (3, 0)


def test_take_rows_is_a_view_for_consecutive_rows_and_a_gather_otherwise():
    from crossdistill.losses.uld import row_chunk, take_rows

    x = torch.randn(10, 4)
    for rows in ([2, 3, 4], [5], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 3, 4], [4, 3, 2], [2, 2, 3], []):
        r = torch.tensor(rows, dtype=torch.long)
        got = take_rows(x, r)
        assert torch.equal(got, x[r])
        consecutive = len(rows) > 0 and rows == list(range(rows[0], rows[0] + len(rows)))
        assert (got.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()) == consecutive
    assert row_chunk(512, 262_144) == 64 and row_chunk(512, 49_152) == 341 and row_chunk(8, 10) == 8
    assert row_chunk(512, 10 ** 9) == 1


@pytest.mark.parametrize("top_k", [None, 4])
def test_row_chunking_changes_nothing(monkeypatch, top_k):
    """Chunks of rows bounded by ROW_CHUNK_ELEMENTS (1 row at a time here) give the same value and gradient as one
    pass, on gathered (non-consecutive) and consecutive rows."""
    import crossdistill.losses.uld as uld_mod

    torch.manual_seed(3)
    n_s, n_t, Vs, Vt, G = 14, 11, 23, 29, 6
    zs = torch.randn(n_s + 3, Vs, dtype=F64, requires_grad=True)
    zt = torch.randn(n_t, Vt, dtype=F64)
    ys, yt = torch.randint(0, Vs, (n_s + 3,)), torch.randint(0, Vt, (n_t,))
    base = random_alignment(n_s, n_t, G, seed=2)
    rows_s = torch.tensor(sorted(torch.randperm(n_s + 3)[:n_s].tolist()))  # student rows with gaps: a gather
    al = BatchAlignment(rows_s, base.student_groups, base.teacher_rows, base.teacher_groups, G, base.group_example)

    def run():
        out = uld_from_alignment(zs, zt, al, ys, yt, top_k=top_k, merge="observed")
        return out.loss, torch.autograd.grad(out.loss, zs)[0]

    v1, g1 = run()
    monkeypatch.setattr(uld_mod, "ROW_CHUNK_ELEMENTS", 1)
    v2, g2 = run()
    torch.testing.assert_close(v1, v2, rtol=1e-12, atol=0)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-15)
