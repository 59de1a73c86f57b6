"""Fast paths of the cross-tokenizer step against the naive ones, through ``MethodRunner`` on a real tiny pair:
``uld`` / ``gold_hybrid`` terms and student gradients unchanged by the shared student head (CE from the soft term's
logits) and numpy's sort. Run: python -m pytest tests/train/test_step_fast_paths.py -q"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from crossdistill.config import load_config
from crossdistill.data.dataset import DistillCollator
from crossdistill.train.run import prepare
from crossdistill.train.trainer import MethodRunner, build_method_state


def runner_and_batch(overrides, tmp_path, method):
    cfg = load_config(None, overrides(tmp_path / "out", f"loss.name={method}", student="student_unigram"))
    p = prepare(cfg, progress=False)
    student = AutoModelForCausalLM.from_pretrained(cfg.student.model)
    teacher = AutoModelForCausalLM.from_pretrained(cfg.teacher.model).eval().requires_grad_(False)
    state = build_method_state(p.method, cfg, student, teacher, p.student_tok, p.teacher_tok)
    runner = MethodRunner(p.method, cfg, teacher, p.student_tok, p.teacher_tok, state=state)
    batch = DistillCollator(p.student_tok.pad_token_id, p.teacher_tok.pad_token_id)([p.train[i] for i in range(4)])
    return runner, student, teacher, batch


@pytest.mark.parametrize("method", ["uld", "gold_hybrid"])
def test_objective_equals_the_naive_step(overrides, tmp_path, monkeypatch, method):
    """The step's terms and student gradients equal those of the naive step: the fused chunked CE on its own
    lm_head pass and torch.sort for the sorted terms (what the step did before the fast paths)."""
    import crossdistill.losses.uld as uld_mod
    import crossdistill.methods.common as common
    import crossdistill.methods.gold_hybrid as gh
    import crossdistill.methods.uld as uldm

    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    runner, student, _, batch = runner_and_batch(overrides, tmp_path, method)

    def step():
        student.zero_grad(set_to_none=True)
        obj = runner.objective(student, batch)
        obj.loss.backward()
        return {k: v.detach() for k, v in obj.terms.items()}, [q.grad.clone() for q in student.parameters()]

    fast_terms, fast_grads = step()
    with monkeypatch.context() as m:  # the naive step
        naive_ce = lambda ctx, logits: common.ce_sum(ctx)  # noqa: E731
        m.setattr(uldm, "ce_from_target_logits", naive_ce)
        m.setattr(gh, "ce_from_target_logits", naive_ce)
        m.setattr(uld_mod, "sort_desc", lambda x: x.sort(dim=-1, descending=True).values)
        naive_terms, naive_grads = step()
    assert fast_terms.keys() == naive_terms.keys()
    for k in fast_terms:
        torch.testing.assert_close(fast_terms[k], naive_terms[k], rtol=1e-5, atol=1e-7)
    for a, b in zip(fast_grads, naive_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_tokenizer_of_the_pair_is_cross_family(overrides, tmp_path):
    """The pair above is a real cross-tokenizer pair (else the tests would not exercise the alignment)."""
    cfg = load_config(None, overrides(tmp_path / "out", "loss.name=uld", student="student_unigram"))
    s = AutoTokenizer.from_pretrained(cfg.student.model)
    t = AutoTokenizer.from_pretrained(cfg.teacher.model)
    assert s.get_vocab() != t.get_vocab()
