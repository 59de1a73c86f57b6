"""Set up and run one training job from a validated :class:`~crossdistill.config.DistillConfig`.

Order (cheap checks before expensive work, docs/design.md, contract 9): config validation -> tokenizers and pair
checks -> data read, rendered and checked -> models loaded -> ``DistillTrainer.train`` -> student saved (HF format +
manifest; a method with a saved state, e.g. DSKD's projectors, writes it beside the student, never inside the
student's weights) -> final validation -> one record appended to ``runs.jsonl``.
"""

from __future__ import annotations

import json
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossdistill import models
from crossdistill.config import ConfigError, DistillConfig
from crossdistill.data.dataset import DistillCollator, RenderedDataset
from crossdistill.data.load import DataError, load_examples
from crossdistill.io import append_line, fsync_dir, write_json, write_text
from crossdistill.manifest import MANIFEST_NAME
from crossdistill.methods import Method, get_method
from crossdistill.train import identity
from crossdistill.train.pairing import check_pair

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
    served_teacher: Any = None
    """:class:`crossdistill.teacher.server.ServedTeacher` when ``teacher.server`` is set (connected and checked here:
    model name, k, tokenizer, sequence length — before any model loads)."""
    extra_teachers: list = field(default_factory=list)
    """With ``teachers:``, every teacher after the first (:class:`crossdistill.train.multi_teacher.ExtraTeacher`)."""
    rollout_server: Any = None
    """:class:`crossdistill.train.vllm_rollouts.VLLMRollouts` when ``onpolicy.backend`` is ``vllm`` (checked here)."""


def teacher_reference(cfg: DistillConfig) -> str | None:
    """What records and manifests name as the teacher: its model, its cache, or its server (URL and served model;
    never a key)."""
    t = cfg.teacher
    if t is None:
        return None
    if t.server is not None and not t.model:
        return f"{t.server.url} ({t.server.model or 'served model'})"
    return t.model or t.cache


def _split(examples: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    from crossdistill.data.load import split_eval  # the one rule: `crossdistill eval RECIPE` holds out the same

    return split_eval(examples, fraction)


def prepare(cfg: DistillConfig, progress: bool = True) -> Prepared:
    """Tokenizers, pair checks and rendered data; no model weights."""
    cfg = cfg.with_first_teacher()  # several teachers: the first is the run's teacher, the others are added below
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
    served = None
    if cfg.teacher is not None and cfg.teacher.server is not None:
        from crossdistill.teacher.server import ServedTeacher

        # The longest teacher rendering of the data must fit the server (on-policy samples are checked per request).
        longest = max(len((it.teacher or it.student).input_ids) for it in train.items)
        served = ServedTeacher.connect(cfg.teacher.server, teacher_tok, policy=cfg.teacher.missing_mass,
                                       longest=longest)
    extra = []
    if cfg.teachers:
        from crossdistill.train.multi_teacher import prepare_extra_teachers

        extra = prepare_extra_teachers(cfg, method, student_tok, train_ex, progress)
    rollouts = None
    if cfg.onpolicy.backend == "vllm":
        from crossdistill.train.vllm_rollouts import VLLMRollouts

        rollouts = VLLMRollouts(cfg.onpolicy.server, student_tok, cfg.train.output_dir)
        rollouts.check()
    return Prepared(cfg, method, student_tok, teacher_tok, separate, train, evald, manifest, cached, served, extra,
                    rollout_server=rollouts)


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


def _on_cpu(cfg: DistillConfig) -> bool:
    """The student trains on the CPU: asked for, or no accelerator (transformers refuses ``bf16`` on a machine
    without a GPU unless ``use_cpu`` is set)."""
    import torch

    if cfg.student.device is not None:
        return cfg.student.device == "cpu"
    return not (torch.cuda.is_available() or getattr(torch, "xpu", None) and torch.xpu.is_available()
                or torch.backends.mps.is_available())


def training_arguments(cfg: DistillConfig):
    import torch
    from transformers import TrainingArguments

    t = cfg.train
    return TrainingArguments(
        output_dir=t.output_dir, seed=t.seed, data_seed=t.seed, max_steps=t.max_steps,
        num_train_epochs=t.num_epochs, per_device_train_batch_size=t.per_device_batch_size,
        per_device_eval_batch_size=t.per_device_batch_size, gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio,
        lr_scheduler_type=t.lr_scheduler, max_grad_norm=t.max_grad_norm, optim=t.optim, bf16=t.bf16,
        logging_steps=t.logging_steps, eval_strategy="steps" if t.eval_steps else "no", eval_steps=t.eval_steps,
        save_strategy="steps" if t.save_steps else "no", save_steps=t.save_steps, save_total_limit=t.save_total_limit,
        report_to=list(t.report_to) or "none", remove_unused_columns=False, dataloader_num_workers=t.dataloader_workers,
        disable_tqdm=not t.progress_bar, use_cpu=_on_cpu(cfg), average_tokens_across_devices=False,
        include_num_input_tokens_seen="no", ddp_find_unused_parameters=False,
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def _write_resolved(cfg: DistillConfig) -> None:
    write_text(Path(cfg.train.output_dir) / RESOLVED_CONFIG, cfg.to_yaml())


def _student_manifest(p: Prepared):
    from crossdistill.manifest import Manifest, dataset_fingerprint, text_hash, tokenizer_hash
    from crossdistill.version import __version__

    cfg = p.cfg
    toks = {"student": p.student_tok, **({"teacher": p.teacher_tok} if p.teacher_tok is not None else {})}
    toks.update({f"teacher@{e.name}": e.tokenizer for e in p.extra_teachers})  # several teachers: every one
    return Manifest(kind="student", format_version=STUDENT_FORMAT_VERSION, tool_version=__version__,
                    teacher=teacher_reference(cfg),
                    tokenizer_hashes={k: tokenizer_hash(v) for k, v in toks.items()},
                    chat_templates={k: text_hash(getattr(v, "chat_template", None)) for k, v in toks.items()},
                    temperatures={"distillation": cfg.loss.temperature, "sampling": cfg.onpolicy.temperature},
                    dataset_fingerprint=dataset_fingerprint({"p": it.prompt, "c": it.completion}
                                                            for it in p.train.items),
                    extra={"mode": cfg.mode, "loss": cfg.loss.name, "lmbda": cfg.to_dict()["onpolicy"]["lmbda"]})


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
                 prepared: Prepared | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Train, save the student, append the run record; returns the record.

    ``train.output_dir`` must be empty unless ``resume`` (continue the run in it: its checkpoint must come from the
    same config, see :mod:`crossdistill.train.identity`; a finished run is returned as it is, nothing trains) or
    ``overwrite`` (its previous contents are deleted first)."""
    if cfg.chain is not None:
        raise ConfigError("this config has a chain: section (several runs); run it with crossdistill.train.chain."
                          "run_chain (what `crossdistill train` does), or remove chain: for one run")
    cfg = cfg.with_first_teacher()  # several teachers: the first is the run's teacher (train.multi_teacher)
    plan = identity.plan_output(cfg, resume, overwrite, last_complete_checkpoint)
    if plan.finished is not None:
        _ensure_recorded(cfg, plan.finished)
        return plan.finished
    with quiet_weight_bars():
        return _run_training(cfg, plan.resume_from if resume else None, callbacks, prepared, overwrite)


def _ensure_recorded(cfg: DistillConfig, record: dict[str, Any]) -> None:
    """A finished run whose record did not reach ``runs.jsonl`` (killed in between) gets it now, once."""
    path = runs_file(cfg)
    key = (record.get("time"), record.get("output_dir"))
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                old = json.loads(line)
            except ValueError:
                continue
            if (old.get("time"), old.get("output_dir")) == key:
                return
    append_record(path, record)


def _run_training(cfg: DistillConfig, resume_from: str | None, callbacks: list | None, prepared: Prepared | None,
                  overwrite: bool) -> dict[str, Any]:
    import transformers

    from crossdistill.train.trainer import DistillTrainer

    p = prepared or prepare(cfg, progress=cfg.train.progress_bar)
    args = training_arguments(cfg)
    with args.main_process_first(desc="output_dir"):  # one process clears and writes; the others wait for it
        if args.process_index == 0:
            if overwrite:
                identity.clear_output(cfg)
            _write_resolved(cfg)
    transformers.set_seed(cfg.train.seed)
    student = models.load_model(cfg.student, "student")
    student = models.apply_lora(student, cfg.student)
    teacher = None
    if cfg.teacher is not None and cfg.teacher.cache is None and cfg.teacher.server is None and (
            p.method.needs_teacher or cfg.onpolicy.seq_kd or p.eval is not None):
        teacher = models.freeze_teacher(models.load_model(cfg.teacher, "teacher", device=args.device))
    trainer = DistillTrainer(
        model=student, args=args, train_dataset=p.train, eval_dataset=p.eval,
        data_collator=DistillCollator(p.student_tok.pad_token_id,
                                      p.teacher_tok.pad_token_id if p.separate_teacher else None),
        callbacks=callbacks, method=p.method, dcfg=cfg, teacher=teacher, student_tok=p.student_tok,
        teacher_tok=p.teacher_tok, train_data=p.train, eval_data=p.eval, separate_teacher=p.separate_teacher,
        cached_teacher=p.cached_teacher, served_teacher=p.served_teacher, rollout_server=p.rollout_server,
        fingerprint=identity.fingerprint(cfg))
    if p.extra_teachers:
        from crossdistill.train.multi_teacher import attach_teachers

        attach_teachers(trainer, p)
    start = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    trainer.save_state()  # trainer_state.json (log history) next to the outputs
    save_student(trainer, p)
    metrics = trainer.validation_metrics("final")
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "method": cfg.method or f"{cfg.mode}:{cfg.loss.name}",
        "mode": cfg.mode, "loss": cfg.loss.name, "seed": cfg.train.seed, "student": cfg.student.model,
        "teacher": teacher_reference(cfg),
        "output_dir": cfg.train.output_dir,
        "steps": trainer.state.global_step, "train_seconds": round(time.time() - start, 3),
        "student_non_embedding_params": models.non_embedding_params(trainer.model),
        "student_tokens": int(trainer.state.num_input_tokens_seen),
        "student_loss": metrics.get("final_student_loss"), "student_bpb": metrics.get("final_student_bpb"),
        "teacher_loss": metrics.get("final_teacher_loss"), "teacher_bpb": metrics.get("final_teacher_bpb"),
        "config": cfg.to_dict(),
    }
    if trainer.args.process_index == 0:
        write_json(Path(cfg.train.output_dir) / identity.RECORD_FILE, record, sort_keys=True, default=str)
        append_record(runs_file(cfg), record)
    return record


STUDENT_PARTIAL = ".student-partial"
"""Where the final student is written before its files move into ``train.output_dir``."""


def save_student(trainer, p: Prepared) -> None:
    """Student in HF format (LoRA merged) + tokenizer + manifest, loadable by ``AutoModelForCausalLM``.

    Everything is written into a temporary subdirectory first and then moved into ``train.output_dir`` file by
    file with the manifest last, after the old manifest is removed: a kill during the save never leaves a directory
    that looks complete (a manifest beside half-written weights) or a truncated file."""
    import shutil

    out = Path(p.cfg.train.output_dir)
    tmp = out / STUDENT_PARTIAL
    model = trainer.accelerator.unwrap_model(trainer.model)
    if trainer.args.process_index == 0:
        shutil.rmtree(tmp, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()
    if hasattr(model, "merge_and_unload"):
        if trainer.args.process_index == 0:
            import copy

            copy.deepcopy(model).merge_and_unload().save_pretrained(tmp)
    else:
        trainer.save_model(str(tmp))  # collective under FSDP / ZeRO-3: every process calls it
    if trainer.args.process_index == 0:
        p.student_tok.save_pretrained(tmp)
        state = getattr(trainer, "method_state", None)
        if state is not None and state.file:
            state.save(tmp)  # e.g. projectors.safetensors, a separate file from model.safetensors
        identity.write_fingerprint(tmp, p.cfg)
        _student_manifest(p).write(tmp)
        (out / MANIFEST_NAME).unlink(missing_ok=True)
        for f in sorted(tmp.iterdir(), key=lambda f: f.name == MANIFEST_NAME):  # the manifest moves last
            os.replace(f, out / f.name)
        fsync_dir(out)
        tmp.rmdir()
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
                          state=state, served=p.served_teacher)
    with torch.no_grad():
        return float(runner.objective(student, batch).loss)
