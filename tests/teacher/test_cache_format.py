"""Shard encoding and the bytes-per-token budget. Run: python -m pytest tests/teacher/test_cache_format.py -q"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crossdistill.teacher.bitpack import bits_for
from crossdistill.teacher.format import ShardData, concat_examples, decode_shard, encode_shard


def random_records(n_examples: int, k: int, vocab: int, seed: int = 0, sampled: bool = False):
    g = torch.Generator().manual_seed(seed)
    records = []
    for _ in range(n_examples):
        n = int(torch.randint(0, 30, (1,), generator=g))
        logp = torch.randn(n, k, generator=g).abs().neg().sort(-1, descending=True).values * 5
        rec = {"token_ids": torch.randint(0, vocab, (n,), generator=g),
               "token_logprob": -torch.rand(n, generator=g) * 20,
               "spans": torch.stack([torch.arange(n), torch.arange(n) + 1], -1),
               "support_ids": torch.randint(0, vocab, (n, k), generator=g),
               "support_logprobs": logp, "tail_logmass": -torch.rand(n, generator=g)}
        if sampled:
            rec["sample_counts"] = torch.randint(0, 3, (n, k), generator=g)
        records.append(rec)
    return records


@pytest.mark.parametrize("value_dtype, tol", [("fp16", 2**-10), ("bf16", 2**-7), ("fp32", 0.0)])
@pytest.mark.parametrize("sampled", [False, True])
def test_round_trip(value_dtype, tol, sampled):
    vocab, k = 151_936, 5
    records = random_records(4, k, vocab, sampled=sampled)
    data = concat_examples(records, [10, 11, 12, 13])
    raw = encode_shard(data, bits=bits_for(vocab), value_dtype=value_dtype, shard_index=3, support="topk")
    back = decode_shard(raw, bits=bits_for(vocab), k=k)
    np.testing.assert_array_equal(back.example_index, [10, 11, 12, 13])
    np.testing.assert_array_equal(back.token_offsets, data.token_offsets)
    assert torch.equal(back.support_ids, data.support_ids) and torch.equal(back.token_ids, data.token_ids)
    assert torch.equal(back.spans, data.spans)
    assert torch.equal(back.tail_logmass, data.tail_logmass)  # stored in fp32: exact
    rel = (back.support_logprobs - data.support_logprobs).abs() / data.support_logprobs.abs().clamp(min=1e-3)
    assert rel.numel() == 0 or float(rel.max()) <= tol
    if sampled:
        assert torch.equal(back.sample_counts, data.sample_counts)
    else:
        assert back.sample_counts is None


def test_encoding_is_deterministic():
    data = concat_examples(random_records(3, 4, 300), [0, 1, 2])
    kw = dict(bits=9, value_dtype="fp16", shard_index=0, support="topk")
    assert encode_shard(data, **kw) == encode_shard(data, **kw)


def test_empty_examples_and_empty_shard():
    records = random_records(3, 4, 300)
    records[1] = {key: value[:0] for key, value in records[1].items()}
    data = concat_examples(records, [0, 1, 2])
    back = decode_shard(encode_shard(data, bits=9, value_dtype="fp16", shard_index=0, support="topk"), bits=9, k=4)
    assert back.example_slice(1).start == back.example_slice(1).stop


@pytest.mark.parametrize("k", [8, 32, 128])
@pytest.mark.parametrize("vocab", [49_152, 151_936, 262_144])
def test_bytes_per_token_within_budget(k, vocab):
    """Target from the issue: <= 5 k + 16 bytes per token, every field included (one example of 512 tokens)."""
    n = 512
    data = ShardData(example_index=np.array([0]), token_offsets=np.array([0, n]),
                     token_ids=torch.zeros(n, dtype=torch.long), token_logprob=torch.zeros(n),
                     spans=torch.zeros(n, 2, dtype=torch.long), support_ids=torch.zeros(n, k, dtype=torch.long),
                     support_logprobs=torch.zeros(n, k), tail_logmass=torch.zeros(n))
    raw = encode_shard(data, bits=bits_for(vocab), value_dtype="fp16", shard_index=0, support="topk")
    assert len(raw) / n <= 5 * k + 16
