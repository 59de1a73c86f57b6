"""X-Token (P-KL, H-KL) and ALM, end to end on the tiny models with different tokenizers, and from a sparse teacher.

Each trains through the real trainer (``run_training``) for two steps; the loss of a fixed batch goes down.

Run: python -m pytest tests/methods/test_xtoken_alm_methods.py -q
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from crossdistill import models
from crossdistill.config import load_config
from crossdistill.data.dataset import DistillCollator
from crossdistill.losses.signal import TeacherSignal
from crossdistill.methods import get_method
from crossdistill.train.run import batch_loss, prepare, run_training
from crossdistill.train.trainer import MethodRunner, build_method_state

NEW = ["xtoken_pkl", "xtoken_hkl", "alm"]


@pytest.mark.parametrize("loss", NEW)
def test_new_methods_train_through_the_trainer(tmp_path, overrides, loss, monkeypatch):
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, overrides(tmp_path / "run" / "out", f"loss.name={loss}", "train.max_steps=2",
                                      student="student_unigram"))
    p = prepare(cfg, progress=False)
    teacher = models.freeze_teacher(models.load_model(cfg.teacher, "teacher"))
    before = batch_loss(p, models.load_model(cfg.student, "student"), teacher, [0, 1, 2, 3])
    record = run_training(cfg, prepared=p)
    from transformers import AutoModelForCausalLM

    after = batch_loss(p, AutoModelForCausalLM.from_pretrained(cfg.train.output_dir), teacher, [0, 1, 2, 3])
    assert math.isfinite(before) and after < before
    assert record["steps"] == 2


@pytest.mark.parametrize("loss", NEW)
def test_new_methods_train_on_policy(tmp_path, overrides, loss, monkeypatch):
    """λ = 1: every step trains on the student's own samples, re-rendered and re-aligned for the teacher."""
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, overrides(tmp_path / "out", f"loss.name={loss}", "train.max_steps=2",
                                      "onpolicy.lmbda=1.0", "onpolicy.max_new_tokens=8", "data.eval_fraction=0",
                                      "train.logging_steps=1", student="student_unigram"))
    record = run_training(cfg)
    assert record["steps"] == 2
    history = json.loads((tmp_path / "out" / "trainer_state.json").read_text())["log_history"]
    on = [h["loss_on_policy"] for h in history if "loss_on_policy" in h]
    assert len(on) == 2 and all(math.isfinite(v) for v in on), history


@pytest.mark.parametrize("loss", NEW)
def test_new_methods_read_a_sparse_teacher(tmp_path, overrides, loss, monkeypatch):
    """The same batch from the online teacher's logits and from its top-k signal (k = V, tail empty, exact
    target log-probs): the same terms."""
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None, overrides(tmp_path / "out", f"loss.name={loss}", student="student_unigram"))
    p = prepare(cfg, progress=False)
    student = models.load_model(cfg.student, "student")
    teacher = models.freeze_teacher(models.load_model(cfg.teacher, "teacher"))
    method = get_method(loss)
    state = build_method_state(method, cfg, student, teacher, p.student_tok, p.teacher_tok)
    runner = MethodRunner(method, cfg, teacher, p.student_tok, p.teacher_tok, state=state)
    collate = DistillCollator(p.student_tok.pad_token_id, p.teacher_tok.pad_token_id)
    batch = collate([p.train[i] for i in range(4)])
    ctx = runner.context(student, batch)
    dense = method.loss(ctx, runner.params, state)
    z = ctx.teacher_target_logits  # [M, V_t]: the teacher's logits at its target rows
    signal = TeacherSignal.top_k(z, z.shape[-1], policy="tail_bucket")
    logp = torch.log_softmax(z, -1)
    signal = TeacherSignal(ids=signal.ids, logprobs=signal.logprobs, tail_logmass=signal.tail_logmass,
                           policy="tail_bucket",
                           target_logprobs=logp.gather(-1, ctx.teacher_targets[ctx.teacher_mask][:, None])[:, 0])
    ctx2 = runner.context(student, batch)
    ctx2.teacher_target_logits, ctx2.teacher_signal = None, signal
    sparse = method.loss(ctx2, runner.params, state)
    for name, value in dense.terms.items():
        assert float(sparse.terms[name].detach()) == pytest.approx(float(value.detach()), rel=1e-4, abs=1e-4), name
    assert float(dense.terms[method.soft_terms[0] if method.soft_terms else "alm"].detach()) > 0
