"""MultiLevelOT, CDM and DSKD methods, end to end on the tiny models with different tokenizers.

All train through the real trainer (``run_training``) for two steps. The DSKD variants also check that the trainer
builds their projectors (the method state), trains them in their own param group, saves ``projectors.safetensors``
next to the student and in every checkpoint, and restores them on resume.

Run: python -m pytest tests/methods/test_xtok_methods.py -q
"""

from __future__ import annotations

import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

import crossdistill.methods.dskd as md
from crossdistill import models
from crossdistill.config import load_config
from crossdistill.data.dataset import DistillCollator
from crossdistill.losses.dskd import DSKDProjectors, load_projectors
from crossdistill.methods import StepContext, get_method
from crossdistill.testing.faults import Crash, CrashAt
from crossdistill.train.run import batch_loss, last_complete_checkpoint, prepare, run_training
from crossdistill.train.trainer import STATE_GROUP, MethodRunner, build_method_state


@pytest.mark.parametrize("loss", ["multilevel_ot", "multilevel_ot_official", "cdm"])
def test_logit_methods_train_through_the_trainer(tmp_path, overrides, loss):
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


class GroupProbe(TrainerCallback):
    """Records, after every optimizer step, each param group's (name, lr, initial_lr, parameter shapes)."""

    def __init__(self):
        self.steps = []

    def on_step_end(self, args, state, control, optimizer=None, **kwargs):
        self.steps.append([(g.get("name"), g["lr"], g.get("initial_lr"), [tuple(q.shape) for q in g["params"]])
                           for g in optimizer.param_groups])


def _fresh_state(cfg, p, loss):
    """The projector state exactly as the trainer builds it at step 0 (seeded init; pinv init for ETA)."""
    student = models.load_model(cfg.student, "student")
    teacher = models.freeze_teacher(models.load_model(cfg.teacher, "teacher"))
    return build_method_state(get_method(loss), cfg, student, teacher, p.student_tok, p.teacher_tok), student, teacher


def _train_dskd(tmp_path, overrides, loss, student):
    """Two optimizer steps of ``loss`` through ``run_training``; checks shared by the three DSKD variants."""
    from transformers import AutoModelForCausalLM

    out = tmp_path / "run" / "out"
    cfg = load_config(None, overrides(out, f"loss.name={loss}", "train.max_steps=2", "data.eval_fraction=0",
                                      student=student))
    p = prepare(cfg, progress=False)
    state0, student0, teacher = _fresh_state(cfg, p, loss)
    fixed = [0, 1, 2, 3]
    before = batch_loss(p, student0, teacher, fixed)
    probe = GroupProbe()
    record = run_training(cfg, prepared=p, callbacks=[probe])
    assert record["steps"] == 2

    # the projectors trained in their own param group, with their own lr, scheduled like the student's groups
    assert len(probe.steps) == 2
    shapes = [tuple(q.shape) for q in state0.parameters()]
    for groups in probe.steps:
        proj = [g for g in groups if g[0] == STATE_GROUP]
        assert len(proj) == 1 and proj[0][3] == shapes
        assert proj[0][2] == pytest.approx(state0.lr) != cfg.train.learning_rate
        student_groups = [g for g in groups if g[0] != STATE_GROUP]
        assert student_groups and all(g[2] == pytest.approx(cfg.train.learning_rate) for g in student_groups)
        for g in student_groups:  # one schedule for all groups: same lr / initial_lr
            assert g[1] / g[2] == pytest.approx(proj[0][1] / proj[0][2])

    # projectors.safetensors next to the student (not in its weights), reloads, and differs from the step-0 init
    path = out / md.PROJECTOR_FILE
    assert path.is_file()
    trained = load_projectors(path).state_dict()
    init = state0.projectors.state_dict()
    assert trained.keys() == init.keys()
    changed = [k for k in init if not torch.equal(init[k].cpu(), trained[k])]
    frozen = {n for n, q in state0.projectors.named_parameters() if not q.requires_grad}
    assert changed and set(changed) == set(init) - frozen, (changed, frozen)
    assert not any(k.startswith(("t2s", "s2t", "query")) for k in load_file(str(out / "model.safetensors")))

    # the student reloads with AutoModelForCausalLM and the method's loss (with the trained projectors) went down
    after = batch_loss(p, AutoModelForCausalLM.from_pretrained(out), teacher, fixed, state_from=out)
    assert math.isfinite(before) and after < before, (before, after)
    return state0, trained


def test_dskd_same_vocab_trains_through_the_trainer(tmp_path, overrides):
    _train_dskd(tmp_path, overrides, "dskd", "student_bpe")


def test_dskd_cma_trains_through_the_trainer_across_tokenizers(tmp_path, overrides):
    state0, trained = _train_dskd(tmp_path, overrides, "dskd_cma", "student_unigram")
    assert state0.projectors.query is not None and "query.weight" in trained


def test_dskd_eta_trains_through_the_trainer_across_tokenizers(tmp_path, overrides):
    state0, trained = _train_dskd(tmp_path, overrides, "dskd_eta", "student_unigram")
    assert not state0.projectors.s2t.weight.requires_grad  # pinv-initialized and frozen (--init-s2t-projector)
    torch.testing.assert_close(trained["s2t.weight"], state0.projectors.state_dict()["s2t.weight"].cpu(),
                               atol=0, rtol=0)


def test_dskd_eta_step_has_aligned_tokens(tmp_path, overrides):
    """The BPE and Unigram tokenizers share some exact tokens, so ETA has rows to train on."""
    cfg = load_config(None, overrides(tmp_path / "out", "loss.name=dskd_eta", student="student_unigram"))
    p = prepare(cfg, progress=False)
    state, student, teacher = _fresh_state(cfg, p, "dskd_eta")
    runner = MethodRunner(get_method("dskd_eta"), cfg, teacher, p.student_tok, p.teacher_tok, state=state)
    collate = DistillCollator(p.student_tok.pad_token_id, p.teacher_tok.pad_token_id)
    obj = runner.objective(student, collate([p.train[i] for i in range(4)]))
    assert float(obj.terms["aligned"]) > 0 and torch.isfinite(obj.loss)


def test_dskd_kill_and_resume_restores_projectors(tmp_path, overrides):
    """A DSKD run killed after checkpoint-1 and resumed ends with the uninterrupted run's projectors and student;
    every checkpoint holds projectors.safetensors; resuming from a checkpoint without it is a clear error."""
    common = ["loss.name=dskd", "train.max_steps=2", "train.save_steps=1", "train.per_device_batch_size=2",
              "data.eval_fraction=0"]
    full = load_config(None, overrides(tmp_path / "full" / "out", *common))
    run_training(full)
    cut = load_config(None, overrides(tmp_path / "cut" / "out", *common))
    with pytest.raises(Crash):
        run_training(cut, callbacks=[CrashAt(2)])
    ckpt = tmp_path / "cut" / "out" / "checkpoint-1"
    assert last_complete_checkpoint(cut.train.output_dir) == str(ckpt)
    saved = ckpt / md.PROJECTOR_FILE
    assert saved.is_file()

    saved.rename(ckpt / "moved")
    with pytest.raises(FileNotFoundError, match="projectors.safetensors"):
        run_training(cut, resume=True)
    (ckpt / "moved").rename(saved)
    run_training(cut, resume=True)

    a = load_file(str(tmp_path / "full" / "out" / md.PROJECTOR_FILE))
    b = load_file(str(tmp_path / "cut" / "out" / md.PROJECTOR_FILE))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    wa = load_file(str(tmp_path / "full" / "out" / "model.safetensors"))
    wb = load_file(str(tmp_path / "cut" / "out" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=0, msg=k)
    # the state's own load restores exactly what the checkpoint holds
    expected = load_projectors(saved)
    fresh = md.ProjectorState(DSKDProjectors(expected.student_dim, expected.teacher_dim), 1e-3)
    fresh.load(ckpt)
    for k, v in expected.state_dict().items():
        assert torch.equal(v, fresh.projectors.state_dict()[k]), k


def test_dskd_without_state_or_hidden_is_a_clear_error():
    ctx = StepContext(student_hidden=torch.randn(1, 3, 4), lm_head_weight=torch.randn(7, 4),
                      targets=torch.zeros(1, 3, dtype=torch.long), mask=torch.ones(1, 3, dtype=torch.bool))
    method = get_method("dskd")
    with pytest.raises(ValueError, match="projector state"):
        method(ctx)
    with pytest.raises(ValueError, match="hidden states"):
        method(ctx, state=md.ProjectorState(DSKDProjectors(4, 5), 1e-3))


@pytest.mark.multiprocess
def test_dskd_two_processes_match_one(tmp_path, overrides):
    """DDP over gloo: the projectors are not a DDP submodule, so the trainer all-reduces their gradients before
    clipping. Without that, steps 2 and 3 of two processes would differ from one process on the same global batch."""
    import json
    import os
    import subprocess
    import sys

    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    if not os.path.exists(launcher):
        pytest.skip("accelerate CLI not installed")
    common = ["loss.name=dskd", "train.max_steps=3", "data.eval_fraction=0"]
    run_training(load_config(None, overrides(tmp_path / "one" / "out", *common, "train.per_device_batch_size=4")))
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  seed: 0\n")
    cmd = [launcher, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "-m", "crossdistill", "train", str(recipe),
           *overrides(tmp_path / "two" / "out", *common, "train.per_device_batch_size=2"), "student.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    def steps(out):
        history = json.load(open(out / "trainer_state.json"))["log_history"]
        return [(h["loss_off_policy"], h["loss_t2s_ce"], h["loss_s2t_kd"], h["grad_norm"]) for h in history
                if "loss_off_policy" in h]

    one, two = steps(tmp_path / "one" / "out"), steps(tmp_path / "two" / "out")
    assert len(one) == len(two) == 3
    for a, b in zip(one, two):
        assert a == pytest.approx(b, abs=1e-5)
    p1 = load_file(str(tmp_path / "one" / "out" / md.PROJECTOR_FILE))
    p2 = load_file(str(tmp_path / "two" / "out" / md.PROJECTOR_FILE))
    for k in p1:
        torch.testing.assert_close(p1[k], p2[k], atol=1e-5, rtol=0, msg=k)
