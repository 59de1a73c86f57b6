"""Read a teacher cache: check it, stream its shards, and hand out :class:`TeacherSignal` sparse signals.

Opening a cache is cheap and catches the common failures before any training starts: a missing manifest (an
unfinished run), a missing or truncated shard (sizes are in the manifest), an unknown format version, and — through
:meth:`CacheReader.check` — a cache made from another dataset, teacher tokenizer or support. Each shard's sha256 is
verified when the shard is loaded, so a flipped byte is reported with the shard's name, never silently trained on.

Only ``max_open_shards`` decoded shards are held in memory at a time (streaming in order, or random access by
dataset index with a small LRU).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crossdistill.manifest import (
    MANIFEST_NAME,
    Manifest,
    ManifestMismatchError,
    dataset_fingerprint,
    tokenizer_hash,
    vocab_hash,
)
from crossdistill.teacher.format import FORMAT_VERSION, ShardData, decode_shard


class CacheError(ValueError):
    """A cache that cannot be used as it is (the message names the file and the fix)."""


class CacheIncompleteError(CacheError):
    """No manifest (the run that made it did not finish) or a shard listed in the manifest is missing."""


class CacheTruncatedError(CacheError):
    """A shard's size differs from the size recorded in the manifest."""


class CacheChecksumError(CacheError):
    """A shard's bytes do not match the sha256 recorded in the manifest (corruption)."""


def repair_hint(path: str | Path) -> str:
    """How to repair a damaged cache: the command that rebuilds exactly its damaged shards."""
    return (f"repair it with `crossdistill cache RECIPE` using the recipe (or the teacher=... data=... "
            f"output={path} settings) that built it: a rerun verifies every shard and rebuilds only the damaged ones; "
            f"`crossdistill cache-info {path} --verify` lists them")


class CacheAlignmentError(CacheError):
    """The cached teacher tokens of an example differ from the tokens the trainer expects at those positions."""


@dataclass
class CachedExample:
    """The cached teacher signal of one example (n predicted completion tokens, k entries)."""

    index: int
    """Dataset index."""
    token_ids: torch.Tensor
    """int64 ``[n]`` teacher token at each predicted completion position (the target)."""
    token_logprob: torch.Tensor
    """float32 ``[n]`` teacher log-prob of that token."""
    spans: torch.Tensor
    """int64 ``[n, 2]`` (start, end) characters of each token in the completion text."""
    support_ids: torch.Tensor
    """int64 ``[n, k]``."""
    support_logprobs: torch.Tensor
    """float32 ``[n, k]``."""
    tail_logmass: torch.Tensor
    """float32 ``[n]``."""
    sample_counts: torch.Tensor | None = None
    """int64 ``[n, k]`` draws per id (sampled support only)."""

    def signal(self, policy: str = "renormalize", k: int | None = None, estimate: bool = False) -> Any:
        """This example's :class:`crossdistill.losses.signal.TeacherSignal` (see :func:`to_signal`)."""
        return to_signal([self], policy=policy, k=k, estimate=estimate)


def to_signal(examples: Sequence[CachedExample], policy: str = "renormalize", k: int | None = None,
              estimate: bool = False) -> Any:
    """Concatenate cached examples (in order) into one sparse ``TeacherSignal`` of ``sum(n)`` positions.

    Args:
        k: keep only the first ``k`` entries of a top-k support (still the exact top-k, as entries are sorted); the
            dropped entries' mass moves into the tail.
        estimate: sampled supports only — use the RS-KD estimate (``log(count / draws)``, tail ``-inf``) instead
            of the exact teacher log-probs of the sampled ids.
    """
    from crossdistill.losses.signal import TeacherSignal

    ids = torch.cat([e.support_ids for e in examples])
    logprobs = torch.cat([e.support_logprobs for e in examples])
    tail = torch.cat([e.tail_logmass for e in examples])
    if estimate:
        if examples and examples[0].sample_counts is None:
            raise CacheError("estimate=True needs a cache written with support: sampled")
        from crossdistill.losses.signal import LOG_ZERO

        counts = torch.cat([e.sample_counts for e in examples]).float()
        # Undrawn slots get a finite log-zero so 0 * log 0 stays 0 in every divergence.
        logprobs = torch.log(counts / counts.sum(-1, keepdim=True)).clamp(min=LOG_ZERO)
        tail = torch.full_like(tail, LOG_ZERO)
    if k is not None and k < ids.shape[1]:
        if examples and examples[0].sample_counts is not None:
            raise CacheError("k can only shrink a top-k support; a sampled support is used whole")
        tail = torch.logaddexp(tail, logprobs[:, k:].logsumexp(-1))
        ids, logprobs = ids[:, :k], logprobs[:, :k]
    elif k is not None and k > ids.shape[1]:
        raise CacheError(f"requested k = {k} but the cache holds only k = {ids.shape[1]}; rebuild it with a larger k")
    return TeacherSignal(ids=ids.contiguous(), logprobs=logprobs.contiguous(), tail_logmass=tail, policy=policy,
                         target_logprobs=torch.cat([e.token_logprob for e in examples]).float())


class CacheReader:
    """A teacher cache on disk. ``CacheReader(path)`` checks the manifest and every shard's presence and size."""

    def __init__(self, path: str | Path, *, verify: bool = True, max_open_shards: int = 2, check_sizes: bool = True):
        """``check_sizes=False`` skips the per-shard presence and size checks (``cache-info --verify`` reports every
        damaged shard through :meth:`verify_report` instead of stopping at the first)."""
        self.path = Path(path)
        self.verify = verify
        self.max_open_shards = max_open_shards
        if not (self.path / MANIFEST_NAME).exists():
            hint = (" A run is in progress or was interrupted: rerun `crossdistill cache` with the same recipe to "
                    "finish it." if (self.path / ".plan.json").exists() else "")
            raise CacheIncompleteError(f"{self.path} is not a complete cache: it has no {MANIFEST_NAME}.{hint}")
        try:
            self.manifest = Manifest.read(self.path)
        except (ValueError, TypeError) as err:  # not JSON, or fields this version does not know
            raise CacheError(f"{self.path / MANIFEST_NAME} cannot be read ({err}); rebuild the cache with "
                             "`crossdistill cache RECIPE --overwrite`") from None
        if self.manifest.kind != "cache":
            raise CacheError(f"{self.path} holds a {self.manifest.kind!r}, not a teacher cache")
        if self.manifest.format_version != FORMAT_VERSION:
            raise CacheError(f"{self.path} has cache format version {self.manifest.format_version}; this crossdistill "
                             f"reads version {FORMAT_VERSION}. Rebuild the cache or install the matching version.")
        extra = self.manifest.extra
        try:
            self.bits: int = extra["bits"]
            self.k: int = int(self.manifest.k)
            self.support: str = extra["support"]
            self.num_examples: int = extra["num_examples"]
            self.files = self.manifest.files
            names = [(r["name"], r["bytes"], r["examples"]) for r in self.files]
        except (KeyError, TypeError, ValueError) as err:
            raise CacheError(f"{self.path / MANIFEST_NAME} lacks {err} or holds a wrong value; rebuild the cache "
                             "with `crossdistill cache RECIPE --overwrite`") from None
        for name, expected, _ in names if check_sizes else []:
            shard = self.path / name
            if not shard.exists():
                raise CacheIncompleteError(f"shard {shard} listed in the manifest is missing; copy it back, or "
                                           + repair_hint(self.path))
            size = shard.stat().st_size
            if size != expected:
                raise CacheTruncatedError(f"shard {shard} has {size} bytes but the manifest records {expected}"
                                          " (truncated or overwritten); restore it, or " + repair_hint(self.path))
        self._starts = [r["examples"][0] for r in self.files]
        self._open: OrderedDict[int, ShardData] = OrderedDict()

    # ------------------------------------------------------------------------------------------------- checks
    def check(self, expected: Manifest | dict[str, Any]) -> None:
        """Refuse the cache if its manifest differs from ``expected`` (only the fields ``expected`` sets)."""
        self.manifest.check(expected, what=f"teacher cache {self.path}")

    def expected(self, *, examples: Sequence[dict[str, Any]] | None = None, teacher_tokenizer: Any = None,
                 support: str | None = None) -> dict[str, Any]:
        """An ``expected`` dict for :meth:`check` from what the trainer has at hand."""
        exp: dict[str, Any] = {"kind": "cache"}
        if examples is not None:
            exp["dataset_fingerprint"] = dataset_fingerprint(examples)
        if teacher_tokenizer is not None:
            exp["tokenizer_hashes"] = {"teacher": tokenizer_hash(teacher_tokenizer)}
        if support is not None:
            exp["extra"] = {"support": support}
        return exp

    def check_against(self, *, examples: Sequence[dict[str, Any]] | None = None, teacher_tokenizer: Any = None,
                      student_tokenizer: Any = None, same_vocabulary: bool = False, k: int | None = None) -> None:
        """The checks a training run makes before its first step.

        Args:
            examples: the normalized training examples (must be the ones the cache was made from, in order).
            teacher_tokenizer: the tokenizer of the teacher the config names (if any).
            student_tokenizer: the student's tokenizer; with ``same_vocabulary`` it must BE the teacher's.
            k: the support size the objective needs (at most the cached k).
        """
        self.check(self.expected(examples=examples, teacher_tokenizer=teacher_tokenizer))
        if same_vocabulary and student_tokenizer is not None:
            # The vocabularies must match id for id; how each side splits text is checked per example against the
            # cached tokens (signal_for(targets=...)), so a different normalizer is fine as long as the ids agree.
            want = vocab_hash(student_tokenizer)
            have = self.manifest.tokenizer_hashes.get("teacher_vocab")
            if have != want:
                raise ManifestMismatchError(
                    [f"tokenizer_hashes['teacher_vocab']: cache has {str(have)[:16]!r}, the student's vocabulary is "
                     f"{want[:16]!r}; a same-vocabulary loss needs the teacher's vocabulary — use a cross-tokenizer "
                     "objective (uld, gold_hybrid) instead"], what=f"teacher cache {self.path}")
        if k is not None and k > self.k:
            raise CacheError(f"the objective needs k = {k} but the cache at {self.path} holds k = {self.k}; lower k "
                             "or rebuild the cache with a larger cache_build.k")

    # ------------------------------------------------------------------------------------------------- shards
    @property
    def num_shards(self) -> int:
        return len(self.files)

    def load_shard(self, i: int) -> ShardData:
        """Shard ``i`` decoded (checksum verified when ``verify``); the last few are kept open."""
        if i in self._open:
            self._open.move_to_end(i)
            return self._open[i]
        record = self.files[i]
        shard = self.path / record["name"]
        try:
            raw = shard.read_bytes()
        except FileNotFoundError:
            raise CacheIncompleteError(f"shard {shard} listed in the manifest is missing; copy it back, or "
                                       + repair_hint(self.path)) from None
        if len(raw) != record["bytes"]:
            raise CacheTruncatedError(f"shard {shard} has {len(raw)} bytes but the manifest records "
                                      f"{record['bytes']} (truncated or overwritten); restore it, or "
                                      + repair_hint(self.path))
        if self.verify and hashlib.sha256(raw).hexdigest() != record["sha256"]:
            raise CacheChecksumError(f"shard {shard} is corrupted: its sha256 differs from the manifest's; restore "
                                     "it from a copy, or " + repair_hint(self.path))
        try:
            data = decode_shard(raw, bits=self.bits, k=self.k)
        except Exception as err:  # a malformed header or tensor (only possible when verify=False)
            raise CacheChecksumError(f"shard {shard} cannot be decoded ({type(err).__name__}: {err}); "
                                     + repair_hint(self.path)) from None
        self._open[i] = data
        while len(self._open) > self.max_open_shards:
            self._open.popitem(last=False)
        return data

    def verify_all(self) -> None:
        """Verify the checksum of every shard (reads the whole cache once, one shard at a time); raise the first
        damaged shard's :class:`CacheError`."""
        for i in range(self.num_shards):
            self.load_shard(i)
            self._open.pop(i, None)

    def verify_report(self) -> list[tuple[str, str]]:
        """``[(shard name, what is wrong)]`` for every damaged shard (missing, wrong size, wrong sha256, or bytes
        that do not decode); empty when the cache is intact. Never raises on a malformed file."""
        bad = []
        for record in self.files:
            shard = self.path / record["name"]
            if not shard.is_file():
                bad.append((record["name"], "missing"))
                continue
            size = shard.stat().st_size
            if size != record["bytes"]:
                bad.append((record["name"], f"{size} bytes, the manifest records {record['bytes']}"))
                continue
            raw = shard.read_bytes()
            if hashlib.sha256(raw).hexdigest() != record["sha256"]:
                bad.append((record["name"], "sha256 differs from the manifest's (corrupted)"))
                continue
            try:
                decode_shard(raw, bits=self.bits, k=self.k)
            except Exception as err:
                bad.append((record["name"], f"does not decode ({type(err).__name__})"))
        return bad

    def _example_from(self, data: ShardData, e: int) -> CachedExample:
        s = data.example_slice(e)
        return CachedExample(
            index=int(data.example_index[e]), token_ids=data.token_ids[s], token_logprob=data.token_logprob[s],
            spans=data.spans[s], support_ids=data.support_ids[s], support_logprobs=data.support_logprobs[s],
            tail_logmass=data.tail_logmass[s],
            sample_counts=None if data.sample_counts is None else data.sample_counts[s])

    def __len__(self) -> int:
        return self.num_examples

    def __iter__(self) -> Iterator[CachedExample]:
        """Every example in dataset order, streaming one shard at a time."""
        for i in range(self.num_shards):
            data = self.load_shard(i)
            for e in range(len(data.example_index)):
                yield self._example_from(data, e)

    def example(self, index: int) -> CachedExample:
        """The cached example with dataset index ``index``."""
        if not 0 <= index < self.num_examples:
            raise IndexError(f"example {index} is outside the cache ({self.num_examples} examples)")
        import bisect

        i = bisect.bisect_right(self._starts, index) - 1
        data = self.load_shard(i)
        return self._example_from(data, index - self.files[i]["examples"][0])

    def signal_for(self, indices: Sequence[int], *, policy: str = "renormalize", k: int | None = None,
                   targets: Sequence[torch.Tensor] | None = None, estimate: bool = False) -> Any:
        """Sparse ``TeacherSignal`` for the target positions of examples ``indices``, concatenated in order.

        The row order is example by example, positions ascending — the row-major ``mask.nonzero()`` order of a
        collated same-tokenizer batch. ``targets`` (one int64 ``[n_e]`` tensor per example: the student's target ids
        at its target positions) are compared with the cached tokens, which catches any misalignment.
        """
        examples = [self.example(int(i)) for i in indices]
        if targets is not None:
            for ex, tgt in zip(examples, targets, strict=True):
                tgt = torch.as_tensor(tgt).reshape(-1).long()
                if tgt.shape != ex.token_ids.shape or not torch.equal(tgt, ex.token_ids):
                    raise CacheAlignmentError(
                        f"example {ex.index}: the trainer has {tgt.numel()} target tokens, the cache "
                        f"{ex.token_ids.numel()}" + ("" if tgt.shape != ex.token_ids.shape else " with different ids")
                        + "; the cache was rendered differently (template, max_length or tokenizer): rebuild it with "
                        "the training recipe's data settings")
        return to_signal(examples, policy=policy, k=k, estimate=estimate)

    # -------------------------------------------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Size, tokens, bytes per token, mean tail mass and coverage (reads only small tensors via mmap)."""
        from safetensors import safe_open

        shard_bytes = sum(r["bytes"] for r in self.files)
        tokens = sum(r["tokens"] for r in self.files)
        examples = sum(r["examples"][1] - r["examples"][0] for r in self.files)
        tail_sum, empty = 0.0, 0
        for r in self.files:
            try:
                with safe_open(str(self.path / r["name"]), framework="pt") as f:
                    tail_sum += float(f.get_tensor("tail_logmass").double().exp().sum())
                    offsets = f.get_tensor("token_offsets")
                    empty += int((offsets[1:] == offsets[:-1]).sum())
            except Exception as err:  # SafetensorError on a damaged header, OSError on a missing file
                raise CacheChecksumError(f"shard {self.path / r['name']} cannot be read ({type(err).__name__}: "
                                         f"{err}); " + repair_hint(self.path)) from None
        total = shard_bytes + (self.path / MANIFEST_NAME).stat().st_size
        return {
            "path": str(self.path), "teacher": self.manifest.teacher, "k": self.k, "support": self.support,
            "value_dtype": self.manifest.extra["value_dtype"], "id_bits": self.bits,
            "vocab_size": self.manifest.extra["vocab_size"], "temperature": self.manifest.temperatures,
            "examples": examples, "examples_with_tokens": examples - empty, "tokens": tokens, "shards": self.num_shards,
            "bytes": total, "bytes_per_token": total / max(tokens, 1),
            "shard_bytes_per_token": shard_bytes / max(tokens, 1),
            "mean_tail_mass": tail_sum / max(tokens, 1), "coverage": examples / max(self.num_examples, 1),
        }
