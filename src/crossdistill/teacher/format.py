"""On-disk layout of one cache shard (a safetensors file) and its in-memory form.

Why safetensors rather than parquet: the payload is a handful of dense numeric arrays per shard, which safetensors
stores as raw little-endian buffers behind a JSON header — bf16 natively (parquet/arrow has no bf16 and would need a
uint16 reinterpretation), no per-row encoding cost, zero-copy memory-mapped reads of single tensors, and it is
already a dependency (checkpoints use it). Parquet's strengths (columnar predicates, nested rows, compression of
repetitive data) buy nothing here: log-probs and packed ids are high-entropy and read whole.

A shard holds a contiguous range of examples; per-token arrays are concatenated over the shard's examples and
``token_offsets`` (CSR) splits them back. Per completion token (N tokens in the shard, k entries each):

=================  ========================  ===================================================================
tensor             dtype / shape             meaning
=================  ========================  ===================================================================
example_index      int64 [E]                 dataset index of each example in the shard
token_offsets      int64 [E + 1]             example e owns tokens ``token_offsets[e]:token_offsets[e+1]``
token_ids          uint8 packed (b bits) [N] the teacher token at this completion position (the target)
token_logprob      fp16|bf16 [N]             teacher log-prob of that token
spans              int32 [N, 2]              (start, end) characters of the token in the completion text
support_ids        uint8 packed (b bits) [N*k] top-k ids (descending log-prob) or sampled ids
support_logprobs   bf16|fp16 [N, k]          teacher log-probs of those ids (at the cache temperature)
tail_logmass       float32 [N]               log of the teacher mass outside the top-k ids (top-k only)
sample_counts      uint8 [N, k]              sampled support only: draws per id (0 = padding slot)
=================  ========================  ===================================================================

b = ceil(log2 V_teacher). Bytes per token = (2 + b/8)·k + 2 + b/8 + 8 + 4 (+ k for sampled counts): for V = 152k
and k = 32 that is 152.25 B, within the budget 5·k + 16 = 176 B.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from crossdistill.teacher.bitpack import pack, unpack

FORMAT_VERSION = 1
FORMAT_NAME = "crossdistill-teacher-cache"
VALUE_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def shard_name(index: int) -> str:
    """File name of shard ``index``. Named by the global shard index, not by the writing rank, so the cache is the
    same bytes whatever the number of workers that wrote it."""
    return f"shard-{index:05d}.safetensors"


@dataclass
class ShardData:
    """One shard in memory, values as float32 and ids as int64 (N tokens, E examples, k entries)."""

    example_index: np.ndarray
    """int64 ``[E]`` dataset indices."""
    token_offsets: np.ndarray
    """int64 ``[E + 1]`` CSR offsets into the per-token arrays."""
    token_ids: torch.Tensor
    """int64 ``[N]`` teacher token at each completion position."""
    token_logprob: torch.Tensor
    """float32 ``[N]`` teacher log-prob of that token."""
    spans: torch.Tensor
    """int64 ``[N, 2]`` character span in the completion text."""
    support_ids: torch.Tensor
    """int64 ``[N, k]`` top-k (or sampled) ids."""
    support_logprobs: torch.Tensor
    """float32 ``[N, k]`` teacher log-probs of ``support_ids``."""
    tail_logmass: torch.Tensor
    """float32 ``[N]`` log of the mass outside ``support_ids`` (``-inf`` when the support covers everything)."""
    sample_counts: torch.Tensor | None = None
    """int64 ``[N, k]`` draws per sampled id (sampled support only)."""

    @property
    def num_tokens(self) -> int:
        return int(self.token_offsets[-1])

    def example_slice(self, e: int) -> slice:
        return slice(int(self.token_offsets[e]), int(self.token_offsets[e + 1]))


def encode_shard(data: ShardData, *, bits: int, value_dtype: str, shard_index: int, support: str) -> bytes:
    """Serialize a shard to safetensors bytes. Deterministic: the same ``data`` always gives the same bytes."""
    vdt = VALUE_DTYPES[value_dtype]
    n, k = data.support_ids.shape
    tensors = {
        "example_index": torch.from_numpy(np.asarray(data.example_index, dtype=np.int64)),
        "token_offsets": torch.from_numpy(np.asarray(data.token_offsets, dtype=np.int64)),
        "token_ids": torch.from_numpy(pack(data.token_ids.numpy(), bits)),
        "token_logprob": data.token_logprob.to(vdt).contiguous(),
        "spans": data.spans.to(torch.int32).contiguous(),
        "support_ids": torch.from_numpy(pack(data.support_ids.reshape(-1).numpy(), bits)),
        "support_logprobs": data.support_logprobs.to(vdt).contiguous(),
        "tail_logmass": data.tail_logmass.to(torch.float32).contiguous(),
    }
    if data.sample_counts is not None:
        if n and int(data.sample_counts.max()) > 255:
            raise ValueError("sample_counts above 255 do not fit uint8; lower cache.samples")
        tensors["sample_counts"] = data.sample_counts.to(torch.uint8).contiguous()
    info = {"format_version": FORMAT_VERSION, "shard": shard_index, "bits": bits, "k": k, "tokens": n,
            "support": support, "value_dtype": value_dtype}
    # ONE metadata key: safetensors keeps metadata in a hash map whose iteration order changes from process to
    # process, so several keys would make identical shards differ in their header bytes.
    return st_save(tensors, metadata={FORMAT_NAME: json.dumps(info, sort_keys=True)})


def decode_shard(raw: bytes, *, bits: int, k: int) -> ShardData:
    """Parse safetensors bytes written by :func:`encode_shard`."""
    t = st_load(raw)
    offsets = t["token_offsets"].numpy()
    n = int(offsets[-1]) if offsets.size else 0
    counts = t.get("sample_counts")
    return ShardData(
        example_index=t["example_index"].numpy(),
        token_offsets=offsets,
        token_ids=torch.from_numpy(unpack(t["token_ids"].numpy(), n, bits)),
        token_logprob=t["token_logprob"].float(),
        spans=t["spans"].long(),
        support_ids=torch.from_numpy(unpack(t["support_ids"].numpy(), n * k, bits)).reshape(n, k),
        support_logprobs=t["support_logprobs"].float(),
        tail_logmass=t["tail_logmass"],
        sample_counts=None if counts is None else counts.long(),
    )


def concat_examples(records: list[dict[str, torch.Tensor]], example_index: list[int]) -> ShardData:
    """Build a :class:`ShardData` from per-example records (keys as the ShardData per-token fields)."""
    lengths = [int(r["token_ids"].shape[0]) for r in records]
    offsets = np.zeros(len(records) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)

    def cat(key: str) -> torch.Tensor | None:
        if not records or records[0].get(key) is None:
            return None
        return torch.cat([r[key] for r in records])

    k = records[0]["support_ids"].shape[1] if records else 0
    empty = torch.zeros(0, k)
    return ShardData(
        example_index=np.asarray(example_index, dtype=np.int64), token_offsets=offsets,
        token_ids=cat("token_ids") if records else torch.zeros(0, dtype=torch.long),
        token_logprob=cat("token_logprob") if records else torch.zeros(0),
        spans=cat("spans") if records else torch.zeros(0, 2, dtype=torch.long),
        support_ids=cat("support_ids") if records else empty.long(),
        support_logprobs=cat("support_logprobs") if records else empty,
        tail_logmass=cat("tail_logmass") if records else torch.zeros(0),
        sample_counts=cat("sample_counts"),
    )
