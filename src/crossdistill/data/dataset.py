"""Rendered training examples and their collation into a student batch (+ a teacher batch for another tokenizer).

Every example is rendered once, up front, with each model's own chat template (:mod:`crossdistill.data.render`), so
bad examples fail before training starts. A batch holds only tensors (accelerate shards it like any other):

* ``input_ids``, ``attention_mask``, ``labels`` (unshifted, ``-100`` on prompt and padding), ``spans``,
  ``completion_start``, ``num_completion`` — the student's rendering;
* ``teacher_*`` — the same keys for the teacher's own rendering, when the teacher renders differently;
* ``example_index`` ``[B]`` — index into :class:`RenderedDataset`, so on-policy rollouts can find the prompt.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from crossdistill.data.load import DataError, prompt_messages
from crossdistill.data.render import Rendered, collate_rendered, render

TEACHER_PREFIX = "teacher_"


@dataclass
class RenderedExample:
    """One example rendered for the student and (when it renders differently) for the teacher."""

    prompt: Any
    """The prompt as given (messages or text; ``""`` for plain-text examples)."""
    completion: str
    """The shared completion text."""
    student: Rendered
    """The student's rendering."""
    teacher: Rendered | None
    """The teacher's rendering, ``None`` when it is identical to the student's."""


def render_example(prompt: Any, completion: str, student_tok: Any, teacher_tok: Any | None, max_length: int,
                   where: str = "example") -> tuple[RenderedExample, bool]:
    """Render one example for both models; returns ``(example, truncated)``. Raises :class:`DataError` when the
    example has no completion tokens or its prompt alone exceeds ``max_length``."""
    if completion == "":
        raise DataError(f"{where} has an empty completion: no completion tokens to train on; remove the example or "
                        "give it a completion")
    out = []
    truncated = False
    for role, tok in (("student", student_tok), ("teacher", teacher_tok)):
        if tok is None:
            out.append(None)
            continue
        r = render(tok, prompt, completion, max_length=max_length)
        if "prompt_truncated" in r.flags:
            raise DataError(f"{where}: the {role}'s prompt alone is longer than data.max_length={max_length} tokens, "
                            "so no completion token fits; raise data.max_length or shorten the prompt")
        if sum(1 for y in r.labels[1:] if y != -100) == 0:
            raise DataError(f"{where}: no completion tokens for the {role} (the completion {completion[:40]!r} "
                            "renders to no target); remove the example or give it a real completion")
        truncated |= "truncated" in r.flags
        out.append(r)
    return RenderedExample(prompt, completion, out[0], out[1]), truncated


class RenderedDataset(Dataset):
    """Examples rendered for the student (and the teacher, when its rendering differs)."""

    def __init__(self, examples: Sequence[dict[str, Any]], student_tok: Any, teacher_tok: Any | None,
                 max_length: int, name: str = "data", progress: bool = True):
        from tqdm.auto import tqdm

        self.items: list[RenderedExample] = []
        n_trunc = 0
        for i, ex in enumerate(tqdm(examples, desc=f"render {name}", disable=not progress or len(examples) < 256)):
            prompt, completion = prompt_messages(ex)
            item, truncated = render_example("" if prompt is None else prompt, completion, student_tok, teacher_tok,
                                             max_length, where=f"{name} example {i}")
            self.items.append(item)
            n_trunc += truncated
        if not self.items:
            raise DataError(f"{name} has no examples; give at least one")
        if n_trunc:
            warnings.warn(f"{n_trunc} of {len(self.items)} {name} examples are longer than data.max_length="
                          f"{max_length} tokens and were truncated (no EOS target); raise data.max_length to keep "
                          "them whole", stacklevel=2)
        self.num_truncated = n_trunc

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"index": i, "item": self.items[i]}


@dataclass
class DistillCollator:
    """Pads rendered examples into the batch layout of the module docstring."""

    pad_id: int
    """Student pad token id."""
    teacher_pad_id: int | None = None
    """Teacher pad token id (when the teacher renders separately)."""

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        idx = [int(f["index"]) for f in features]
        items = [f["item"] for f in features]
        return collate_pair([it.student for it in items], [it.teacher for it in items], idx, self.pad_id,
                            self.teacher_pad_id)


def collate_pair(student: list[Rendered], teacher: list[Rendered | None], index: list[int], pad_id: int,
                 teacher_pad_id: int | None) -> dict[str, torch.Tensor]:
    """Student batch + ``teacher_``-prefixed teacher batch (when any teacher rendering is given)."""
    batch = collate_rendered(student, pad_id)
    if any(t is not None for t in teacher):
        if any(t is None for t in teacher):
            raise ValueError("either every example or none has a separate teacher rendering")
        tb = collate_rendered(teacher, teacher_pad_id)  # type: ignore[arg-type]
        batch.update({TEACHER_PREFIX + k: v for k, v in tb.items()})
    batch["example_index"] = torch.tensor(index, dtype=torch.long)
    return batch


def split_teacher(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
    """The teacher's batch (un-prefixed keys), or ``None`` when the teacher shares the student's rendering."""
    if TEACHER_PREFIX + "input_ids" not in batch:
        return None
    return {k[len(TEACHER_PREFIX):]: v for k, v in batch.items() if k.startswith(TEACHER_PREFIX)}
