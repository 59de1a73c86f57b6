"""First-step loss of a tiny distillation run: from the cache == from the online teacher restricted to the same top-k.

Both go through the training engine's own pieces — ``crossdistill.train.run.prepare`` (tokenizers, rendering,
batches with ``example_index``), ``MethodRunner`` (student hidden states, registered method, fused chunked loss,
global normalization, T²) — and differ only in where ``StepContext.teacher_signal`` comes from.

Run: python -m pytest tests/teacher/test_cache_training.py -q
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from transformers import AutoModelForCausalLM

from crossdistill.config import config_from_dict
from crossdistill.data.dataset import DistillCollator
from crossdistill.data.load import load_examples
from crossdistill.losses.signal import TeacherSignal
from crossdistill.teacher.source import CachedTeacher
from crossdistill.train.run import prepare
from crossdistill.train.trainer import MethodRunner


class OnlineTopKRunner(MethodRunner):
    """The online teacher, its distribution restricted to its top-k (exact tail mass)."""

    def __init__(self, *args, k: int, policy: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.k, self.policy = k, policy

    def context(self, model, inputs):
        ctx = super().context(model, inputs)
        z = ctx.teacher_hidden[ctx.mask] @ ctx.teacher_lm_head_weight.T  # [N, V_t] teacher logits at target rows
        ctx.teacher_signal = TeacherSignal.top_k(z[:, : ctx.teacher_vocab_size], self.k, policy=self.policy)
        return ctx


class CacheRunner(MethodRunner):
    """No teacher model at all: the signal comes from the cache (what the trainer does with teacher: {cache: ...})."""

    def __init__(self, method, dcfg, student_tok, cached: CachedTeacher):
        super().__init__(replace(method, teacher="none"), dcfg, None, student_tok, None)
        self.cached = cached

    def context(self, model, inputs):
        ctx = super().context(model, inputs)
        ctx.teacher_signal = self.cached.signal(inputs["example_index"], ctx.targets, ctx.mask)
        return ctx


@pytest.mark.parametrize("loss, temperature, policy", [("forward_kl", 1.0, "renormalize"),
                                                        ("forward_kl", 2.0, "tail_bucket"),
                                                        ("jsd", 1.0, "tail_bucket")])
def test_first_step_loss_cache_equals_online_top_k(make_cache, model_paths, student_same_vocab, cache_dataset, loss,
                                                   temperature, policy):
    cfg_cache, _ = make_cache("train-eq")  # default format: fp16 values, k = 8
    dcfg = config_from_dict({
        "student": {"model": str(student_same_vocab)}, "teacher": {"model": str(model_paths["teacher_bpe"])},
        "data": {"train": str(cache_dataset), "eval": str(cache_dataset), "max_length": cfg_cache.max_length},
        "loss": {"name": loss, "temperature": temperature, "weights": {"ce": 0.3, "kd": 0.7}},
        "train": {"per_device_batch_size": 4, "report_to": []},
    })
    p = prepare(dcfg, progress=False)
    student = AutoModelForCausalLM.from_pretrained(dcfg.student.model)
    teacher = AutoModelForCausalLM.from_pretrained(dcfg.teacher.model).eval()
    collate = DistillCollator(p.student_tok.pad_token_id)
    batch = collate([p.train[i] for i in (0, 1, 2, 3)])  # the first optimizer step's micro-batch

    online = OnlineTopKRunner(p.method, dcfg, teacher, p.student_tok, p.teacher_tok, k=cfg_cache.k, policy=policy)
    cached = CachedTeacher(cfg_cache.output, examples=load_examples(cache_dataset), student_tokenizer=p.student_tok,
                           teacher_tokenizer=p.teacher_tok, policy=policy)
    from_cache = CacheRunner(p.method, dcfg, p.student_tok, cached)

    a = online.objective(student, batch)
    b = from_cache.objective(student, batch)
    assert abs(a.loss.item() - b.loss.item()) <= 1e-4, (a.metrics(), b.metrics())
    assert a.loss.item() > 0
    # Same gradients on the student, too.
    ga = torch.autograd.grad(a.loss, [w for w in student.parameters()][-1])[0]
    gb = torch.autograd.grad(b.loss, [w for w in student.parameters()][-1])[0]
    torch.testing.assert_close(ga, gb, atol=1e-4, rtol=1e-3)
