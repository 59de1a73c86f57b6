"""The per-step on-policy decision and the rollout seeds."""

from __future__ import annotations

import pytest

from crossdistill.train.onpolicy import rollout_seed, step_is_on_policy


def test_on_policy_decision_is_deterministic_and_calibrated():
    draws = [step_is_on_policy(7, s, 0.3) for s in range(4000)]
    assert draws == [step_is_on_policy(7, s, 0.3) for s in range(4000)]
    assert 0.27 < sum(draws) / len(draws) < 0.33
    assert draws != [step_is_on_policy(8, s, 0.3) for s in range(4000)]
    assert not any(step_is_on_policy(0, s, 0.0) for s in range(50))
    assert all(step_is_on_policy(0, s, 1.0) for s in range(50))
    assert rollout_seed(0, 1, 0, 0) != rollout_seed(0, 1, 1, 0) != rollout_seed(0, 2, 0, 0)


def _objective(tmp_path, overrides, loss, *extra, on_policy):
    """One micro-batch's objective of ``loss`` on the unigram student (a cross-tokenizer pair), no grad."""
    import torch

    from crossdistill import models
    from crossdistill.config import load_config
    from crossdistill.data.dataset import DistillCollator
    from crossdistill.methods import get_method
    from crossdistill.train.run import prepare
    from crossdistill.train.trainer import MethodRunner, build_method_state

    cfg = load_config(None, overrides(tmp_path / "out", f"loss.name={loss}", *extra, student="student_unigram"))
    p = prepare(cfg, progress=False)
    student, teacher = models.load_model(cfg.student, "student"), models.load_model(cfg.teacher, "teacher")
    method = get_method(loss)
    state = build_method_state(method, cfg, student, teacher, p.student_tok, p.teacher_tok)
    runner = MethodRunner(method, cfg, teacher, p.student_tok, p.teacher_tok, state=state)
    batch = DistillCollator(p.student_tok.pad_token_id, p.teacher_tok.pad_token_id)([p.train[i] for i in range(3)])
    with torch.no_grad():
        return runner.objective(student, batch, on_policy=on_policy)


def test_on_policy_steps_drop_what_only_rewards_the_students_own_samples(tmp_path, overrides):
    """CE on the student's own samples rewards whatever it sampled, and so does ULD's sorted L1 (no token identity:
    it sharpens the student's own top tokens): an on-policy step gives both weight 0 unless
    ``onpolicy.ce_on_samples``; off-policy steps keep them."""
    off = _objective(tmp_path, overrides, "uld", on_policy=False).weighted
    on = _objective(tmp_path, overrides, "uld", on_policy=True).weighted
    assert float(off["ce"]) > 0 and float(off["uld"]) > 0
    assert float(on["ce"]) == 0.0 and float(on["uld"]) == 0.0
    kept = _objective(tmp_path, overrides, "uld", "onpolicy.ce_on_samples=true", on_policy=True).weighted
    assert float(kept["ce"]) == float(off["ce"]) and float(kept["uld"]) == float(off["uld"])


def test_gold_hybrid_keeps_only_its_matched_half_on_samples(tmp_path, overrides):
    """GOLD's ``gold`` term is w_m * matched + w_u * unmatched on data; on the student's own samples the unmatched
    sorted L1 is left out (its diagnostic is still reported), while DSKD's t2s_ce (the projector's CE on the
    sampled token) gets weight 0."""
    params = "loss.params={matched_weight: 1.0, unmatched_weight: 2.0, beta: 0.0}"
    off = _objective(tmp_path, overrides, "gold_hybrid", params, on_policy=False).terms
    on = _objective(tmp_path, overrides, "gold_hybrid", params, on_policy=True).terms
    assert float(off["gold_unmatched"]) > 0 and float(on["gold_unmatched"]) == float(off["gold_unmatched"])
    assert float(off["gold"]) == pytest.approx(float(off["gold_matched"]) + 2 * float(off["gold_unmatched"]), rel=1e-5)
    assert float(on["gold"]) == pytest.approx(float(on["gold_matched"]), rel=1e-5)
    dskd = _objective(tmp_path, overrides, "dskd_cma", on_policy=True).weighted
    assert float(dskd["t2s_ce"]) == 0.0 and float(dskd["s2t_kd"]) > 0


@pytest.mark.parametrize("loss", ["uld", "multilevel_ot", "multilevel_ot_official"])
def test_a_method_with_nothing_left_on_samples_warns(overrides, tmp_path, loss):
    """Methods whose every soft term is a sample term, on-policy without ce_on_samples: every on-policy step would
    train nothing; the config says so (and a method with an identity term left does not warn)."""
    from crossdistill.config import load_config

    with pytest.warns(UserWarning, match="every on-policy step trains nothing"):
        load_config(None, overrides(tmp_path / "o", f"loss.name={loss}", "onpolicy.lmbda=0.5",
                                    "onpolicy.max_new_tokens=4", student="student_unigram"))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_config(None, overrides(tmp_path / "o", "loss.name=gold_hybrid", "onpolicy.lmbda=0.5",
                                    "onpolicy.max_new_tokens=4", student="student_unigram"))
