"""End-to-end: every training mode trains the tiny models a few steps, saves a student that AutoModelForCausalLM
reloads, lowers the training objective on a fixed batch, and appends one complete run record."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM

from crossdistill import models
from crossdistill.config import load_config
from crossdistill.methods import METHODS
from crossdistill.train.run import batch_loss, prepare, run_training

RECORD_FIELDS = ("student_non_embedding_params", "student_tokens", "teacher_loss", "student_loss", "student_bpb",
                 "teacher_bpb", "method", "seed", "config")


def train_and_check(cfg, fixed=(0, 1, 2, 3)):
    p = prepare(cfg, progress=False)
    before_student = models.load_model(cfg.student, "student")
    teacher = models.freeze_teacher(models.load_model(cfg.teacher, "teacher")) if cfg.teacher else None
    before = batch_loss(p, before_student, teacher, list(fixed))
    record = run_training(cfg, prepared=p)
    after_student = AutoModelForCausalLM.from_pretrained(cfg.train.output_dir)
    after = batch_loss(p, after_student, teacher, list(fixed))
    assert after < before, f"{cfg.mode}/{cfg.loss.name}: fixed-batch loss {before} -> {after}"
    runs = [json.loads(line) for line in open(cfg.train.output_dir.rsplit("/", 1)[0] + "/runs.jsonl")]
    assert len(runs) == 1
    for f in RECORD_FIELDS:
        assert f in runs[0], f
    assert runs[0]["student_tokens"] > 0 and runs[0]["student_non_embedding_params"] > 0
    assert (cfg.teacher is None) == (runs[0]["teacher_loss"] is None)
    return record, before, after


def test_sft(tmp_path, overrides):
    cfg = load_config(None, overrides(tmp_path / "run" / "out", teacher=None))
    record, _, _ = train_and_check(cfg)
    assert record["mode"] == "sft" and record["student_bpb"] > 0
    # the resolved config is written next to the outputs and loads back to the same config
    again = load_config(tmp_path / "run" / "out" / "resolved_config.yaml")
    assert again.to_dict() == cfg.to_dict()


def test_soft_same_vocab(tmp_path, overrides):
    cfg = load_config(None, overrides(tmp_path / "run" / "out", "loss.name=forward_kl", "loss.temperature=2.0"))
    record, _, _ = train_and_check(cfg)
    assert record["mode"] == "soft"
    history = json.load(open(tmp_path / "run" / "out" / "trainer_state.json"))["log_history"]
    assert {"loss_kd", "loss_ce", "loss_off_policy"} <= set(history[0])


def test_hard_label_from_generated(tmp_path, overrides):
    from crossdistill.generation import main as generate_main

    gen_dir = tmp_path / "gen"
    recipe = tmp_path / "gen.yaml"
    recipe.write_text("generate:\n  max_new_tokens: 6\n  temperature: 0.0\n")
    rc = generate_main([str(recipe), *overrides(tmp_path / "unused"), f"generate.output={gen_dir}",
                        "data.max_examples=12"])
    assert rc == 0
    rows = [json.loads(x) for x in open(gen_dir / "examples.jsonl")]
    assert len(rows) == 12 and all("prompt" in r and "completion" in r for r in rows)
    manifest = json.load(open(gen_dir / "manifest.json"))
    assert manifest["kind"] == "dataset" and manifest["temperatures"] == {"sampling": 0.0}
    # completions of a greedy teacher are not all empty strings
    rows = [r for r in rows if r["completion"]]
    assert rows
    cfg = load_config(None, overrides(tmp_path / "run" / "out", teacher=None) + [f"data.train={gen_dir}",
                                                                                "data.eval_fraction=0"])
    record, _, _ = train_and_check(cfg, fixed=(0, 1))
    assert record["mode"] == "hard_label"


@pytest.mark.parametrize("lmbda", [1.0, 0.5])
def test_on_policy(tmp_path, overrides, lmbda):
    cfg = load_config(None, overrides(tmp_path / "run" / "out", "loss.name=jsd", f"onpolicy.lmbda={lmbda}",
                                      "onpolicy.max_new_tokens=6", "train.max_steps=4"))
    record, _, _ = train_and_check(cfg)
    history = json.load(open(tmp_path / "run" / "out" / "trainer_state.json"))["log_history"]
    steps = [h for h in history if "on_policy_fraction" in h]
    on = [h["on_policy_fraction"] for h in steps]
    if lmbda == 1.0:
        assert on == [1.0] * 4 and all("loss_on_policy" in h for h in steps)
    else:  # seed 0 gives a mixture in 4 steps (deterministic: the decision is a function of seed and step)
        assert 0 < sum(on) < 4
    # on-policy steps count the generated tokens (at most max_new_tokens per example), not the dataset's
    seen = [0] + [h["target_tokens"] for h in steps]
    for h, a, b in zip(steps, seen, seen[1:]):
        if h["on_policy_fraction"] == 1.0:
            assert 0 < b - a <= 4 * 6
    assert record["student_tokens"] == seen[-1]


def test_seq_kd(tmp_path, overrides):
    cfg = load_config(None, overrides(tmp_path / "run" / "out", "onpolicy.seq_kd=true", "onpolicy.max_new_tokens=6",
                                      "onpolicy.temperature=0.7"))
    record, _, _ = train_and_check(cfg)
    assert record["mode"] == "seq_kd" and record["student_tokens"] <= 3 * 4 * 6


@pytest.mark.parametrize("loss", ["uld", "gold_hybrid"])
def test_cross_tokenizer(tmp_path, overrides, loss):
    if loss not in METHODS:
        pytest.skip(f"objective {loss!r} is not registered yet (alignment engineer)")
    cfg = load_config(None, overrides(tmp_path / "run" / "out", f"loss.name={loss}", student="student_unigram"))
    record, _, _ = train_and_check(cfg)
    assert record["teacher_bpb"] is not None


def test_lora_saves_merged_student(tmp_path, overrides):
    cfg = load_config(None, overrides(tmp_path / "run" / "out", "student.lora.enabled=true", "student.lora.r=4",
                                      "train.learning_rate=5e-2", teacher=None))
    train_and_check(cfg)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "out")
    assert not any("lora" in n for n, _ in reloaded.named_parameters())
    assert all(torch.isfinite(p).all() for p in reloaded.parameters())
