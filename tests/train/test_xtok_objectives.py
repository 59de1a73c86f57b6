"""MultiLevelOT, CDM and DSKD objectives, end to end on the tiny models with different tokenizers.

``multilevel_ot`` and ``cdm`` train through the real trainer (``run_training``). The DSKD variants need the trainer
to build their projector state (``build_objective_state``); until it does, they run one optimizer step here on real
model forwards, with the projectors in their own param group, exactly as the trainer is asked to.

Run: python -m pytest tests/train/test_xtok_objectives.py -q
"""

from __future__ import annotations

import math

import pytest
import torch

import crossdistill.train.xtok_objectives as xo
from crossdistill.config import load_config
from crossdistill.data.dataset import DistillCollator
from crossdistill.train import models
from crossdistill.train.objectives import get_objective
from crossdistill.train.run import batch_loss, prepare, run_training
from crossdistill.train.trainer import ObjectiveRunner


@pytest.mark.parametrize("loss", ["multilevel_ot", "multilevel_ot_official", "cdm"])
def test_logit_objectives_train_through_the_trainer(tmp_path, overrides, loss):
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


def _one_step(tmp_path, overrides, loss, student):
    cfg = load_config(None, overrides(tmp_path / "out", f"loss.name={loss}", student=student))
    p = prepare(cfg, progress=False)
    spec = get_objective(loss)
    student_model = models.load_model(cfg.student, "student")
    teacher = models.freeze_teacher(models.load_model(cfg.teacher, "teacher"))
    params = {**spec.params, **cfg.loss.params}
    state = xo.build_objective_state(loss, student_model, teacher, p.student_tok, p.teacher_tok, params)
    runner = ObjectiveRunner(spec, cfg, teacher, p.student_tok, p.teacher_tok)
    runner.extras["xtok_state"] = state
    collate = DistillCollator(p.student_tok.pad_token_id, p.teacher_tok.pad_token_id if p.separate_teacher else None)
    batch = collate([p.train[i] for i in range(4)])
    opt = torch.optim.AdamW([{"params": [q for q in student_model.parameters() if q.requires_grad], "lr": 5e-3},
                             {"params": state.projector_parameters(), "lr": state.projector_lr}])
    proj_before = [q.detach().clone() for q in state.projector_parameters()]
    student_before = student_model.get_output_embeddings().weight.detach().clone()
    obj = runner.objective(student_model, batch)
    assert torch.isfinite(obj.loss)
    assert set(spec.default_weights) <= set(obj.terms) | {"aligned"}
    opt.zero_grad()
    obj.loss.backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all() for q in state.projector_parameters())
    assert all(q.grad is None for q in teacher.parameters())
    opt.step()
    assert any(not torch.equal(a, b.detach()) for a, b in zip(proj_before, state.projector_parameters()))
    assert not torch.equal(student_before, student_model.get_output_embeddings().weight.detach())
    with torch.no_grad():
        after = runner.objective(student_model, batch).loss
    path = state.save(tmp_path / "out")
    reloaded = xo.XtokState(xo.load_projectors(path), state.projector_lr)
    for (k, a), (_, b) in zip(state.state_dict().items(), reloaded.state_dict().items()):
        assert torch.equal(a.cpu(), b), k
    return obj, after, state


def test_dskd_same_vocab_one_step(tmp_path, overrides):
    obj, after, _ = _one_step(tmp_path, overrides, "dskd", "student_bpe")
    assert after.item() < obj.loss.detach().item()


def test_dskd_cma_one_step_across_tokenizers(tmp_path, overrides):
    obj, after, state = _one_step(tmp_path, overrides, "dskd_cma", "student_unigram")
    assert state.projectors.query is not None
    assert after.item() < obj.loss.detach().item()


def test_dskd_eta_one_step_across_tokenizers(tmp_path, overrides):
    obj, after, state = _one_step(tmp_path, overrides, "dskd_eta", "student_unigram")
    assert float(obj.terms["aligned"]) > 0            # the BPE and Unigram tokenizers share some exact tokens
    assert not state.projectors.s2t.weight.requires_grad  # pinv-initialized and frozen (--init-s2t-projector)
    assert after.item() < obj.loss.detach().item()


def test_dskd_without_state_or_hidden_is_a_clear_error():
    from crossdistill.train.objectives import StepContext

    ctx = StepContext(student_hidden=torch.randn(1, 3, 4), lm_head_weight=torch.randn(7, 4),
                      targets=torch.zeros(1, 3, dtype=torch.long), mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="build_objective_state"):
        xo.dskd_objective(ctx)
    ctx.extras["xtok_state"] = xo.XtokState(xo.DSKDProjectors(4, 5), 1e-3)
    with pytest.raises(ValueError, match="hidden states"):
        xo.dskd_objective(ctx)
