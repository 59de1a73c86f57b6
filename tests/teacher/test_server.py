"""A teacher served by a REAL vLLM server (the session's ``vllm_server`` fixture, tests/teacher/conftest.py):

* its scores equal the in-process teacher's top-k (ids, log-probs, tail, the actual token's log-prob);
* a student with ANOTHER tokenizer trains from it off-policy and on-policy (``uld``, ``gold_hybrid``), and a
  same-vocabulary one too (``forward_kl``), with first-step losses equal to the in-process teacher restricted to the
  same top-k;
* ``crossdistill cache`` from it writes the in-process cache's contents, and resumes;
* killing the server mid-run stops training with a clear error, and ``--resume`` after a restart ends with weights
  identical to an uninterrupted run (this test restarts the server, so it runs last).

One server for the session (~1-2 min to start on 2 cores). Run: python -m pytest tests/teacher/test_server.py
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from crossdistill.config import cache_build_from_dict, load_config
from crossdistill.losses.signal import TeacherSignal
from crossdistill.teacher.reader import CacheReader
from crossdistill.teacher.server import ServedTeacher, ServerUnavailable
from crossdistill.teacher.writer import FAIL_ENV, InjectedFailure, build_cache
from crossdistill.train import trainer as trainer_mod
from crossdistill.train.run import run_training

K = 8


@pytest.fixture(scope="module")
def pair(served_teacher_path, model_paths, student_same_vocab, chat_data):
    return {"teacher": served_teacher_path, "student_unigram": model_paths["student_unigram"],
            "student_bpe": student_same_vocab, "data": chat_data}


def overrides(pair, server, out: Path, student: str = "student_unigram", *extra: str) -> list[str]:
    return [f"student.model={pair[student]}", f"teacher.model={pair['teacher']}", f"teacher.server.url={server.url}",
            "teacher.server.model=tiny-teacher", f"teacher.server.top_k={K}", "teacher.missing_mass=tail_bucket",
            f"data.train={pair['data']}", "data.max_length=64", "data.eval_fraction=0.1", "train.max_steps=2",
            "train.per_device_batch_size=4", "train.report_to=[]", "train.progress_bar=false",
            f"train.output_dir={out}", "train.learning_rate=5e-3", "train.logging_steps=1", "train.eval_steps=null",
            "train.save_steps=null", *extra]


def step_log(out: Path, step: int = 1) -> dict:
    history = json.load(open(out / "trainer_state.json"))["log_history"]
    return next(h for h in history if h.get("step") == step and "loss" in h)


def in_process_top_k_context(k: int, policy: str):
    """``MethodRunner.context`` of the in-process teacher with its distribution cut to its top-k (exact tail and
    the actual token's exact log-prob): what the server returns."""
    original = trainer_mod.MethodRunner.context

    def context(self, model, inputs, *args):
        ctx = original(self, model, inputs, *args)
        assert self.served is None and self.teacher is not None  # the in-process path
        if ctx.teacher_mask is not None:  # cross-tokenizer: the teacher's own target rows
            rows = getattr(ctx, "teacher_target_logits", None)
            z = rows if rows is not None else ctx.teacher_logits[ctx.teacher_mask]
            z = z[:, : ctx.teacher_vocab_size].float()
            y = ctx.teacher_targets[ctx.teacher_mask]
            ctx.teacher_logits = ctx.teacher_target_logits = None
        else:  # same tokenizer: the student's target rows
            z = (ctx.teacher_hidden[ctx.mask] @ ctx.teacher_lm_head_weight.T).float() * ctx.teacher_logit_scale
            z = z[:, : ctx.teacher_vocab_size]
            y = ctx.targets[ctx.mask]
        exact = z.log_softmax(-1).gather(-1, y[:, None]).squeeze(-1)
        ctx.teacher_signal = replace(TeacherSignal.top_k(z, k, policy=policy), target_logprobs=exact)
        return ctx

    return context


def test_server_scores_equal_the_in_process_top_k(pair, vllm_server):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from crossdistill.config import TeacherServerConfig

    tok = AutoTokenizer.from_pretrained(pair["teacher"])
    teacher = ServedTeacher.connect(TeacherServerConfig(url=vllm_server.url, model="tiny-teacher", top_k=K), tok)
    texts = ["What is 12 plus 30? The answer is 42.", "Naïve café — 日本語 🙂 and\ttabs\n", "x y"]
    seqs = [tok(t)["input_ids"] for t in texts]
    scored = teacher.score(seqs)
    model = AutoModelForCausalLM.from_pretrained(pair["teacher"]).eval()
    for ids, s in zip(seqs, scored):
        with torch.no_grad():
            z = model(torch.tensor([ids])).logits[0, :-1, : len(tok)].float()
        ref = TeacherSignal.top_k(z, K)
        assert s.ids.shape == (len(ids) - 1, K)
        assert torch.equal(s.ids, ref.ids)
        assert (s.logprobs - ref.logprobs).abs().max() < 1e-4
        assert (s.tail_logmass - ref.tail_logmass).abs().max() < 1e-4
        actual = z.log_softmax(-1).gather(1, torch.tensor(ids[1:])[:, None]).squeeze(1)
        assert (s.target_logprobs - actual).abs().max() < 1e-4
    teacher.close()


@pytest.mark.parametrize("loss, student, lmbda, terms", [
    ("uld", "student_unigram", 0.0, ("loss", "loss_uld", "loss_ce")),
    ("uld", "student_unigram", 1.0, ("loss", "loss_uld", "loss_ce")),
    ("gold_hybrid", "student_unigram", 1.0, ("loss", "loss_gold", "loss_ce")),
    ("forward_kl", "student_bpe", 0.0, ("loss", "loss_kd", "loss_ce")),
])
def test_student_trains_from_the_server_like_the_in_process_top_k(pair, vllm_server, tmp_path, monkeypatch, loss,
                                                                   student, lmbda, terms):
    """Off-policy and on-policy (λ = 1: every step scores the student's own samples, re-rendered for the teacher):
    the first two steps equal the in-process teacher restricted to the same top-k."""
    extra = [f"loss.name={loss}"] + (["loss.weights={kd: 0.7, ce: 0.3}"] if loss == "forward_kl" else
                                     ["loss.weights={}", f"loss.params={{top_k: {K}}}"])
    if lmbda:
        extra += [f"onpolicy.lmbda={lmbda}", "onpolicy.max_new_tokens=12"]
        if loss == "uld":  # ULD has no term left on the student's own samples by default: keep them to compare
            extra.append("onpolicy.ce_on_samples=true")
    served_out = tmp_path / "served" / "out"
    cfg = load_config(None, overrides(pair, vllm_server, served_out, student, *extra))
    from crossdistill import models

    real_load = models.load_model

    def no_teacher(mc, role, *args, **kwargs):
        assert role != "teacher", "training from a server loaded the teacher model"
        return real_load(mc, role, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(models, "load_model", no_teacher)
        record = run_training(cfg)
    assert record["steps"] == 2 and record["teacher_loss"] is None
    served = step_log(served_out)
    assert served["on_policy_fraction"] == lmbda

    local_out = tmp_path / "local" / "out"
    local_cfg = load_config(None, overrides(pair, vllm_server, local_out, student, *extra, "teacher.server=null"))
    with monkeypatch.context() as m:
        m.setattr(trainer_mod.MethodRunner, "context", in_process_top_k_context(K, "tail_bucket"))
        run_training(local_cfg)
    local = step_log(local_out)
    assert served["target_tokens"] == local["target_tokens"]  # on-policy: the same samples
    for key in terms:
        assert served[key] > 0
        assert abs(served[key] - local[key]) <= 1e-4 * max(1.0, abs(local[key])), (key, served, local)
    assert abs(step_log(served_out, 2)["loss"] - step_log(local_out, 2)["loss"]) <= 1e-4 * max(1.0, local["loss"])


def test_cache_from_the_server_matches_the_in_process_cache_and_resumes(pair, vllm_server, tmp_path, monkeypatch):
    base = dict(teacher=str(pair["teacher"]), data=str(pair["data"]), k=K, examples_per_shard=8, batch_size=4,
                max_length=64, value_dtype="fp32")
    local = cache_build_from_dict({**base, "output": str(tmp_path / "local")})
    build_cache(local, progress=False)
    served_cfg = cache_build_from_dict({**base, "output": str(tmp_path / "served"),
                                        "server": {"url": vllm_server.url, "model": ""}})
    monkeypatch.setenv(FAIL_ENV, "1")  # interrupted after its first shard ...
    with pytest.raises(InjectedFailure):
        build_cache(served_cfg, progress=False)
    monkeypatch.delenv(FAIL_ENV)
    manifest = build_cache(served_cfg, progress=False)  # ... and resumed
    assert manifest.extra["teacher_server_model"] == "tiny-teacher"  # found on the server ("" asks for the only one)
    a, b = CacheReader(tmp_path / "local"), CacheReader(tmp_path / "served")
    assert len(a) == len(b) == 24 and a.num_shards == b.num_shards == 3
    for ea, eb in zip(a, b):
        assert torch.equal(ea.token_ids, eb.token_ids) and torch.equal(ea.spans, eb.spans)
        assert (ea.token_logprob - eb.token_logprob).abs().max() < 1e-4
        assert (ea.support_logprobs - eb.support_logprobs).abs().max() < 1e-4
        assert (ea.tail_logmass - eb.tail_logmass).abs().max() < 1e-4
        same = ea.support_ids == eb.support_ids  # ids may swap only within a near-tie
        assert same.all() or (ea.support_logprobs[~same] - eb.support_logprobs[~same]).abs().max() < 1e-4
    assert manifest.dataset_fingerprint == a.manifest.dataset_fingerprint
    assert manifest.tokenizer_hashes == a.manifest.tokenizer_hashes


class KillServerAt(TrainerCallback):
    """Kills the server (SIGKILL, as a crash would) at the end of optimizer step ``step``."""

    def __init__(self, server, step: int):
        self.server, self.step = server, step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            self.server.kill()


def test_killed_server_stops_with_a_clear_error_and_resume_is_exact(pair, vllm_server, tmp_path):
    """Runs last in this module: it kills the session's server and restarts it."""
    extra = ["loss.name=uld", "loss.weights={}", f"loss.params={{top_k: {K}}}", "train.max_steps=4",
             "train.save_steps=1", "teacher.server.concurrency=1", "teacher.server.retries=1",
             "teacher.server.backoff=0.2", "teacher.server.timeout=20"]
    whole = tmp_path / "whole"
    run_training(load_config(None, overrides(pair, vllm_server, whole, "student_unigram", *extra)))

    broken = tmp_path / "broken"
    cfg = load_config(None, overrides(pair, vllm_server, broken, "student_unigram", *extra))
    with pytest.raises(ServerUnavailable) as err:
        run_training(cfg, callbacks=[KillServerAt(vllm_server, 2)])
    msg = str(err.value)
    assert f"teacher.server.url='{vllm_server.url}'" in msg and "2 attempt(s)" in msg
    assert "crossdistill train RECIPE --resume" in msg
    assert (broken / "checkpoint-2" / "trainer_state.json").is_file() and not (broken / "checkpoint-3").exists()

    vllm_server.start(timeout=600)  # the same port again
    record = run_training(cfg, resume=True)
    assert record["steps"] == 4
    w_whole, w_resumed = load_file(whole / "model.safetensors"), load_file(broken / "model.safetensors")
    assert w_whole.keys() == w_resumed.keys()
    for name in w_whole:
        assert torch.equal(w_whole[name], w_resumed[name]), name
