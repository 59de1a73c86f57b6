"""Sparse top-k teacher: policies, k = V equals dense, temperature of stored log-probs, fused path.

Run: python -m pytest tests/losses/test_sparse.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

from crossdistill.losses import DIVERGENCES, TeacherSignal, divergence
from crossdistill.losses.chunked import ChunkedLossConfig, distill_loss_from_logits, fused_distill_loss
from crossdistill.losses.sparse import signal_divergence, sparse_divergence, student_tail_logmass

PARAMS = {
    "forward_kl": {},
    "reverse_kl": {},
    "generalized_jsd": {"beta": 0.4},
    "skew_kl": {"alpha": 0.1},
    "skew_reverse_kl": {"alpha": 0.1},
    "tvd": {},
    "adaptive_kl": {"alpha": 0.5},
}
FINITE_UNDER_RENORMALIZE = ["forward_kl", "generalized_jsd", "skew_kl", "skew_reverse_kl", "tvd"]
D = torch.float64


def _kl(a, b):
    return torch.where(a > 0, a * (a.log() - b.log()), torch.zeros((), dtype=a.dtype)).sum(-1)


def naive_probs(name, q, p, params):
    """Reference per-position divergence on probability vectors [N, K] (p teacher, q student)."""
    if name == "forward_kl":
        return _kl(p, q)
    if name == "reverse_kl":
        return _kl(q, p)
    if name == "generalized_jsd":
        b = params["beta"]
        m = b * p + (1 - b) * q
        return b * _kl(p, m) + (1 - b) * _kl(q, m)
    if name == "skew_kl":
        return _kl(p, params["alpha"] * p + (1 - params["alpha"]) * q)
    if name == "skew_reverse_kl":
        return _kl(q, (1 - params["alpha"]) * p + params["alpha"] * q)
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "adaptive_kl":  # values only (weights are constants in the gradient anyway)
        return divergence(name, q.log(), p.log(), **params)
    raise KeyError(name)


def rand_logits(n=6, v=17, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return scale * torch.randn(n, v, generator=g, dtype=D)


@pytest.mark.parametrize("policy", ["renormalize", "tail_bucket"])
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_k_equal_v_equals_dense(name, policy):
    s_logits, t_logits = rand_logits(seed=1), rand_logits(seed=2)
    s1 = s_logits.clone().requires_grad_()
    signal = TeacherSignal.top_k(t_logits, k=17, policy=policy)
    got = signal_divergence(name, s1.log_softmax(-1), signal, **PARAMS[name])
    got.sum().backward()
    s2 = s_logits.clone().requires_grad_()
    ref = divergence(name, s2.log_softmax(-1), t_logits.log_softmax(-1), **PARAMS[name])
    ref.sum().backward()
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(s1.grad, s2.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", FINITE_UNDER_RENORMALIZE)
def test_renormalize_matches_truncated_teacher_against_full_student(name):
    s_logits, t_logits = rand_logits(seed=3), rand_logits(seed=4)
    k = 5
    p = t_logits.softmax(-1)
    top, ids = p.topk(k, -1)
    p_trunc = torch.zeros_like(p).scatter(-1, ids, top / top.sum(-1, keepdim=True))  # zero outside the kept ids
    s1 = s_logits.clone().requires_grad_()
    ref = naive_probs(name, s1.softmax(-1), p_trunc, PARAMS[name])
    ref.sum().backward()
    s2 = s_logits.clone().requires_grad_()
    got = signal_divergence(name, s2.log_softmax(-1), TeacherSignal.top_k(t_logits, k, "renormalize"), **PARAMS[name])
    got.sum().backward()
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(s2.grad, s1.grad, atol=1e-10, rtol=0)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_tail_bucket_matches_k_plus_one_way_distributions(name):
    s_logits, t_logits = rand_logits(seed=5), rand_logits(seed=6)
    k = 4
    p = t_logits.softmax(-1)
    top, ids = p.topk(k, -1)
    p_b = torch.cat([top, 1 - top.sum(-1, keepdim=True)], -1)
    s1 = s_logits.clone().requires_grad_()
    q = s1.softmax(-1)
    q_k = q.gather(-1, ids)
    q_b = torch.cat([q_k, 1 - q_k.sum(-1, keepdim=True)], -1)
    ref = naive_probs(name, q_b, p_b, PARAMS[name])
    s2 = s_logits.clone().requires_grad_()
    got = signal_divergence(name, s2.log_softmax(-1), TeacherSignal.top_k(t_logits, k, "tail_bucket"), **PARAMS[name])
    torch.testing.assert_close(got, ref.detach(), atol=1e-10, rtol=0)
    if name != "adaptive_kl":
        ref.sum().backward()
        got.sum().backward()
        torch.testing.assert_close(s2.grad, s1.grad, atol=1e-10, rtol=0)


def test_renormalize_k1_forward_kl_is_ce_on_teacher_top_token():
    s_logits, t_logits = rand_logits(seed=7), rand_logits(seed=8)
    got = signal_divergence("fkl", s_logits.log_softmax(-1), TeacherSignal.top_k(t_logits, 1))
    ref = torch.nn.functional.cross_entropy(s_logits, t_logits.argmax(-1), reduction="none")
    torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    ("name", "params"), [("rkl", {}), ("akl", {}), ("jsd", {"beta": 1.0}), ("srkl", {"alpha": 0.0})]
)
def test_renormalize_refuses_infinite_divergences(name, params):
    signal = TeacherSignal.top_k(rand_logits(), 3, "renormalize")
    with pytest.raises(ValueError, match="use policy='tail_bucket'"):
        signal_divergence(name, rand_logits(seed=9).log_softmax(-1), signal, **params)


def test_student_tail_is_exact_and_stable():
    s_logp = rand_logits(seed=10, scale=8.0).log_softmax(-1)
    ids = s_logp.topk(16, -1).indices  # keep almost everything: 1 - sum would cancel catastrophically
    tail = student_tail_logmass(s_logp, ids)
    kept = torch.zeros_like(s_logp, dtype=torch.bool).scatter(-1, ids, True)
    ref = torch.logsumexp(s_logp.masked_fill(kept, -math.inf), -1)
    torch.testing.assert_close(tail, ref, atol=1e-12, rtol=0)
    full = student_tail_logmass(s_logp, torch.arange(17).expand(6, 17))
    assert torch.all(full.exp() == 0)


def test_top_k_tail_logmass_and_sparse_constructor_agree():
    t_logits = rand_logits(seed=11)
    a = TeacherSignal.top_k(t_logits, 5)
    b = TeacherSignal.sparse(a.ids, a.logprobs)
    torch.testing.assert_close(a.tail_logmass, b.tail_logmass, atol=1e-12, rtol=0)
    torch.testing.assert_close(a.tail_logmass.exp(), 1 - a.logprobs.exp().sum(-1), atol=1e-12, rtol=0)


def test_temperature_on_stored_logprobs():
    t_logits = rand_logits(seed=12)
    temp = 2.5
    stored = TeacherSignal.top_k(t_logits, 5)  # stored at temperature 1
    kept, tail = stored.tempered_sparse(temp, vocab_size=17)
    exact = TeacherSignal.top_k(t_logits, 5, temperature=temp)
    # Kept ids' relative probabilities are exact under any temperature (renormalize is exact).
    torch.testing.assert_close(
        kept - kept.logsumexp(-1, keepdim=True),
        exact.logprobs - exact.logprobs.logsumexp(-1, keepdim=True),
        atol=1e-10,
        rtol=0,
    )
    torch.testing.assert_close(torch.logaddexp(kept.logsumexp(-1), tail), torch.zeros(6, dtype=D), atol=1e-10, rtol=0)
    # Tail: exact when the dropped logits really are equal (the even-spread assumption holds).
    flat = t_logits.clone()
    order = flat.argsort(-1, descending=True)
    flat.scatter_(-1, order[:, 5:], -3.0)
    kept, tail = TeacherSignal.top_k(flat, 5).tempered_sparse(temp, vocab_size=17)
    ref = TeacherSignal.top_k(flat, 5, temperature=temp)
    torch.testing.assert_close(kept, ref.logprobs, atol=1e-10, rtol=0)
    torch.testing.assert_close(tail, ref.tail_logmass, atol=1e-10, rtol=0)


@pytest.mark.parametrize("policy", ["renormalize", "tail_bucket"])
def test_fused_path_with_sparse_signal_matches_logits_path(policy):
    g = torch.Generator().manual_seed(14)
    n, h, v = 3 * 47, 31, 123
    hidden, weight = torch.randn(n, h, generator=g, dtype=D), 0.3 * torch.randn(v, h, generator=g, dtype=D)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[torch.rand(n, generator=g) < 0.3] = -100
    mask = targets != -100
    cfg = ChunkedLossConfig(divergence="jsd", divergence_params={"beta": 0.5}, temperature=2.0, chunk_size=16)
    full = TeacherSignal.top_k(2 * torch.randn(n, v, generator=g, dtype=D), 8, policy)
    for signal in (full, full.select(mask)):  # one row per position, or one per target position
        h1 = hidden.clone().requires_grad_()
        out = fused_distill_loss(h1, weight, targets, signal, cfg)
        out.sums["kd"].backward()
        h2 = hidden.clone().requires_grad_()
        z = (h2 @ weight.T)[mask]
        kept, tail = full.select(mask).tempered_sparse(2.0, v)
        ref = sparse_divergence("jsd", (z / 2.0).log_softmax(-1), full.ids[mask], kept, tail, policy, beta=0.5).sum()
        ref.backward()
        torch.testing.assert_close(out.sums["kd"], ref, atol=1e-10, rtol=0)
        torch.testing.assert_close(h1.grad, h2.grad, atol=1e-5, rtol=0)
        plain = distill_loss_from_logits(hidden @ weight.T, targets, signal, cfg)
        torch.testing.assert_close(plain.sums["kd"], ref, atol=1e-10, rtol=0)


def test_signal_validation_names_the_field():
    with pytest.raises(ValueError, match="policy='drop'"):
        TeacherSignal.top_k(rand_logits(), 3, policy="drop")
    with pytest.raises(ValueError, match="either logits"):
        TeacherSignal(logits=rand_logits(), ids=torch.zeros(6, 1, dtype=torch.long))
    with pytest.raises(ValueError, match="ids must be int64"):
        TeacherSignal(ids=torch.zeros(6, 2, dtype=torch.int32), logprobs=torch.zeros(6, 2), tail_logmass=torch.zeros(6))
    with pytest.raises(ValueError, match="tail_logmass must be"):
        TeacherSignal(ids=torch.zeros(6, 2, dtype=torch.long), logprobs=torch.zeros(6, 2), tail_logmass=torch.zeros(5))
    with pytest.raises(ValueError, match="outside the student vocabulary"):
        signal_divergence("fkl", rand_logits(v=4).log_softmax(-1), TeacherSignal.top_k(rand_logits(), 3))


def test_registry_is_covered():
    assert set(PARAMS) == set(DIVERGENCES)
