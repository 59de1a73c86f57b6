"""Objective: weights, T², global-count normalization (docs/losses.md §2).

Run: python -m pytest tests/losses/test_objective.py -q
"""

from __future__ import annotations

import pytest
import torch

from crossdistill.losses import combine_terms, normalize

# The toy example of docs/losses.md §2: per-token KL of two sequences, 3 and 2 valid targets, L_max = 4.
KL = torch.tensor([[0.2, 0.4, 0.6, 0.9], [0.1, 0.3, 0.7, 0.8]], dtype=torch.float64)
MASK = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)


def test_toy_example_correct_normalization_is_per_valid_token_mean():
    kd_sum = (KL * MASK).sum()
    out = combine_terms({"kd": kd_sum}, {"kd": 1.0}, num_targets=int(MASK.sum()))
    assert abs(float(out.loss) - 0.32) < 1e-12


def test_toy_example_wrong_normalizations_differ():
    # The batchmean / max_length pattern gives other numbers; this pins down why the objective does not use it.
    b, l_max = KL.shape
    assert abs(float((KL * MASK).sum() / b / l_max) - 0.20) < 1e-12
    assert abs(float(KL.sum() / b / l_max) - 0.50) < 1e-12
    assert abs(float((KL * MASK).sum() / b) - 0.80) < 1e-12


def test_micro_batches_with_global_count_equal_whole_batch():
    # Sum of per-micro-batch objectives with the GLOBAL count == the whole batch's objective.
    g = torch.Generator().manual_seed(1)
    per_tok_kd = torch.rand(8, 5, generator=g, dtype=torch.float64)
    per_tok_ce = torch.rand(8, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(8, 5, generator=g) > 0.4
    count = int(mask.sum())
    w = {"ce": 0.3, "kd": 0.7}
    whole = combine_terms({"ce": (per_tok_ce * mask).sum(), "kd": (per_tok_kd * mask).sum()}, w, count, temperature=2.0)
    parts = [
        combine_terms(
            {
                "ce": (per_tok_ce[i : i + 2] * mask[i : i + 2]).sum(),
                "kd": (per_tok_kd[i : i + 2] * mask[i : i + 2]).sum(),
            },
            w,
            count,
            temperature=2.0,
        )
        for i in range(0, 8, 2)
    ]
    assert abs(float(sum(p.loss for p in parts)) - float(whole.loss)) < 1e-12


def test_t2_scaling_applies_to_soft_terms_only_and_is_switchable():
    sums = {"ce": torch.tensor(2.0), "kd": torch.tensor(3.0)}
    on = combine_terms(sums, {"ce": 1.0, "kd": 1.0}, 4, temperature=2.0)
    assert float(on.terms["ce"]) == pytest.approx(0.5)
    assert float(on.terms["kd"]) == pytest.approx(3.0)  # 3 * 4 / 4
    off = combine_terms(sums, {"ce": 1.0, "kd": 1.0}, 4, temperature=2.0, scale_soft_by_t2=False)
    assert float(off.terms["kd"]) == pytest.approx(0.75)
    explicit = combine_terms(sums, {"ce": 1.0, "kd": 1.0}, 4, temperature=2.0, soft_terms=["ce", "kd"])
    assert float(explicit.terms["ce"]) == pytest.approx(2.0)


def test_each_term_reported_and_weighted():
    sums = {"ce": torch.tensor(2.0, requires_grad=True), "kd": torch.tensor(6.0, requires_grad=True)}
    out = combine_terms(sums, {"ce": 0.25, "kd": 0.75}, 2)
    assert out.metrics() == pytest.approx({"ce": 1.0, "kd": 3.0, "loss": 0.25 + 2.25})
    assert float(out.weighted["kd"]) == pytest.approx(2.25)
    out.loss.backward()
    assert float(sums["kd"].grad) == pytest.approx(0.375)


def test_all_masked_step_gives_zero_not_nan():
    out = combine_terms({"ce": torch.tensor(0.0), "kd": torch.tensor(0.0)}, {"ce": 1, "kd": 1}, num_targets=0)
    assert float(out.loss) == 0.0
    assert float(normalize(torch.tensor(0.0), torch.tensor(0))) == 0.0


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match=r"no weight given for term\(s\) \['kd'\]"):
        combine_terms({"kd": torch.tensor(1.0)}, {"ce": 1.0}, 1)
    with pytest.raises(ValueError, match="soft_terms"):
        combine_terms({"kd": torch.tensor(1.0)}, {"kd": 1.0}, 1, soft_terms=["uld"])
