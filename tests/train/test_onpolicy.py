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


def test_on_policy_steps_drop_ce_on_the_students_own_samples(tmp_path, overrides):
    """CE on the student's own samples rewards whatever it sampled: an on-policy step trains the soft terms only,
    unless ``onpolicy.ce_on_samples``; off-policy steps keep CE."""
    import torch

    from crossdistill import models
    from crossdistill.config import load_config
    from crossdistill.data.dataset import DistillCollator
    from crossdistill.methods import get_method
    from crossdistill.train.run import prepare
    from crossdistill.train.trainer import MethodRunner

    def weighted(*extra, on_policy):
        cfg = load_config(None, overrides(tmp_path / "out", "loss.name=uld", *extra, student="student_unigram"))
        p = prepare(cfg, progress=False)
        student, teacher = models.load_model(cfg.student, "student"), models.load_model(cfg.teacher, "teacher")
        runner = MethodRunner(get_method("uld"), cfg, teacher, p.student_tok, p.teacher_tok)
        batch = DistillCollator(p.student_tok.pad_token_id, p.teacher_tok.pad_token_id)([p.train[i] for i in range(3)])
        with torch.no_grad():
            return runner.objective(student, batch, on_policy=on_policy).weighted

    off, on = weighted(on_policy=False), weighted(on_policy=True)
    assert float(off["ce"]) > 0 and float(on["ce"]) == 0.0 and float(on["uld"]) == float(off["uld"]) > 0
    kept = weighted("onpolicy.ce_on_samples=true", on_policy=True)
    assert float(kept["ce"]) == float(off["ce"])
