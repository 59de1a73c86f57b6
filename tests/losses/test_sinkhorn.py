"""Log-domain batched Sinkhorn vs a plain-domain loop and POT. Run: python -m pytest tests/losses/test_sinkhorn.py -q"""

from __future__ import annotations

import numpy as np
import ot
import pytest
import torch

from crossdistill.losses.sinkhorn import log_sinkhorn_plan, sinkhorn_distance


def naive_plan(cost: torch.Tensor, a: torch.Tensor, b: torch.Tensor, eps: float, iters: int) -> torch.Tensor:
    """Plain-domain Sinkhorn for ONE example: K = exp(-C/eps), rows scaled to a, then columns to b."""
    plan = torch.exp(-cost / eps)
    for _ in range(iters):
        plan = plan * (a / plan.sum(1))[:, None]
        plan = plan * (b / plan.sum(0))[None, :]
    return plan


def test_marginals_after_configured_iterations():
    # The configured MultiLevelOT setting, ε = 0.1, N = 20, on random costs in [0, 1] and on L1 costs between
    # random probability vectors, probability marginals. (Costs spanning ~2 on very unbalanced shapes need more
    # rounds: docs/cross_tokenizer_methods.md gives the measured row error.)
    torch.manual_seed(0)
    for n, m in [(37, 41), (64, 64), (5, 90), (1, 7), (120, 150)]:
        a = torch.rand(4, n) + 0.5
        a = a / a.sum(1, keepdim=True)
        b = torch.full((4, m), 1.0 / m)
        for cost in (torch.rand(4, n, m), torch.cdist(torch.randn(4, n, 50).softmax(-1),
                                                         torch.randn(4, m, 50).softmax(-1), p=1)):
            plan = log_sinkhorn_plan(cost, a, b, epsilon=0.1, n_iters=20)
            assert (plan.sum(2) - a).abs().max() < 1e-4
            assert (plan.sum(1) - b).abs().max() < 1e-4


@pytest.mark.filterwarnings("ignore:Sinkhorn did not converge")  # POT's own stop test at 1e-9; it ran 1e5 rounds
@pytest.mark.parametrize("n,m,scale,iters", [(12, 12, 1.0, 20), (7, 19, 1.0, 20), (7, 19, 2.0, 300)])
def test_distance_matches_pot_sinkhorn2(n, m, scale, iters):
    # Configured N = 20 on costs in [0, 1]; costs in [0, 2] with uneven marginals need more rounds to converge.
    torch.manual_seed(n + m)
    cost = torch.rand(2, n, m) * scale
    a = torch.rand(2, n) + 0.1
    a = a / a.sum(1, keepdim=True)
    b = torch.rand(2, m) + 0.1
    b = b / b.sum(1, keepdim=True)
    ours = sinkhorn_distance(cost, a, b, epsilon=0.1, n_iters=iters)
    for i in range(2):
        ref = ot.sinkhorn2(a[i].double().numpy(), b[i].double().numpy(), cost[i].double().numpy(), 0.1,
                           numItermax=20_000, stopThr=1e-8)
        assert abs(float(ours[i]) - float(ref)) < 1e-4
        plan_ref = ot.sinkhorn(a[i].double().numpy(), b[i].double().numpy(), cost[i].double().numpy(), 0.1,
                               numItermax=20_000, stopThr=1e-8)
        plan = log_sinkhorn_plan(cost[i:i + 1], a[i:i + 1], b[i:i + 1], epsilon=0.1, n_iters=iters)[0]
        np.testing.assert_allclose(plan.double().numpy(), plan_ref, atol=1e-4)


def test_masked_batch_equals_per_example_value_and_gradient():
    torch.manual_seed(1)
    lens = [(5, 8), (9, 3), (1, 1)]
    costs = [torch.rand(n, m, requires_grad=True) for n, m in lens]
    padded = torch.zeros(3, 9, 8)
    row_mask = torch.zeros(3, 9, dtype=torch.bool)
    col_mask = torch.zeros(3, 8, dtype=torch.bool)
    for i, ((n, m), c) in enumerate(zip(lens, costs)):
        padded = padded.index_put((torch.tensor(i),), torch.nn.functional.pad(c, (0, 8 - m, 0, 9 - n)))
        row_mask[i, :n] = True
        col_mask[i, :m] = True
    # Garbage in padded cells must not matter.
    padded = padded + 100.0 * (~(row_mask[:, :, None] & col_mask[:, None, :])).float()
    a = row_mask.float() * 2.0
    ours = sinkhorn_distance(padded, a * 0 + row_mask.float(), col_mask.float(), epsilon=0.3, n_iters=15,
                             row_mask=row_mask, col_mask=col_mask)
    ours.sum().backward()
    g_ours = [c.grad.clone() for c in costs]
    for c in costs:
        c.grad = None
    for i, ((n, m), c) in enumerate(zip(lens, costs)):
        ref = (naive_plan(c, torch.ones(n), torch.ones(m), 0.3, 15) * c).sum()
        ref.backward()
        assert torch.allclose(ours[i], ref, atol=1e-5, rtol=1e-5)
        assert torch.allclose(g_ours[i], c.grad, atol=1e-5, rtol=1e-4)


def test_empty_example_is_zero_and_finite_gradient():
    cost = torch.rand(2, 4, 4, requires_grad=True)
    row_mask = torch.tensor([[True] * 4, [False] * 4])
    col_mask = torch.tensor([[True] * 4, [False] * 4])
    d = sinkhorn_distance(cost, row_mask=row_mask, col_mask=col_mask)
    assert d[1] == 0
    d.sum().backward()
    assert torch.isfinite(cost.grad).all()
    assert (cost.grad[1] == 0).all()


def test_small_epsilon_is_stable_in_fp32():
    cost = torch.rand(1, 16, 16) * 10
    plan = log_sinkhorn_plan(cost, epsilon=1e-3, n_iters=50)
    assert torch.isfinite(plan).all()
    assert (plan.sum(1) - 1).abs().max() < 1e-4


def test_envelope_gradient_holds_plan_constant():
    cost = torch.rand(1, 6, 6, requires_grad=True)
    sinkhorn_distance(cost, grad="envelope").sum().backward()
    plan = log_sinkhorn_plan(cost.detach())
    assert torch.allclose(cost.grad, plan, atol=1e-6)


def test_bad_input_errors():
    with pytest.raises(ValueError, match="epsilon"):
        log_sinkhorn_plan(torch.rand(1, 2, 2), epsilon=0.0)
    with pytest.raises(ValueError, match=r"\[B, n, m\]"):
        log_sinkhorn_plan(torch.rand(2, 2))
    with pytest.raises(ValueError, match="marginal a"):
        log_sinkhorn_plan(torch.rand(1, 2, 3), torch.ones(1, 3))
