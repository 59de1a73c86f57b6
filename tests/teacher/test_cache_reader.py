"""Reading a cache: specific errors for damaged / mismatched caches, and signals equal to the online teacher's.

Run: python -m pytest tests/teacher/test_cache_reader.py -q
"""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from crossdistill.data.load import load_examples, prompt_messages
from crossdistill.data.render import collate_rendered, render
from crossdistill.losses.chunked import ChunkedLossConfig, distill_loss_from_logits
from crossdistill.losses.signal import TeacherSignal
from crossdistill.manifest import ManifestMismatchError
from crossdistill.positions import shift_targets
from crossdistill.teacher.format import shard_name
from crossdistill.teacher.reader import (
    CacheAlignmentError,
    CacheChecksumError,
    CacheError,
    CacheIncompleteError,
    CacheReader,
    CacheTruncatedError,
)


@pytest.fixture
def cache_copy(topk_cache, tmp_path):
    cfg, _ = topk_cache
    return shutil.copytree(cfg.output, tmp_path / "cache")


def test_corrupted_byte_is_a_checksum_error(cache_copy):
    shard = cache_copy / shard_name(1)
    raw = bytearray(shard.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    shard.write_bytes(bytes(raw))
    reader = CacheReader(cache_copy)  # sizes are fine: opening succeeds
    reader.example(0)  # shard 0 is intact
    with pytest.raises(CacheChecksumError, match="shard-00001.safetensors is corrupted"):
        reader.example(4)
    with pytest.raises(CacheChecksumError):
        list(CacheReader(cache_copy))


def test_truncated_shard_is_reported_on_open(cache_copy):
    shard = cache_copy / shard_name(2)
    shard.write_bytes(shard.read_bytes()[:-10])
    with pytest.raises(CacheTruncatedError, match=r"shard-00002.safetensors has \d+ bytes but the manifest"):
        CacheReader(cache_copy)


def test_missing_shard_and_missing_manifest_are_incomplete(cache_copy):
    (cache_copy / shard_name(0)).unlink()
    with pytest.raises(CacheIncompleteError, match="missing"):
        CacheReader(cache_copy)
    (cache_copy / "manifest.json").unlink()
    with pytest.raises(CacheIncompleteError, match="no manifest.json"):
        CacheReader(cache_copy)


def test_changed_dataset_is_refused(topk_cache, cache_dataset, dataset_writer, tmp_path):
    cfg, _ = topk_cache
    reader = CacheReader(cfg.output)
    reader.check_against(examples=load_examples(cache_dataset))  # the same data passes
    other = load_examples(dataset_writer(tmp_path / "other.jsonl", shift=1))
    with pytest.raises(ManifestMismatchError, match="dataset_fingerprint"):
        reader.check_against(examples=other)
    one_char = load_examples(cache_dataset)
    one_char[4]["completion"] += "!"
    with pytest.raises(ManifestMismatchError, match="dataset_fingerprint"):
        reader.check_against(examples=one_char)


def test_different_teacher_tokenizer_is_refused(topk_cache, tokenizers):
    cfg, _ = topk_cache
    reader = CacheReader(cfg.output)
    reader.check_against(teacher_tokenizer=tokenizers["bpe"])
    with pytest.raises(ManifestMismatchError, match=r"tokenizer_hashes\['teacher'\]"):
        reader.check_against(teacher_tokenizer=tokenizers["unigram"])
    # A same-vocabulary objective needs the student to share the teacher's tokenizer.
    reader.check_against(student_tokenizer=tokenizers["bpe"], same_vocabulary=True)
    with pytest.raises(ManifestMismatchError, match="same-vocabulary loss"):
        reader.check_against(student_tokenizer=tokenizers["wordpiece"], same_vocabulary=True)


def test_k_and_alignment_checks(topk_cache):
    cfg, _ = topk_cache
    reader = CacheReader(cfg.output)
    with pytest.raises(CacheError, match="holds k = 8"):
        reader.check_against(k=16)
    ex = reader.example(2)
    reader.signal_for([2], targets=[ex.token_ids])
    wrong = ex.token_ids.clone()
    wrong[0] += 1
    with pytest.raises(CacheAlignmentError, match="different ids"):
        reader.signal_for([2], targets=[wrong])
    with pytest.raises(CacheAlignmentError, match="target tokens"):
        reader.signal_for([2], targets=[ex.token_ids[:-1]])


def test_smaller_k_is_the_exact_top_k_prefix(topk_cache):
    cfg, _ = topk_cache
    reader = CacheReader(cfg.output)
    full, small = reader.signal_for([0, 1]), reader.signal_for([0, 1], k=3)
    assert torch.equal(small.ids, full.ids[:, :3])
    mass = torch.logaddexp(small.logprobs.float().logsumexp(-1), small.tail_logmass)
    torch.testing.assert_close(mass, torch.logaddexp(full.logprobs.float().logsumexp(-1), full.tail_logmass))


def test_streaming_holds_at_most_max_open_shards(topk_cache):
    cfg, _ = topk_cache
    reader = CacheReader(cfg.output, max_open_shards=1)
    seen = [ex.index for ex in reader]
    assert seen == list(range(len(reader))) and len(reader._open) == 1


# ------------------------------------------------------------------------------- cache == online teacher (loss level)
@pytest.fixture(scope="module")
def online_step(model_paths, student_same_vocab, cache_dataset):
    """Tokenizer, collated batch, student and the online teacher's logits of the tiny same-tokenizer pair, once."""
    tok = AutoTokenizer.from_pretrained(student_same_vocab)
    rendered = [render(tok, p or "", c) for p, c in map(prompt_messages, load_examples(cache_dataset))]
    batch = collate_rendered(rendered, pad_id=tok.pad_token_id)
    student = AutoModelForCausalLM.from_pretrained(student_same_vocab)
    teacher = AutoModelForCausalLM.from_pretrained(model_paths["teacher_bpe"]).eval()
    with torch.no_grad():
        t_logits = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return tok, batch, student, t_logits


@pytest.mark.parametrize("value_dtype, tol", [("fp16", 1e-4), ("fp32", 1e-6)])
@pytest.mark.parametrize("policy", ["renormalize", "tail_bucket"])
def test_loss_from_cache_equals_online_top_k(make_cache, online_step, cache_dataset, value_dtype, tol, policy):
    """The same student step scored against the cached signal and against the online teacher restricted to the same
    top-k gives the same loss and gradient (docs/design.md, contract 4; normalized by the target count, contract 2)."""
    cfg, _ = make_cache(f"eq-{value_dtype}", value_dtype=value_dtype) if value_dtype != "fp16" else \
        make_cache("eq-fp16")
    tok, batch, student, t_logits = online_step  # the student shares the teacher's tokenizer
    targets, mask = shift_targets(batch["labels"])
    s_logits = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    online = TeacherSignal.top_k(t_logits[mask][:, : len(tok)], cfg.k, policy=policy)
    reader = CacheReader(cfg.output)
    reader.check_against(examples=load_examples(cache_dataset), student_tokenizer=tok, same_vocabulary=True)
    cached = reader.signal_for(range(len(reader)), policy=policy, targets=[row[m] for row, m in zip(targets, mask)])
    assert torch.equal(cached.ids, online.ids)
    n = int(mask.sum())
    for divergence in ("forward_kl", "generalized_jsd", "tvd"):
        loss_cfg = ChunkedLossConfig(divergence=divergence)
        a = distill_loss_from_logits(s_logits[mask], targets[mask], online, loss_cfg).sums["kd"] / n
        b = distill_loss_from_logits(s_logits[mask], targets[mask], cached, loss_cfg).sums["kd"] / n
        assert abs(a.item() - b.item()) <= tol, (divergence, a.item(), b.item())
        ga, = torch.autograd.grad(a, s_logits, retain_graph=True)
        gb, = torch.autograd.grad(b, s_logits, retain_graph=True)
        torch.testing.assert_close(ga, gb, atol=max(tol, 1e-6), rtol=0)
