"""On-policy mixing (GKD λ) and SeqKD: replace a batch's completions with samples from the student or the teacher.

The λ decision is a pure function of (seed, optimizer step, λ of the step): every process computes the same answer
without any communication, and a resumed run makes the same decisions as an uninterrupted one (unlike GKD's
per-process coin flip, which lets ranks diverge). λ itself is a constant or a schedule (:class:`LambdaController`):
ramps are functions of (step, total steps); the adaptive rule reads only losses summed over all processes and
folded in at the end of the previous step, and its state is saved in every checkpoint.

Same-tokenizer pairs train on the exact sampled ids. Cross-tokenizer pairs need one shared completion text: the
sample is decoded (``skip_special_tokens=False``) and BOTH models re-render prompt + text with their own template,
so alignment spans are exact. A sample that hit ``max_new_tokens`` without EOS gets no EOS target.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from dataclasses import dataclass, field
from typing import Any

import torch

from crossdistill.config import LambdaSchedule, OnPolicyConfig
from crossdistill.data.dataset import RenderedDataset, collate_pair
from crossdistill.data.render import IGNORE_INDEX, Rendered, render
from crossdistill.io import write_json
from crossdistill.models import generate


def rollout_seed(seed: int, step: int, process: int, micro: int) -> int:
    """Seed of the sampling RNG for one micro-batch of one optimizer step on one process."""
    digest = hashlib.sha256(f"crossdistill-rollout:{seed}:{step}:{process}:{micro}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def step_is_on_policy(seed: int, step: int, lmbda: float) -> bool:
    """GKD Algorithm 1's coin ``u ~ U(0,1), on-policy iff u < λ``, drawn from a RNG seeded by (seed, step).

    ``random.Random`` seeded with a string hashes it with SHA-512, so the draw is identical on every process and
    every platform, and independent of any other RNG use.
    """
    if lmbda <= 0.0:
        return False
    if lmbda >= 1.0:
        return True
    return random.Random(f"crossdistill-onpolicy:{seed}:{step}").random() < lmbda


def ramp_lmbda(schedule: LambdaSchedule, step: int, total_steps: int) -> float:
    """λ of a ``constant`` / ``linear`` / ``cosine`` schedule at optimizer step ``step`` (0-based) of ``total_steps``.

    The run's progress is ``step / (total_steps - 1)`` (0 at the first step, 1 at the last), so ``ramp_start=0,
    ramp_end=1`` gives exactly ``start`` at the first step and ``end`` at the last.
    """
    if schedule.kind == "constant" or schedule.end is None:
        return schedule.start
    progress = step / max(total_steps - 1, 1)
    u = min(max((progress - schedule.ramp_start) / (schedule.ramp_end - schedule.ramp_start), 0.0), 1.0)
    if schedule.kind == "cosine":
        u = 0.5 * (1.0 - math.cos(math.pi * u))
    return schedule.start + (schedule.end - schedule.start) * u


def adaptive_lmbda(schedule: LambdaSchedule, on_loss: float | None, off_loss: float | None) -> float:
    """The adaptive rule: λ from the gap ``g = on_loss / off_loss`` between the (moving-average) distillation loss on
    the student's own samples and on the off-policy completions.

    ``λ = lower + (upper - lower) * (1 - exp(-sensitivity * max(g - 1, 0)))``: no gap (the teacher finds the student's
    own samples no worse than the data) gives ``lower``, a growing gap pushes λ towards ``upper``. Before both losses
    have been measured, λ is ``start``.
    """
    if on_loss is None or off_loss is None:
        return schedule.start
    gap = on_loss / off_loss if off_loss > 0 else (1.0 if on_loss <= 0 else math.inf)
    rise = 1.0 - math.exp(-schedule.sensitivity * max(gap - 1.0, 0.0))
    return schedule.lower + (schedule.upper - schedule.lower) * rise


class LambdaController:
    """λ for every optimizer step, from ``onpolicy.lmbda`` (a constant or a :class:`LambdaSchedule`).

    ``value(step, total)`` is the scheduled λ of a step; :func:`step_is_on_policy` turns it into the step's decision.
    For the adaptive rule, the trainer calls :meth:`observe` once per step with the step's GLOBAL distillation loss
    (summed over micro-batches and processes, so equal on every process) before the next step's decision;
    :meth:`save` / :meth:`load` keep the moving averages in checkpoints so a resumed run continues exactly.
    """

    FILE = "onpolicy_lambda.json"
    """The controller's state in a checkpoint directory (adaptive rule only)."""

    def __init__(self, lmbda: float | LambdaSchedule):
        self.schedule = lmbda if isinstance(lmbda, LambdaSchedule) else None
        self.constant = float(lmbda) if self.schedule is None else None
        self.ema: dict[str, float | None] = {"on_policy": None, "off_policy": None}
        self.observed: dict[str, int] = {"on_policy": 0, "off_policy": 0}

    @property
    def adaptive(self) -> bool:
        return self.schedule is not None and self.schedule.kind == "adaptive"

    def value(self, step: int, total_steps: int) -> float:
        if self.schedule is None:
            return self.constant
        if self.adaptive:
            return adaptive_lmbda(self.schedule, self.ema["on_policy"], self.ema["off_policy"])
        return ramp_lmbda(self.schedule, step, total_steps)

    def observe(self, on_policy: bool, loss: float) -> None:
        """Fold one step's global distillation loss into the moving average of its kind (on- or off-policy)."""
        if not self.adaptive or not math.isfinite(loss):
            return
        key = "on_policy" if on_policy else "off_policy"
        prev, decay = self.ema[key], self.schedule.ema
        self.ema[key] = loss if prev is None else decay * prev + (1.0 - decay) * loss
        self.observed[key] += 1

    def state_dict(self) -> dict:
        return {"ema": dict(self.ema), "observed": dict(self.observed)}

    def load_state_dict(self, state: dict) -> None:
        self.ema = {k: (None if v is None else float(v)) for k, v in state["ema"].items()}
        self.observed = {k: int(v) for k, v in state["observed"].items()}

    def save(self, directory: str | os.PathLike) -> None:
        write_json(os.path.join(directory, self.FILE), self.state_dict(), sort_keys=True)

    def load(self, directory: str | os.PathLike) -> None:
        with open(os.path.join(directory, self.FILE), encoding="utf-8") as f:
            self.load_state_dict(json.load(f))


def sample(model: torch.nn.Module, tok: Any, prompts: list[list[int]], cfg: OnPolicyConfig,
           seed: int | None = None) -> list[tuple[list[int], bool]]:
    """Sample one completion per prompt (rendered prompt ids, kept exactly) at the SAMPLING temperature.

    With ``seed``, sampling runs under its own RNG state seeded by it (global RNG untouched), so a resumed run draws
    the same samples as an uninterrupted one whatever else consumed random numbers before.

    Returns ``[(completion ids without padding, ended_with_eos)]``; an EOS, when sampled, is the last id.
    """
    gens = generate(model, tok, prompts, max_new_tokens=cfg.max_new_tokens, do_sample=True,
                    temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k, seed=seed)
    return [(g.ids, g.ended) for g in gens]


def _exact(prompt_ids: list[int], completion: list[int], base: Rendered) -> Rendered:
    """A Rendered for sampled ids, same tokenizer (spans unused by same-vocabulary objectives: zero-width)."""
    ids = prompt_ids + completion
    labels = [IGNORE_INDEX] * len(prompt_ids) + completion
    return Rendered(ids, labels, len(prompt_ids), [(0, 0)] * len(completion), 0, base.prompt_text, "",
                    frozenset({"sampled_ids"}))


def _unended(r: Rendered, ended: bool) -> Rendered:
    """Drop the EOS target render() appended to a completion that did not end."""
    if ended or r.num_completion_tokens == 0 or not r.has_eos:
        return r
    labels = list(r.labels)
    labels[-1] = IGNORE_INDEX
    return Rendered(r.input_ids, labels, r.completion_start, r.spans, r.covered, r.prompt_text, r.completion,
                    r.flags | {"unended"})


@dataclass
class Rollouts:
    """Regenerates a batch's completions from the student (on-policy) or the teacher (SeqKD)."""

    dataset: RenderedDataset
    student_tok: Any
    teacher_tok: Any | None
    cfg: OnPolicyConfig
    separate_teacher: bool
    """The teacher renders with its own tokenizer/template (``teacher_*`` keys in batches)."""
    stats: dict[str, float] = field(default_factory=lambda: {"generated_tokens": 0.0, "samples": 0.0,
                                                             "ended": 0.0})
    server: Any = None
    """``onpolicy.backend: vllm``: the :class:`~crossdistill.train.vllm_rollouts.VLLMRollouts` that samples the
    student's completions (kept in sync with the student by the trainer); ``None``: HF ``generate``."""

    def regenerate(self, batch: dict[str, torch.Tensor], model: torch.nn.Module, by: str,
                   seed: int | None = None) -> dict[str, torch.Tensor]:
        """New batch with completions sampled by ``model`` (``by`` = ``"student"`` or ``"teacher"``).

        With ``seed``, sampling runs under its own RNG state seeded by it (global RNG untouched), so a resumed run
        draws the same samples as an uninterrupted one whatever else consumed random numbers before.
        """
        items = [self.dataset.items[int(i)] for i in batch["example_index"].tolist()]
        sampler_is_teacher = by == "teacher"
        tok = self.teacher_tok if sampler_is_teacher and self.teacher_tok is not None else self.student_tok
        base = [it.teacher if sampler_is_teacher and it.teacher is not None else it.student for it in items]
        prompts = [r.input_ids[: r.completion_start] for r in base]
        if self.server is not None and not sampler_is_teacher:
            samples = self.server.sample(prompts, self.cfg, seed)
        else:
            samples = sample(model, tok, prompts, self.cfg, seed)
        self.stats["samples"] += len(samples)
        self.stats["ended"] += sum(e for _, e in samples)
        students: list[Rendered] = []
        teachers: list[Rendered | None] = []
        for it, r, p, (ids, ended) in zip(items, base, prompts, samples):
            self.stats["generated_tokens"] += len(ids)
            if not self.separate_teacher:
                students.append(_exact(p, ids, r))
                teachers.append(None)
                continue
            text = tok.decode(ids[:-1] if ended else ids, skip_special_tokens=False,
                              clean_up_tokenization_spaces=False)
            students.append(_unended(render(self.student_tok, it.prompt, text), ended))
            teachers.append(_unended(render(self.teacher_tok, it.prompt, text), ended))
        s_pad = self.student_tok.pad_token_id
        t_pad = self.teacher_tok.pad_token_id if self.teacher_tok is not None else None
        return collate_pair(students, teachers, [int(i) for i in batch["example_index"].tolist()], s_pad, t_pad)
