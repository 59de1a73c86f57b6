"""The per-step on-policy decision and the rollout seeds."""

from __future__ import annotations

from crossdistill.train.onpolicy import rollout_seed, step_is_on_policy


def test_on_policy_decision_is_deterministic_and_calibrated():
    draws = [step_is_on_policy(7, s, 0.3) for s in range(4000)]
    assert draws == [step_is_on_policy(7, s, 0.3) for s in range(4000)]
    assert 0.27 < sum(draws) / len(draws) < 0.33
    assert draws != [step_is_on_policy(8, s, 0.3) for s in range(4000)]
    assert not any(step_is_on_policy(0, s, 0.0) for s in range(50))
    assert all(step_is_on_policy(0, s, 1.0) for s in range(50))
    assert rollout_seed(0, 1, 0, 0) != rollout_seed(0, 1, 1, 0) != rollout_seed(0, 2, 0, 0)
