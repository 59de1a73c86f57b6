"""Round trip: what the cache returns equals the teacher's own top-k, ids and spans, computed naively here.

Run: python -m pytest tests/teacher/test_teacher_forward.py -q
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from crossdistill.data.load import load_examples, prompt_messages
from crossdistill.data.render import render
from crossdistill.teacher.forward import sampled_support
from crossdistill.teacher.reader import CacheReader

_NAIVE: dict = {}


def naive_teacher(model_dir, data_path, max_length=2048):
    """Memoized :func:`_naive_teacher` (the same reference serves several tests)."""
    key = (str(model_dir), str(data_path), max_length)
    if key not in _NAIVE:
        _NAIVE[key] = _naive_teacher(model_dir, data_path, max_length)
    return _NAIVE[key]


def _naive_teacher(model_dir, data_path, max_length=2048):
    """Per example, unbatched, the full-vocabulary log-probs at every predicted completion token (sorted, no topk)."""
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    vocab = len(tok)
    out = []
    for ex in load_examples(data_path):
        prompt, completion = prompt_messages(ex)
        r = render(tok, prompt or "", completion, max_length=max_length)
        with torch.no_grad():
            logits = model(torch.tensor([r.input_ids])).logits[0, :, :vocab]  # padding columns sliced off
        logp = torch.log_softmax(logits.float(), -1)
        rows = [j for j in range(len(r.input_ids) - 1) if r.labels[j + 1] != -100]
        targets = torch.tensor([r.labels[j + 1] for j in rows], dtype=torch.long)
        spans = [r.spans[j + 1 - r.completion_start] for j in rows]
        out.append({"logp": logp[rows], "targets": targets, "spans": spans, "completion": completion,
                    "rendered": r})
    return out


def _check_round_trip(reader, reference, k, rel_tol):
    assert len(reader) == len(reference)
    for cached, ref in zip(reader, reference, strict=True):
        sorted_logp, order = ref["logp"].sort(-1, descending=True)
        assert torch.equal(cached.token_ids, ref["targets"])
        assert cached.spans.tolist() == [list(s) for s in ref["spans"]]
        assert torch.equal(cached.support_ids, order[:, :k])  # ids exact
        want = sorted_logp[:, :k]
        assert torch.all((cached.support_logprobs - want).abs() <= want.abs() * rel_tol + 1e-6)
        tail = sorted_logp[:, k:].logsumexp(-1)
        torch.testing.assert_close(cached.tail_logmass, tail, rtol=1e-5, atol=1e-5)
        tok_lp = ref["logp"].gather(1, ref["targets"][:, None]).squeeze(1)
        assert torch.all((cached.token_logprob - tok_lp).abs() <= tok_lp.abs() * rel_tol + 1e-6)


@pytest.mark.parametrize("value_dtype, rel_tol", [("fp16", 2**-11), ("bf16", 2**-8), ("fp32", 1e-6)])
def test_round_trip_values_ids_spans(make_cache, model_paths, cache_dataset, value_dtype, rel_tol):
    cfg, _ = make_cache(f"rt-{value_dtype}", value_dtype=value_dtype)
    reference = naive_teacher(model_paths["teacher_bpe"], cache_dataset)
    _check_round_trip(CacheReader(cfg.output), reference, cfg.k, rel_tol)


def test_padded_teacher_head_is_sliced(make_cache, model_paths, cache_dataset):
    """A padded head: 7 padding rows give the same cache as the real vocabulary (padding never stored)."""
    cfg, manifest = make_cache("padded", teacher=str(model_paths["teacher_bpe_padded"]), value_dtype="fp32")
    assert manifest.extra["vocab_size"] == len(AutoTokenizer.from_pretrained(model_paths["teacher_bpe_padded"]))
    reference = naive_teacher(model_paths["teacher_bpe_padded"], cache_dataset)
    _check_round_trip(CacheReader(cfg.output), reference, cfg.k, 1e-6)


def test_spans_partition_the_completion(topk_cache, model_paths, cache_dataset):
    cfg, _ = topk_cache
    reference = naive_teacher(model_paths["teacher_bpe"], cache_dataset)
    for cached, ref in zip(CacheReader(cfg.output), reference):
        r = ref["rendered"]
        # Every completion token but (for text examples) the unpredictable first one is cached, in order.
        first = 1 if r.completion_start == 0 else 0
        assert cached.spans.tolist() == [list(s) for s in r.spans[first:]]
        text = "".join(ref["completion"][s:e] for s, e in r.spans)
        assert text == ref["completion"][: r.covered]


def test_truncation_matches_render(make_cache, model_paths, cache_dataset):
    cfg, _ = make_cache("short", max_length=12, value_dtype="fp32")
    reference = naive_teacher(model_paths["teacher_bpe"], cache_dataset, max_length=12)
    _check_round_trip(CacheReader(cfg.output), reference, cfg.k, 1e-6)


def test_sampled_support_is_exact_and_deterministic(make_cache, model_paths, cache_dataset):
    cfg, manifest = make_cache("sampled", support="sampled", k=6, value_dtype="fp32", seed=3)
    cfg2, manifest2 = make_cache("sampled-again", support="sampled", k=6, value_dtype="fp32", seed=3)
    assert manifest.files == manifest2.files  # same seed -> identical shards (sha256 equal)
    reference = naive_teacher(model_paths["teacher_bpe"], cache_dataset)
    for cached, ref in zip(CacheReader(cfg.output), reference, strict=True):
        counts = cached.sample_counts
        assert torch.all(counts.sum(-1) == 6) and torch.all(counts >= 0)
        ids = cached.support_ids
        assert all(len(set(row)) == 6 for row in ids.tolist())  # distinct ids: a valid sparse support
        torch.testing.assert_close(cached.support_logprobs, ref["logp"].gather(1, ids), rtol=1e-5, atol=1e-5)
        rest = ref["logp"].scatter(1, ids, float("-inf")).logsumexp(-1)
        torch.testing.assert_close(cached.tail_logmass, rest, rtol=1e-5, atol=1e-5)
        est = cached.signal(estimate=True)
        torch.testing.assert_close(est.logprobs.exp().sum(-1), torch.ones(len(ids)))


def test_sampled_support_frequencies_follow_the_teacher():
    """Unbiasedness: draw counts / k converge to the teacher probabilities."""
    logp = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0, -1.0, -3.0]]), -1).expand(4000, 5)
    ids, counts = sampled_support(logp, 4, torch.Generator().manual_seed(0))
    freq = torch.zeros(5).scatter_add_(0, ids.reshape(-1), counts.reshape(-1).float()) / counts.sum()
    torch.testing.assert_close(freq, logp[0].exp(), atol=0.01, rtol=0)
