"""Set up and run one training job from a validated :class:`~crossdistill.config.DistillConfig`.

Order (cheap checks before expensive work, docs/design.md, contract 9): config validation -> tokenizers and pair
checks -> data read, rendered and checked -> models loaded -> ``DistillTrainer.train`` -> student saved (HF format +
manifest; a method with a saved state, e.g. DSKD's projectors, writes it beside the student, never inside the
student's weights) -> final validation -> one record appended to ``runs.jsonl``.
"""

from __future__ import annotations

import json
import re
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossdistill import models
from crossdistill.config import ConfigError, DistillConfig
from crossdistill.data.dataset import DistillCollator, RenderedDataset
from crossdistill.data.load import DataError, load_examples
from crossdistill.io import append_line, write_text
from crossdistill.methods import Method, cross_tokenizer_methods, get_method

RESOLVED_CONFIG = "resolved_config.yaml"
STUDENT_FORMAT_VERSION = 1


@dataclass
class Prepared:
    """Everything that exists before any weights load."""

    cfg: DistillConfig
    method: Method
    student_tok: Any
    teacher_tok: Any | None
    separate_teacher: bool
    """The teacher renders with its own tokenizer / template (``teacher_*`` batch keys)."""
    train: RenderedDataset
    eval: RenderedDataset | None
    data_manifest: Any = None
    """Manifest of a generated (hard-label) dataset, when ``data.train`` is one."""
    cached_teacher: Any = None
    """:class:`crossdistill.teacher.source.CachedTeacher` when ``teacher.cache`` is set (checked against the data
    and the tokenizers here, before any model loads)."""


def check_pair(cfg: DistillConfig, method: Method, student_tok: Any, teacher_tok: Any | None) -> bool:
    """Tokenizer-level checks; returns whether the teacher needs its own rendering."""
    if teacher_tok is None:
        return False
    # Same-vocabulary objectives need the same id <-> token-string map. Two loadings of one vocabulary may still differ
    # in normalizer / pre-tokenizer (transformers picks a tokenizer class from the model type), which only changes
    # how text is split; the teacher then scores the student's ids, which is what it does on-policy anyway.
    same_tok = student_tok.get_vocab() == teacher_tok.get_vocab()
    uses_vocab = method.needs_teacher and not method.cross_tokenizer
    if uses_vocab and not same_tok:
        cross = cross_tokenizer_methods()
        raise ConfigError(
            f"loss.name={cfg.loss.name!r} compares the two vocabularies id by id, but the student tokenizer "
            f"({cfg.student.tokenizer or cfg.student.model}, {len(student_tok)} tokens) and the teacher tokenizer "
            f"({cfg.teacher.tokenizer or cfg.teacher.model}, {len(teacher_tok)} tokens) have different vocabularies; "
            f"use a cross-tokenizer objective (loss.name one of {cross}) or a teacher with the student's tokenizer")
    same_template = getattr(student_tok, "chat_template", None) == getattr(teacher_tok, "chat_template", None)
    return method.cross_tokenizer or not (same_tok and same_template)


def _split(examples: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    n_eval = max(1, int(round(len(examples) * fraction)))
    return examples[:-n_eval], examples[-n_eval:]


def prepare(cfg: DistillConfig, progress: bool = True) -> Prepared:
    """Tokenizers, pair checks and rendered data; no model weights."""
    method = get_method(cfg.loss.name)
    student_tok = models.load_tokenizer(cfg.student, "student")
    teacher_tok = models.load_tokenizer(cfg.teacher, "teacher") if cfg.teacher is not None and (
        cfg.teacher.model or cfg.teacher.tokenizer) else None
    separate = check_pair(cfg, method, student_tok, teacher_tok)
    cache_path = cfg.teacher.cache if cfg.teacher is not None else None
    separate = separate and cache_path is None  # no teacher forward: the cache holds the teacher's rendering
    manifest = None
    if (Path(cfg.data.train) / "manifest.json").is_file():
        from crossdistill.manifest import Manifest

        manifest = Manifest.read(cfg.data.train)
        if manifest.kind != "dataset":
            raise DataError(f"data.train={cfg.data.train!r} holds a {manifest.kind!r} artifact, not a generated "
                            "dataset; point data.train at the output of `crossdistill generate`")
    examples = load_examples(cfg.data.train, cfg.data.format, cfg.data.max_examples)
    if cfg.data.eval:
        train_ex, eval_ex = examples, load_examples(cfg.data.eval, cfg.data.format)
    else:
        train_ex, eval_ex = _split(examples, cfg.data.eval_fraction)
    cached = None
    if cache_path is not None:
        from crossdistill.teacher.reader import CacheError
        from crossdistill.teacher.source import CachedTeacher

        # ALL loaded examples: the cache's fingerprint covers the whole file and the train split is its prefix, so
        # RenderedDataset indices are cache indices. Raises ManifestMismatchError for another dataset / tokenizer.
        # Cross-tokenizer methods align by the cached character spans, so any student tokenizer goes.
        try:
            cached = CachedTeacher(cache_path, examples=examples,
                                   student_tokenizer=None if method.cross_tokenizer else student_tok,
                                   teacher_tokenizer=teacher_tok, policy=cfg.teacher.missing_mass)
        except CacheError as err:  # a missing or truncated shard: found before any weights load
            raise ConfigError(f"teacher.cache={cache_path!r} is not a usable teacher cache: {err}") from None
    t_tok = teacher_tok if separate else None
    train = RenderedDataset(train_ex, student_tok, t_tok, cfg.data.max_length, "data.train", progress)
    evald = RenderedDataset(eval_ex, student_tok, t_tok, cfg.data.max_length, "data.eval", progress) if eval_ex \
        else None
    if separate and method.needs_teacher and not method.cross_tokenizer:
        for i, it in enumerate(train.items):  # same tokenizer, other template: completions must tokenize alike
            s, t = it.student, it.teacher
            if s.input_ids[s.completion_start:] != t.input_ids[t.completion_start:]:
                raise DataError(f"data.train example {i}: the completion tokenizes differently after the student's "
                                "and the teacher's prompts; use a cross-tokenizer objective")
    return Prepared(cfg, method, student_tok, teacher_tok, separate, train, evald, manifest, cached)


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The highest ``checkpoint-N`` that has its trainer state (written after weights and optimizer)."""
    root = Path(output_dir)
    if not root.is_dir():
        return None
    found = []
    for p in root.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", p.name)
        if m and p.is_dir() and (p / "trainer_state.json").is_file():
            found.append((int(m.group(1)), p))
    return str(max(found)[1]) if found else None


def training_arguments(cfg: DistillConfig):
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    return TrainingArguments(
        output_dir=t.output_dir, seed=t.seed, data_seed=t.seed, max_steps=t.max_steps,
        num_train_epochs=t.num_epochs, per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler, max_grad_norm=t.max_grad_norm, optim=t.optim,
        logging_steps=t.logging_steps, eval_strategy="steps" if t.eval_steps else "no", eval_steps=t.eval_steps,
        save_strategy="steps" if t.save_steps else "no", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        report_to=list(t.report_to) or "none", remove_unused_columns=False, dataloader_num_workers=t.dataloader_workers,
        disable_tqdm=not t.progress_bar, use_cpu=cfg.student.device == "cpu", average_tokens_across_devices=False,
        include_num_input_tokens_seen="no", ddp_find_unused_parameters=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def _write_resolved(cfg: DistillConfig) -> None:
    write_text(Path(cfg.train.output_dir) / RESOLVED_CONFIG, cfg.to_yaml())


def _student_manifest(p: Prepared):
    from crossdistill.version import __version__
    from crossdistill.manifest import Manifest, dataset_fingerprint, text_hash, tokenizer_hash

    cfg = p.cfg
    toks = {"student": p.student_tok, **({"teacher": p.teacher_tok} if p.teacher_tok is not None else {})}
    return Manifest(kind="student", format_version=STUDENT_FORMAT_VERSION, tool_version=__version__,
                    teacher=(cfg.teacher.model or cfg.teacher.cache) if cfg.teacher else None,
                    tokenizer_hashes={k: tokenizer_hash(v) for k, v in toks.items()},
                    chat_templates={k: text_hash(getattr(v, "chat_template", None)) for k, v in toks.items()},
                    temperatures={"distillation": cfg.loss.temperature, "sampling": cfg.onpolicy.temperature},
                    dataset_fingerprint=dataset_fingerprint({"p": it.prompt, "c": it.completion}
                                                            for it in p.train.items),
                    extra={"mode": cfg.mode, "loss": cfg.loss.name, "lmbda": cfg.onpolicy.lmbda})


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Append ``record`` to the runs file as one canonical JSON line (a reader never sees half a record)."""
    append_line(path, json.dumps(record, sort_keys=True, default=str))


def runs_file(cfg: DistillConfig) -> Path:
    return Path(cfg.train.runs_file) if cfg.train.runs_file else Path(cfg.train.output_dir).parent / "runs.jsonl"


@contextmanager
def quiet_weight_bars():
    """Hide Transformers' own per-file bars ("Loading weights", "Writing model shards") for the duration: at every
    checkpoint they would interleave with the training bar, which stays (it is plain tqdm)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def run_training(cfg: DistillConfig, resume: bool = False, callbacks: list | None = None,
                 prepared: Prepared | None = None) -> dict[str, Any]:
    """Train, save the student, append the run record; returns the record."""
    with quiet_weight_bars():
        return _run_training(cfg, resume, callbacks, prepared)


def _run_training(cfg: DistillConfig, resume: bool, callbacks: list | None, prepared: Prepared | None
                  ) -> dict[str, Any]:
    import transformers

    from crossdistill.train.trainer import DistillTrainer

    p = prepared or prepare(cfg, progress=cfg.train.progress_bar)
    args = training_arguments(cfg)
    if args.process_index == 0:
        _write_resolved(cfg)
    transformers.set_seed(cfg.train.seed)
    student = models.load_model(cfg.student, "student")
    student = models.apply_lora(student, cfg.student)
    teacher = None
    if cfg.teacher is not None and cfg.teacher.cache is None and (p.method.needs_teacher or cfg.onpolicy.seq_kd
                                                                  or p.eval is not None):
        teacher = models.freeze_teacher(models.load_model(cfg.teacher, "teacher", device=args.device))
    resume_from = last_complete_checkpoint(cfg.train.output_dir) if resume else None
    if resume and resume_from is None:
        warnings.warn(f"--resume: no complete checkpoint in {cfg.train.output_dir}; starting from scratch",
                      stacklevel=2)
    trainer = DistillTrainer(
        model=student, args=args, train_dataset=p.train, eval_dataset=p.eval,
        data_collator=DistillCollator(p.student_tok.pad_token_id,
                                      p.teacher_tok.pad_token_id if p.separate_teacher else None),
        callbacks=callbacks, method=p.method, dcfg=cfg, teacher=teacher, student_tok=p.student_tok,
        teacher_tok=p.teacher_tok, train_data=p.train, eval_data=p.eval, separate_teacher=p.separate_teacher,
        cached_teacher=p.cached_teacher)
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_state()  # trainer_state.json (log history) next to the outputs
    save_student(trainer, p)
    metrics = trainer.validation_metrics("final")
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "method": cfg.method or f"{cfg.mode}:{cfg.loss.name}",
        "mode": cfg.mode, "loss": cfg.loss.name, "seed": cfg.train.seed, "student": cfg.student.model,
        "teacher": (cfg.teacher.model or cfg.teacher.cache) if cfg.teacher else None,
        "output_dir": cfg.train.output_dir,
        "steps": trainer.state.global_step, "train_seconds": round(time.time() - start, 3),
        "student_non_embedding_params": models.non_embedding_params(trainer.model),
        "student_tokens": int(trainer.state.num_input_tokens_seen),
        "student_loss": metrics.get("final_student_loss"), "student_bpb": metrics.get("final_student_bpb"),
        "teacher_loss": metrics.get("final_teacher_loss"), "teacher_bpb": metrics.get("final_teacher_bpb"),
        "config": cfg.to_dict(),
    }
    if trainer.args.process_index == 0:
        append_record(runs_file(cfg), record)
    return record


def save_student(trainer, p: Prepared) -> None:
    """Student in HF format (LoRA merged) + tokenizer + manifest, loadable by ``AutoModelForCausalLM``."""
    out = p.cfg.train.output_dir
    model = trainer.accelerator.unwrap_model(trainer.model)
    trainer.accelerator.wait_for_everyone()
    if hasattr(model, "merge_and_unload"):
        if trainer.args.process_index == 0:
            import copy

            copy.deepcopy(model).merge_and_unload().save_pretrained(out)
    else:
        trainer.save_model(out)  # collective under FSDP / ZeRO-3: every process calls it
    if trainer.args.process_index == 0:
        p.student_tok.save_pretrained(out)
        _student_manifest(p).write(out)
        state = getattr(trainer, "method_state", None)
        if state is not None and state.file:
            state.save(out)  # e.g. projectors.safetensors (atomic), a separate file from model.safetensors
    trainer.accelerator.wait_for_everyone()


def batch_loss(p: Prepared, student: Any, teacher: Any | None, indices: list[int],
               state_from: str | Path | None = None) -> float:
    """The training objective (weighted, normalized by the batch's own target count) of the training examples
    ``indices``, off-policy, without gradients: a fixed-batch probe for tests and benchmarks.

    A method with per-run state (e.g. DSKD's projectors) gets it built as the trainer builds it at step 0; with
    ``state_from`` (a run's output or checkpoint directory) the trained state is loaded from there."""
    import torch

    from crossdistill.train.trainer import MethodRunner, build_method_state

    collate = DistillCollator(p.student_tok.pad_token_id, p.teacher_tok.pad_token_id if p.separate_teacher else None)
    batch = collate([p.train[i] for i in indices])
    state = build_method_state(p.method, p.cfg, student, teacher, p.student_tok, p.teacher_tok)
    if state is not None:
        if state_from is not None:
            state.load(state_from)
        state.to(next(student.parameters()).device)
    runner = MethodRunner(p.method, p.cfg, teacher, p.student_tok, p.teacher_tok, cached=p.cached_teacher,
                          state=state)
    with torch.no_grad():
        return float(runner.objective(student, batch).loss)
