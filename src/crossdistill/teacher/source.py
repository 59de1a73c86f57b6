"""A cache as the trainer's teacher: check once before training, then one sparse ``TeacherSignal`` per batch.

Wiring into a trainer (same tokenizer; objectives that accept ``StepContext.teacher_signal``; a student with another
tokenizer uses :meth:`CachedTeacher.cross_tokenizer` instead)::

    teacher = CachedTeacher(cfg_path, examples=train_examples, student_tokenizer=student_tok,
                            policy="tail_bucket")                       # refuses a mismatched cache up front
    ...
    targets, mask = shift_targets(batch["labels"])
    ctx.teacher_signal = teacher.signal(batch["example_index"], targets, mask)   # rows in mask.nonzero() order

``example_index`` must index the examples the cache was built from (the cache's dataset order); a trainer that holds
out an eval split from the same file passes the original indices.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crossdistill.teacher.reader import (
    CacheChecksumError,
    CacheIncompleteError,
    CacheReader,
    CacheTruncatedError,
    to_signal,
)

DAMAGED = (CacheChecksumError, CacheTruncatedError, CacheIncompleteError)
"""What a shard met mid-training can raise; the trainer gets it with the repair and resume commands named."""


def _mid_training(err: Exception) -> Exception:
    """``err`` (a damaged shard met during training) with what to do next: repair the cache, then resume."""
    return type(err)(f"{err}. Then continue the run where its last checkpoint left it: `crossdistill train RECIPE "
                     "--resume`")


@dataclass
class CrossTokenizerTeacher:
    """What a cross-tokenizer objective reads from a cache for one batch (see :meth:`CachedTeacher.cross_tokenizer`)."""

    signal: Any
    """Sparse ``TeacherSignal`` over the teacher rows (with the exact log-prob of each actual teacher token)."""
    targets: torch.Tensor
    """``[B, 1 + n_max]`` teacher token predicted by each row (``-100`` off the grid)."""
    mask: torch.Tensor
    """``[B, 1 + n_max]`` bool, the rows that exist."""
    alignment: Any
    """:class:`~crossdistill.align.spans.BatchAlignment` of the student's target rows with these rows."""


class CachedTeacher:
    """A checked :class:`CacheReader` that answers batches of the trainer's layout."""

    def __init__(self, path: str | Path, *, examples: Sequence[dict[str, Any]] | None = None,
                 student_tokenizer: Any = None, teacher_tokenizer: Any = None, k: int | None = None,
                 policy: str = "renormalize", estimate: bool = False, max_open_shards: int = 4):
        """
        Args:
            examples: the normalized examples the indices refer to; their fingerprint must match the cache's.
            student_tokenizer: must have the teacher's vocabulary (same-vocabulary objectives).
            teacher_tokenizer: when the recipe names a teacher, its tokenizer must be the one the cache used.
            k: use the first k entries of a top-k cache (exact top-k, the rest goes to the tail).
            policy: missing-mass policy of the signals (``renormalize`` | ``tail_bucket``).
            estimate: sampled caches: use the RS-KD count estimate instead of exact log-probs.
        """
        self.reader = CacheReader(path, max_open_shards=max_open_shards)
        self.reader.check_against(examples=examples, teacher_tokenizer=teacher_tokenizer,
                                  student_tokenizer=student_tokenizer, same_vocabulary=student_tokenizer is not None,
                                  k=k)
        self.k, self.policy, self.estimate = k, policy, estimate

    @property
    def manifest(self):
        return self.reader.manifest

    @property
    def vocab_size(self) -> int | None:
        """The teacher's vocabulary size recorded when the cache was written."""
        return self.reader.manifest.extra.get("vocab_size")

    def signal(self, example_index: torch.Tensor | Sequence[int], targets: torch.Tensor, mask: torch.Tensor) -> Any:
        """``TeacherSignal`` for the ``mask.sum()`` target positions of a batch, in row-major ``mask.nonzero()``
        order. ``targets``/``mask`` come from :func:`crossdistill.positions.shift_targets` of the batch labels; the
        target ids are compared with the cached ones (``CacheAlignmentError`` on any difference)."""
        index = [int(i) for i in (example_index.tolist() if torch.is_tensor(example_index) else example_index)]
        if len(index) != mask.shape[0]:
            raise ValueError(f"{len(index)} example indices for a batch of {mask.shape[0]} rows")
        per_row = [targets[b][mask[b]].cpu() for b in range(mask.shape[0])]
        try:
            signal = self.reader.signal_for(index, policy=self.policy, k=self.k, targets=per_row,
                                            estimate=self.estimate)
        except DAMAGED as err:
            raise _mid_training(err) from None
        return signal.to(mask.device)

    def cross_tokenizer(self, example_index: torch.Tensor | Sequence[int], student_batch: dict[str, torch.Tensor],
                        student_mask: torch.Tensor) -> CrossTokenizerTeacher:
        """The cached teacher of a batch of ANOTHER tokenizer, aligned to the student by character spans.

        The cache holds, per completion token of the teacher's own rendering, its character span in the completion
        text: exactly what :class:`~crossdistill.align.spans.BatchAlignment` needs from the teacher side. The teacher
        rows are laid out as a ``[B, 1 + n_max]`` target grid (row c of example b predicts its completion token c), so
        the signal's rows are in that grid's ``mask.nonzero()`` order.

        Args:
            example_index: ``[B]`` dataset indices of the batch (the cache's order).
            student_batch: the collated student batch (``spans``, ``completion_start``, ``num_completion``).
            student_mask: ``[B, T_s]`` target mask from ``shift_targets`` of the student labels.
        """
        from crossdistill.align.spans import BatchAlignment
        from crossdistill.positions import IGNORE_INDEX

        index = [int(i) for i in (example_index.tolist() if torch.is_tensor(example_index) else example_index)]
        if len(index) != student_mask.shape[0]:
            raise ValueError(f"{len(index)} example indices for a batch of {student_mask.shape[0]} rows")
        try:
            examples = [self.reader.example(i) for i in index]
        except DAMAGED as err:
            raise _mid_training(err) from None
        counts = [int(e.token_ids.numel()) for e in examples]
        dev = student_mask.device
        t_mask = torch.zeros(len(index), 1 + max(counts, default=0), dtype=torch.bool)
        t_targets = torch.full(t_mask.shape, IGNORE_INDEX, dtype=torch.long)
        for b, (e, n) in enumerate(zip(examples, counts)):
            t_mask[b, :n] = True
            t_targets[b, :n] = e.token_ids
        n_s = student_batch["num_completion"].tolist()
        s_spans = student_batch["spans"].cpu().numpy()
        alignment = BatchAlignment.build([s_spans[b, : n_s[b]] for b in range(len(index))],
                                         [e.spans.numpy() for e in examples],
                                         student_batch["completion_start"].tolist(), [1] * len(index),
                                         student_mask, t_mask)
        signal = to_signal(examples, policy=self.policy, k=self.k, estimate=self.estimate)
        return CrossTokenizerTeacher(signal.to(dev), t_targets.to(dev), t_mask.to(dev), alignment.to(dev))
