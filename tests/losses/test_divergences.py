"""Divergences against hand-computed golden numbers and naive float64 references.

Run: python -m pytest tests/losses/test_divergences.py -q
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossdistill.losses import DIVERGENCES, divergence, divergence_from_logits
from crossdistill.losses.divergences import resolve

P = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)  # teacher
Q = torch.tensor([0.3, 0.4, 0.3], dtype=torch.float64)  # student

GOLDEN = [
    ("forward_kl", {}, 0.219722),
    ("reverse_kl", {}, 0.236712),
    ("generalized_jsd", {"beta": 0.1}, 0.019712),
    ("generalized_jsd", {"beta": 0.5}, 0.055231),
    ("generalized_jsd", {"beta": 0.9}, 0.020865),
    ("generalized_jsd", {"beta": 0.0}, 0.219722),
    ("generalized_jsd", {"beta": 1.0}, 0.236712),
    ("skew_kl", {"alpha": 0.1}, 0.177031),
    ("skew_reverse_kl", {"alpha": 0.1}, 0.184288),
    ("adaptive_kl", {"alpha": 0.5}, 0.228217),
    ("tvd", {}, 0.30),
]


@pytest.mark.parametrize(("name", "params", "expected"), GOLDEN)
def test_golden_values(name, params, expected):
    got = divergence(name, Q.log(), P.log(), **params)
    assert abs(float(got) - expected) < 1e-6


def test_jsd_limits_and_endpoint_jump():
    # JSD/β -> FKL and JSD/(1-β) -> RKL (docs/losses.md §1), but the endpoints are the exact KLs: a jump in scale.
    assert abs(float(divergence("jsd", Q.log(), P.log(), beta=0.1)) / 0.1 - 0.197118) < 1e-6
    assert abs(float(divergence("jsd", Q.log(), P.log(), beta=0.9)) / 0.1 - 0.208650) < 1e-6
    tiny = float(divergence("jsd", Q.log(), P.log(), beta=1e-6))
    assert tiny < 1e-5 < float(divergence("jsd", Q.log(), P.log(), beta=0.0))


@pytest.mark.parametrize(
    ("temperature", "kl", "t2kl"), [(1, 0.417024, 0.417024), (2, 0.098897, 0.395587), (4, 0.023095, 0.369524)]
)
def test_temperature_table(temperature, kl, t2kl):
    t = torch.tensor([2.0, 1.0, 0.1], dtype=torch.float64)
    s = torch.tensor([0.5, 1.5, -0.3], dtype=torch.float64)
    got = float(divergence_from_logits("forward_kl", s, t, temperature=temperature))
    assert abs(got - kl) < 1e-6
    assert abs(got * temperature**2 - t2kl) < 1e-6


# ---- naive references: plain numpy, one position at a time ----------------------------------------------------


def _np_kl(a, b):
    return float(sum(x * (math.log(x) - math.log(y)) for x, y in zip(a, b, strict=True) if x > 0))


def naive(name, q, p, **params):
    """Reference per-position value from probability vectors (float64 numpy)."""
    if name == "forward_kl":
        return _np_kl(p, q)
    if name == "reverse_kl":
        return _np_kl(q, p)
    if name == "generalized_jsd":
        b = params["beta"]
        if b == 0:
            return _np_kl(p, q)
        if b == 1:
            return _np_kl(q, p)
        m = b * p + (1 - b) * q
        return b * _np_kl(p, m) + (1 - b) * _np_kl(q, m)
    if name == "skew_kl":
        a = params["alpha"]
        return _np_kl(p, a * p + (1 - a) * q)
    if name == "skew_reverse_kl":
        a = params["alpha"]
        return _np_kl(q, (1 - a) * p + a * q)
    if name == "tvd":
        return 0.5 * float(np.abs(p - q).sum())
    if name == "adaptive_kl":
        order = np.argsort(p, kind="stable")
        ps, qs = p[order], q[order]
        gap = np.abs(ps - qs)
        tail = np.cumsum(ps) <= params["alpha"]
        gh, gt = gap[~tail].sum(), gap[tail].sum()
        return (gh * _np_kl(p, q) + gt * _np_kl(q, p)) / (gh + gt)
    raise KeyError(name)


PARAMS = {
    "forward_kl": {},
    "reverse_kl": {},
    "generalized_jsd": {"beta": 0.3},
    "skew_kl": {"alpha": 0.2},
    "skew_reverse_kl": {"alpha": 0.2},
    "tvd": {},
    "adaptive_kl": {"alpha": 0.5},
}


def test_registry_covers_every_divergence():
    assert set(DIVERGENCES) == set(PARAMS)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_matches_naive_on_random_batches(name):
    g = torch.Generator().manual_seed(0)
    s = torch.randn(2, 3, 11, generator=g, dtype=torch.float64).log_softmax(-1)
    t = (2 * torch.randn(2, 3, 11, generator=g, dtype=torch.float64)).log_softmax(-1)
    got = divergence(name, s, t, **PARAMS[name])
    assert got.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            ref = naive(name, s[i, j].exp().numpy(), t[i, j].exp().numpy(), **PARAMS[name])
            assert abs(float(got[i, j]) - ref) < 1e-10


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_identical_distributions_give_zero_and_finite_grad(name):
    logp = torch.randn(4, 7, dtype=torch.float64).log_softmax(-1)
    s = logp.clone().requires_grad_()
    out = divergence(name, s, logp, **PARAMS[name])
    assert torch.allclose(out, torch.zeros(4, dtype=torch.float64), atol=1e-12)
    out.sum().backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", ["forward_kl", "generalized_jsd", "skew_kl", "skew_reverse_kl", "tvd"])
def test_teacher_zeros_give_no_nan(name):
    # A teacher with exact zeros (-inf log-probs), as after renormalizing a truncated distribution.
    t = torch.tensor([[0.7, 0.3, 0.0, 0.0]], dtype=torch.float64).log()
    s = torch.randn(1, 4, dtype=torch.float64).log_softmax(-1).requires_grad_()
    out = divergence(name, s, t, **PARAMS[name])
    ref = naive(name, s.detach()[0].exp().numpy(), t[0].exp().numpy(), **PARAMS[name])
    assert abs(float(out.detach()) - ref) < 1e-10
    out.sum().backward()
    assert torch.isfinite(s.grad).all()


@pytest.mark.parametrize("name", ["skew_kl", "skew_reverse_kl"])
def test_skew_mixture_is_not_detached(name):
    # Gradient must match finite differences of the full formula (detaching the mixture would change it).
    s0 = torch.randn(5, dtype=torch.float64)
    t = torch.randn(5, dtype=torch.float64).log_softmax(-1)
    s = s0.clone().requires_grad_()
    divergence(name, s.log_softmax(-1), t, alpha=0.3).backward()
    f = lambda z: float(divergence(name, z.log_softmax(-1), t, alpha=0.3))  # noqa: E731
    eps = 1e-6
    fd = torch.tensor(
        [(f(s0 + eps * e) - f(s0 - eps * e)) / (2 * eps) for e in torch.eye(5, dtype=torch.float64)],
        dtype=torch.float64,
    )
    assert torch.allclose(s.grad, fd, atol=1e-7)


def test_adaptive_kl_gap_weights_are_detached():
    # With detached weights, the gradient is w_head * dFKL + w_tail * dRKL at fixed weights.
    s0 = torch.randn(6, dtype=torch.float64)
    t = torch.randn(6, dtype=torch.float64).log_softmax(-1)
    s = s0.clone().requires_grad_()
    divergence("akl", s.log_softmax(-1), t).backward()
    p, q = t.exp().numpy(), s0.softmax(-1).numpy()
    order = np.argsort(p)
    tail = np.cumsum(p[order]) <= 0.5
    gap = np.abs(p[order] - q[order])
    wh = gap[~tail].sum() / gap.sum()
    s2 = s0.clone().requires_grad_()
    logq = s2.log_softmax(-1)
    (wh * divergence("fkl", logq, t) + (1 - wh) * divergence("rkl", logq, t)).backward()
    assert torch.allclose(s.grad, s2.grad, atol=1e-12)


def test_bad_names_and_params_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="unknown divergence 'kld'"):
        resolve("kld")
    with pytest.raises(ValueError, match="does not take parameter"):
        divergence("forward_kl", Q.log(), P.log(), beta=0.5)
    with pytest.raises(ValueError, match=r"beta=1.5 is outside \[0, 1\]"):
        divergence("jsd", Q.log(), P.log(), beta=1.5)
    with pytest.raises(ValueError, match="differ in shape"):
        divergence("fkl", Q.log(), torch.tensor([0.5, 0.5]).log())
    with pytest.raises(ValueError, match="temperature"):
        divergence_from_logits("fkl", Q, P, temperature=0)
