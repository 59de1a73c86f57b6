"""The demo's teacher side: the packaged teacher fine-tuned once on the task (cached by hash), its greedy answers
(hard labels) and its top-k cache over the training completions."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossdistill.demo.budget import MAX_LENGTH, DemoBudget
from crossdistill.io import publish_dir, write_json


def teacher_inference_dtype(budget: DemoBudget) -> str:
    """dtype of the teacher's inference passes (hard labels, the cache): ``budget.teacher_dtype``, where ``auto`` is
    bf16 on hardware with fast bf16 matmuls (:func:`crossdistill.models.fast_bf16`), else fp32."""
    if budget.teacher_dtype != "auto":
        return budget.teacher_dtype
    from crossdistill.models import fast_bf16

    return "bfloat16" if fast_bf16() else "float32"


def generate_hard_labels(teacher: str, train: Path, out: Path, budget: DemoBudget, seed: int) -> Path:
    """The teacher's greedy answers to the training prompts (``crossdistill generate``)."""
    from crossdistill.config import ConfigError, config_from_dict
    from crossdistill.generation import run_generate

    dtype = teacher_inference_dtype(budget)
    cfg = config_from_dict({"student": {"model": teacher, "dtype": dtype},
                            "teacher": {"model": teacher, "dtype": dtype},
                            "data": {"train": str(train)},
                            "generate": {"output": str(out), "max_new_tokens": budget.gen_tokens, "temperature": 0.0,
                                         "batch_size": 64},
                            "train": {"seed": seed}})
    try:
        return run_generate(cfg)  # the same prompts, teacher and settings as a previous run: reused as it is
    except ConfigError:  # another seed or budget wrote it (a bad setting fails again below, with its message)
        return run_generate(cfg, overwrite=True)


def build_teacher_cache(teacher: str, train: Path, out: Path, budget: DemoBudget, progress: bool) -> Path:
    """The teacher's top-``budget.cache_k`` over the training completions (``crossdistill cache``). A complete cache
    of the same teacher, data and settings (its manifest: the dataset's fingerprint, k, dtype, ...) is verified and
    reused; one of another seed or budget is replaced."""
    from crossdistill.config import cache_build_from_dict
    from crossdistill.teacher.reader import CacheReader
    from crossdistill.teacher.writer import build_cache

    cfg = cache_build_from_dict({"teacher": teacher, "data": str(train), "output": str(out), "k": budget.cache_k,
                                 "max_length": MAX_LENGTH, "teacher_dtype": teacher_inference_dtype(budget),
                                 "batch_size": budget.batch_size})
    try:
        build_cache(cfg, progress=progress)
    except FileExistsError:  # the cache of another seed or budget
        build_cache(cfg, progress=progress, overwrite=True)
    stats = CacheReader(out).stats()
    print(f"cache: {stats['tokens']:,} teacher tokens, top-{stats['k']} + tail, {stats['bytes_per_token']:.0f} "
          f"bytes/token, mean mass outside the top-{stats['k']} {stats['mean_tail_mass']:.3f}: {out}")
    return out


TEACHER_SEED = 4_242
"""Random stream of the teacher's fine-tuning examples (the same teacher for every demo seed)."""
TEACHER_LR = 1e-4


def teacher_examples(budget: DemoBudget) -> list[Any]:
    """The examples the demo teacher is fine-tuned on (none when ``budget.teacher_finetune`` is 0)."""
    from crossdistill import tasks

    if budget.teacher_finetune <= 0:
        return []
    return tasks.make_examples(budget.teacher_finetune, TEACHER_SEED, style=budget.task_style)


def fine_tune_teacher(base: str, examples: Sequence[Any], budget: DemoBudget,
                      progress: bool = True) -> tuple[str, bool]:
    """The packaged teacher fine-tuned on ``examples`` (CE on the worked answers), trained once and cached under
    ``<cache root>/models/finetuned-<sha256 of base, data and recipe>`` with its provenance in ``manifest.json``;
    returns ``(directory, reused)``. The training engine does the work: this is ``crossdistill train`` with
    ``loss.name: ce`` on the teacher itself."""
    from crossdistill import tasks
    from crossdistill.assets import cache_root
    from crossdistill.config import config_from_dict
    from crossdistill.train.run import run_training

    recipe = {"base": Path(base).name, "questions": hashlib.sha256("\n".join(
        e.question + "\t" + e.completion for e in examples).encode()).hexdigest(), "epochs":
              budget.teacher_finetune_epochs, "batch": budget.batch_size, "lr": TEACHER_LR, "bf16": True, "v": 1}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]
    target = cache_root() / "models" / f"finetuned-{key}"
    if (target / "manifest.json").is_file():
        return str(target), True
    work = target.parent / f".{target.name}.work"
    data = tasks.write_jsonl(work / "train.jsonl", (e.record() for e in examples))
    start = time.perf_counter()
    with publish_dir(target) as tmp:
        cfg = config_from_dict({
            "student": {"model": base}, "data": {"train": str(data), "eval_fraction": 0.0, "max_length": MAX_LENGTH},
            "loss": {"name": "ce"},
            "train": {"output_dir": str(tmp), "seed": 0, "num_epochs": budget.teacher_finetune_epochs,
                      "per_device_batch_size": budget.batch_size, "learning_rate": TEACHER_LR, "bf16": True,
                      "warmup_ratio": 0.1, "lr_scheduler": "cosine", "weight_decay": 0.0, "logging_steps": 4,
                      "report_to": [], "progress_bar": progress, "runs_file": str(work / "runs.jsonl")}})
        record = run_training(cfg, overwrite=True)
        write_json(tmp / "manifest.json", {**recipe, "examples": len(examples), "steps": record["steps"],
                                           "seconds": round(time.perf_counter() - start, 1),
                                           "what": "the demo teacher: the packaged model fine-tuned on the task"})
    shutil.rmtree(work, ignore_errors=True)
    return str(target), False
