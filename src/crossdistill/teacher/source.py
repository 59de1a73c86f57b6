"""A cache as the trainer's teacher: check once before training, then one sparse ``TeacherSignal`` per batch.

Wiring into a trainer (same tokenizer; objectives that accept ``StepContext.teacher_signal``)::

    teacher = CachedTeacher(cfg_path, examples=train_examples, student_tokenizer=student_tok,
                            policy="tail_bucket")                       # refuses a mismatched cache up front
    ...
    targets, mask = shift_targets(batch["labels"])
    ctx.teacher_signal = teacher.signal(batch["example_index"], targets, mask)   # rows in mask.nonzero() order

``example_index`` must index the examples the cache was built from (the cache's dataset order); a trainer that holds
out an eval split from the same file passes the original indices.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import torch

from crossdistill.teacher.reader import CacheReader


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

    def signal(self, example_index: torch.Tensor | Sequence[int], targets: torch.Tensor, mask: torch.Tensor) -> Any:
        """``TeacherSignal`` for the ``mask.sum()`` target positions of a batch, in row-major ``mask.nonzero()``
        order. ``targets``/``mask`` come from :func:`crossdistill.positions.shift_targets` of the batch labels; the
        target ids are compared with the cached ones (``CacheAlignmentError`` on any difference)."""
        index = [int(i) for i in (example_index.tolist() if torch.is_tensor(example_index) else example_index)]
        if len(index) != mask.shape[0]:
            raise ValueError(f"{len(index)} example indices for a batch of {mask.shape[0]} rows")
        per_row = [targets[b][mask[b]].cpu() for b in range(mask.shape[0])]
        signal = self.reader.signal_for(index, policy=self.policy, k=self.k, targets=per_row, estimate=self.estimate)
        if signal.ids.device != mask.device:
            from crossdistill.losses.signal import TeacherSignal

            signal = TeacherSignal(ids=signal.ids.to(mask.device), logprobs=signal.logprobs.to(mask.device),
                                   tail_logmass=signal.tail_logmass.to(mask.device), policy=signal.policy)
        return signal
