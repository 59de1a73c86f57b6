"""Chain-rule merging of multi-token groups. Run: python -m pytest tests/align/test_merge.py -q"""

from __future__ import annotations

import pytest
import torch

from crossdistill.align.merge import free_flags, group_log_scale, merge_logprobs, merge_probs


def test_golden_observed_merge():
    # docs/alignment.md §3: P(x0) = (0.6, 0.3, 0.1), P(actual x1) = 0.9 -> (0.54, 0.27, 0.09), sum 0.90
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.05, 0.9, 0.05]], dtype=torch.float64)
    merged = merge_probs(probs, torch.tensor([0, 1]), "observed")
    torch.testing.assert_close(merged, torch.tensor([0.54, 0.27, 0.09], dtype=torch.float64))
    assert abs(float(merged.sum()) - 0.90) < 1e-12


def test_golden_bayesian_merge():
    probs = torch.tensor([[0.6, 0.3, 0.1], [0.05, 0.9, 0.05]], dtype=torch.float64)
    merged = merge_probs(probs, torch.tensor([0, 1]), "bayesian")  # last row free, times p(first actual) = 0.6
    torch.testing.assert_close(merged, torch.tensor([0.03, 0.54, 0.03], dtype=torch.float64))


def test_log_space_matches_probability_space_and_floor():
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(7, 5, dtype=torch.float64), -1)
    logp[3, 2] = -40.0  # below the 1e-8 floor
    targets = torch.tensor([1, 0, 4, 2, 3, 3, 0])
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 6])
    groups = torch.tensor([0, 1, 1, 1, 2, 3, 3])
    for strategy in ("observed", "bayesian"):
        merged = merge_logprobs(logp, targets, rows, groups, 4, strategy).exp()
        for g, members in enumerate([[0], [1, 2, 3], [4], [5, 6]]):
            ref = merge_probs(logp[members].exp(), targets[members], strategy)
            torch.testing.assert_close(merged[g], ref)
    # the floored scalar: group 1 under "observed" multiplies p_3(y_3) = e^-40 -> clamped to 1e-8
    scale = group_log_scale(logp[rows, targets], groups, 4, "observed")
    assert scale[1] >= 2 * torch.log(torch.tensor(1e-8, dtype=torch.float64)) - 1e-9


def test_free_flags_and_bad_strategy():
    g = torch.tensor([0, 0, 1, 2, 2, 2])
    assert free_flags(g, "observed").tolist() == [True, False, True, True, False, False]
    assert free_flags(g, "bayesian").tolist() == [False, True, True, False, False, True]
    with pytest.raises(ValueError, match="observed"):
        free_flags(g, "mean")


def test_merge_gradient_flows_to_every_row():
    z = torch.randn(3, 4, requires_grad=True)
    logp = torch.log_softmax(z, -1)
    out = merge_logprobs(logp, torch.tensor([1, 2, 3]), torch.arange(3), torch.zeros(3, dtype=torch.long), 1)
    out.exp().sum().backward()
    assert (z.grad.abs().sum(-1) > 0).all()
