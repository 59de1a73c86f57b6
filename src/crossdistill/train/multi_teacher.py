"""Several teachers at once (``teachers:``): each with its own tokenizer and chat template, aligned to the student
independently, combined over one global normalization.

The objective of a micro-batch is ``Σ_i weight_i · objective_i``, where ``objective_i`` is exactly the single-teacher
objective with teacher i (the method's terms with their weights and T², divided by the step's global count of the
STUDENT's target positions — one count for every teacher, since every teacher scores the same student tokens). The
student runs one forward per micro-batch; each teacher gets the batch with its own rendering of the same examples
(``teacher_*`` keys) and, for methods with a per-run state (GOLD's vocabulary map), its own state.

The first teacher is the ordinary one of the run (``teacher`` of :meth:`DistillConfig.with_first_teacher`): the
trainer's batches carry its rendering, validation reports its loss, and records name it as ``teacher``. The others
are prepared here: :func:`prepare_extra_teachers` (tokenizers and renderings, before any weights load) and
:func:`attach_teachers` (their models, and the combined runner in the trainer).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import torch

from crossdistill.config import ConfigError, DistillConfig, TeacherConfig
from crossdistill.config.teachers import teacher_names
from crossdistill.data.dataset import TEACHER_PREFIX, RenderedDataset, collate_rendered
from crossdistill.data.load import DataError
from crossdistill.data.render import Rendered
from crossdistill.losses.objective import Objective
from crossdistill.models import hidden_states


def teacher_config(entry: Any) -> TeacherConfig:
    """A ``teachers:`` entry as a plain :class:`TeacherConfig` (without its name and weight)."""
    return TeacherConfig(**{f.name: getattr(entry, f.name) for f in fields(TeacherConfig)})


@dataclass
class ExtraTeacher:
    """A teacher after the first, prepared before any weights load."""

    name: str
    weight: float
    cfg: TeacherConfig
    tokenizer: Any
    separate: bool
    """It renders with its own tokenizer / template (``teacher_*`` keys); otherwise it reads the student's batch."""
    renders: list[Rendered] | None
    """Its rendering of every training example (by dataset index), when ``separate``."""


def prepare_extra_teachers(cfg: DistillConfig, method: Any, student_tok: Any, train_examples: list[dict],
                           progress: bool = True) -> list[ExtraTeacher]:
    """Tokenizers, pair checks and renderings of ``cfg.teachers[1:]`` (the first is the run's ordinary teacher)."""
    from crossdistill import models
    from crossdistill.train.pairing import check_pair

    out = []
    names = teacher_names(cfg)
    for i, entry in enumerate(cfg.teachers[1:], start=1):
        tcfg = teacher_config(entry)
        tok = models.load_tokenizer(tcfg, "teacher")
        try:
            separate = check_pair(replace(cfg, teacher=tcfg), method, student_tok, tok)
        except ConfigError as err:
            raise ConfigError(f"teachers[{i}] ({names[i]}): {err}") from None
        renders = None
        if separate:
            data = RenderedDataset(train_examples, student_tok, tok, cfg.data.max_length, f"data.train ({names[i]})",
                                   progress)
            if method.needs_teacher and not method.cross_tokenizer:
                for j, it in enumerate(data.items):
                    s, t = it.student, it.teacher
                    if s.input_ids[s.completion_start:] != t.input_ids[t.completion_start:]:
                        raise DataError(f"data.train example {j}: the completion tokenizes differently after the "
                                        f"student's prompt and teacher {names[i]!r}'s; use a cross-tokenizer objective")
            renders = [it.teacher for it in data.items]
        out.append(ExtraTeacher(names[i], entry.weight, tcfg, tok, separate, renders))
    return out


TEACHER_PAD_NONE: int = -1
"""Marks a part that shares the student's rendering: its batch drops the first teacher's ``teacher_*`` keys."""


@dataclass
class TeacherPart:
    """One teacher inside :class:`MultiTeacherRunner`."""

    name: str
    weight: float
    runner: Any
    """Its :class:`~crossdistill.train.trainer.MethodRunner`."""
    renders: list[Rendered] | None = None
    """Its own renderings by example index, or ``None`` to use the batch as it comes (the first teacher)."""
    pad_id: int | None = None

    def batch(self, inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.renders is None and self.pad_id is None:
            return inputs
        out = {k: v for k, v in inputs.items() if not k.startswith(TEACHER_PREFIX)}
        if self.renders is not None:
            rows = [self.renders[int(i)] for i in inputs["example_index"].tolist()]
            dev = inputs["input_ids"].device
            out.update({TEACHER_PREFIX + k: v.to(dev) for k, v in collate_rendered(rows, self.pad_id).items()})
        return out


class MultiTeacherRunner:
    """The trainer's runner for several teachers: one student forward, every teacher's objective over the same
    global count, combined with the teachers' weights. Term names get ``@<teacher>`` (logged ``loss_kd@a``)."""

    def __init__(self, parts: list[TeacherPart]):
        self.parts = parts

    def __getattr__(self, name: str) -> Any:  # teacher_forward, params, state ...: the first teacher's
        return getattr(self.__dict__["parts"][0].runner, name)

    def objective(self, model: torch.nn.Module, inputs: dict[str, torch.Tensor], count: Any = None,
                  hidden: torch.Tensor | None = None, on_policy: bool = False) -> Objective:
        hidden = hidden_states(model, inputs) if hidden is None else hidden
        loss, terms, weighted, divisor = None, {}, {}, 1.0
        for part in self.parts:
            obj = part.runner.objective(model, part.batch(inputs), count, hidden=hidden, on_policy=on_policy)
            contribution = part.weight * obj.loss
            loss = contribution if loss is None else loss + contribution
            terms.update({f"{k}@{part.name}": v for k, v in obj.terms.items()})
            weighted.update({f"{k}@{part.name}": part.weight * v for k, v in obj.weighted.items()})
            divisor = obj.num_targets
        return Objective(loss=loss, terms=terms, weighted=weighted, num_targets=divisor)


def build_runner(first: Any, first_name: str, first_weight: float, extra: list[ExtraTeacher],
                 extra_models: list[torch.nn.Module], student: torch.nn.Module, method: Any, dcfg: Any,
                 student_tok: Any) -> MultiTeacherRunner:
    """The combined runner from the first teacher's ready runner and the other teachers' models."""
    from crossdistill.train.trainer import MethodRunner, build_method_state

    parts = [TeacherPart(first_name, first_weight, first)]
    for e, model in zip(extra, extra_models):
        state = build_method_state(method, dcfg, student, model, student_tok, e.tokenizer)
        if state is not None and (state.parameters() or state.file):
            raise ConfigError(f"loss.name={method.name!r} keeps a trained or saved per-run state (e.g. projectors) "
                              "for its teacher; several teachers do not support it yet: train from one teacher, or "
                              "choose a method without one (uld, gold_hybrid, a same-vocabulary divergence)")
        if state is not None:
            state.to(next(student.parameters()).device)
        runner = MethodRunner(method, dcfg, model, student_tok, e.tokenizer, state=state)
        parts.append(TeacherPart(e.name, e.weight, runner, e.renders,
                                 e.tokenizer.pad_token_id if e.separate else TEACHER_PAD_NONE))
    return MultiTeacherRunner(parts)


def load_extra_teachers(extra: list[ExtraTeacher], device: Any) -> list[torch.nn.Module]:
    from crossdistill import models

    return [models.freeze_teacher(models.load_model(e.cfg, "teacher", device=device)) for e in extra]


def attach_teachers(trainer: Any, p: Any) -> None:
    """Load the other teachers and give the trainer the combined runner (after it built the first's)."""
    cfg = p.cfg
    if trainer.method_state is not None and (trainer.method_state.parameters() or trainer.method_state.file):
        raise ConfigError(f"loss.name={cfg.loss.name!r} keeps a trained or saved per-run state for its teacher; "
                          "several teachers do not support it yet: train from one teacher")
    extra_models = load_extra_teachers(p.extra_teachers, trainer.args.device)
    names = teacher_names(cfg)
    trainer.runner = build_runner(trainer.runner, names[0], cfg.teachers[0].weight, p.extra_teachers, extra_models,
                                  trainer.accelerator.unwrap_model(trainer.model), p.method, cfg, p.student_tok)


def batch_loss(p: Any, student: torch.nn.Module, teachers: list[torch.nn.Module], indices: list[int]) -> float:
    """The several-teacher objective of the training examples ``indices`` (off-policy, no gradients, normalized by
    the batch's own count): the probe :func:`crossdistill.train.run.batch_loss` is for one teacher."""
    from crossdistill.data.dataset import DistillCollator
    from crossdistill.train.trainer import MethodRunner, build_method_state

    cfg = p.cfg
    collate = DistillCollator(p.student_tok.pad_token_id, p.teacher_tok.pad_token_id if p.separate_teacher else None)
    batch = collate([p.train[i] for i in indices])
    state = build_method_state(p.method, cfg, student, teachers[0], p.student_tok, p.teacher_tok)
    first = MethodRunner(p.method, cfg, teachers[0], p.student_tok, p.teacher_tok, state=state)
    runner = build_runner(first, teacher_names(cfg)[0], cfg.teachers[0].weight, p.extra_teachers, teachers[1:],
                          student, p.method, cfg, p.student_tok)
    with torch.no_grad():
        return float(runner.objective(student, batch).loss)
