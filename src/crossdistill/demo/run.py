"""``crossdistill demo``: the whole pipeline on a real small teacher, on a CPU, in minutes.

This module runs the stages in order (:func:`run_demo`) and holds the command line; the package's docstring
(:mod:`crossdistill.demo`) says what each stage does and why.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from crossdistill.demo.budget import BUDGETS, DemoBudget
from crossdistill.demo.methods import (
    CACHED_METHODS,
    DEFAULT_METHODS,
    DESCRIPTIONS,
    METHODS,
    RECOMMENDED,
    SOFT_METHODS,
    WHY_RECOMMENDED,
    MethodRun,
    method_config,
    train_method,
)
from crossdistill.demo.student import build_student
from crossdistill.demo.teacher import build_teacher_cache, fine_tune_teacher, generate_hard_labels, teacher_examples
from crossdistill.io import write_json


class Stages:
    """Numbered stage banners with wall-clock timings."""

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.perf_counter()
        self.times: dict[str, float] = {}
        self._name: str | None = None
        self._start = 0.0

    def __call__(self, name: str) -> None:
        self.close()
        self.n += 1
        self._name, self._start = name, time.perf_counter()
        print(f"\n[{self.n}/{self.total}] {name}  (t={self._start - self.t0:.0f}s)", flush=True)

    def close(self) -> None:
        if self._name is not None:
            self.times[self._name] = round(time.perf_counter() - self._start, 1)
            self._name = None


def run_demo(out: Path, budget: DemoBudget, *, teacher: str | None = None,
             methods: Sequence[str] = DEFAULT_METHODS,
             seed: int = 0, progress: bool = True, on_table: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns the results dict also written to ``out/results.json``.

    Args:
        teacher: a teacher directory (default: the packaged SmolLM2-135M-Instruct, converted and cached).
        methods: a subset of :data:`METHODS` (default :data:`DEFAULT_METHODS`, all of them).
    """
    from crossdistill import tasks
    from crossdistill.config import ConfigError
    from crossdistill.demo.report import lead_table, write_report
    from crossdistill.evaluation import evaluate_models, load_pretrained

    if budget.task_style not in tasks.STYLES:
        raise ConfigError(f"task_style={budget.task_style!r}: choose from {list(tasks.STYLES)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"methods={list(methods)!r}: unknown {unknown}; choose from {list(METHODS)}")
    out.mkdir(parents=True, exist_ok=True)
    use_cache = budget.cache_k > 0 and any(m in CACHED_METHODS for m in methods)
    finetune = budget.teacher_finetune > 0
    stage = Stages(5 + len(methods) + use_cache + finetune)

    stage("teacher: find the packaged SmolLM2-135M-Instruct, convert once, reuse the cache")
    if teacher is None:
        from crossdistill.assets import (
            SMOLLM2_135M_INSTRUCT,
            convert_gguf,
            converted_dir,
            find_packaged_file,
            is_converted,
        )

        gguf = find_packaged_file(SMOLLM2_135M_INSTRUCT)
        cached = is_converted(converted_dir(gguf))
        teacher = str(convert_gguf(gguf))
        print(f"teacher: {teacher} ({'cached' if cached else 'converted now'})")
        teacher_cached = cached
    else:
        teacher_cached = None
    base = teacher  # the student's body comes from the model as packaged, never from the fine-tuned teacher
    teacher_ex = teacher_examples(budget)
    teacher_reused = None
    if finetune:
        stage(f"teacher fine-tune: {len(teacher_ex)} task examples of its own (once; cached by hash), so the "
              "teacher knows the task better than a student trained on the demo's examples")
        teacher, teacher_reused = fine_tune_teacher(base, teacher_ex, budget, progress)
        print(f"teacher: {teacher} ({'cached' if teacher_reused else 'fine-tuned now'})")

    stage("task: arithmetic word problems, train / held-out split (generated offline)")
    train_ex, held_ex = tasks.make_split(budget.n_train, budget.n_eval, seed, style=budget.task_style,
                                         exclude={e.question for e in teacher_ex})
    paths = tasks.write_split(out / "data", train_ex, held_ex)
    print(f"{len(train_ex)} training and {len(held_ex)} held-out examples in {out / 'data'}; e.g.\n"
          f"  Q: {train_ex[0].question}\n  A: {train_ex[0].completion}")

    stage("student: BPE tokenizer (SentencePiece style) trained on the task text + "
          + ("the teacher's pretrained body with embeddings for that tokenizer" if budget.student_init == "transfer"
             else "a randomly initialised Llama-style model"))
    texts = [e.question for e in train_ex] + [e.completion for e in train_ex] + ["user\nmodel\n"] * 8
    student_init = build_student(out / "students" / "untrained", texts, budget, seed, base)
    _describe_pair(student_init, teacher)

    cache = None
    if use_cache:
        stage(f"teacher cache: the teacher's top-{budget.cache_k} at every training completion token, written once; "
              f"{' and '.join(m for m in methods if m in CACHED_METHODS)} train from it without the teacher model")
        cache = build_teacher_cache(teacher, paths["train"], out / "teacher_cache", budget, progress)

    generated = None
    runs: dict[str, MethodRun] = {}
    for method in methods:
        if method == "hard_label":
            stage("hard labels: the teacher answers every training prompt, then the student trains on the answers")
            generated = generate_hard_labels(teacher, paths["train"], out / "data" / "teacher_generations",
                                             budget, seed)
        else:
            source = f", teacher from the top-{budget.cache_k} cache" if cache and method in CACHED_METHODS else (
                ", teacher logits online" if method in SOFT_METHODS else "")
            stage(f"train {method}: {DESCRIPTIONS[method]}{source}")
        runs[method] = train_method(method_config(method, student=student_init, teacher=teacher,
                                                  train=paths["train"], generated=generated, out=out,
                                                  budget=budget, seed=seed, cache=cache))
        print(f"{method}: {runs[method].steps} steps in {runs[method].seconds:.0f} s")

    stage("evaluate on the held-out set: bits per byte, CE, agreement with the teacher, task accuracy")
    records = [e.record() for e in held_ex]
    students = {"untrained": load_pretrained(str(student_init))}
    students.update({m: load_pretrained(r.output_dir) for m, r in runs.items()})
    t_model, t_tok = load_pretrained(teacher)
    results, _ = evaluate_models(students, records, teacher=(t_model, t_tok), max_new_tokens=budget.eval_tokens,
                                 progress=progress, teacher_generate=budget.teacher_accuracy, batch_size=48)

    stage("report")
    table = lead_table(results, RECOMMENDED if RECOMMENDED in runs else None)
    summary = {
        "budget": asdict(budget), "seed": seed, "teacher": teacher, "teacher_cached": teacher_cached,
        "teacher_base": base, "teacher_finetune_reused": teacher_reused,
        "teacher_cache": str(cache) if cache else None,
        "student": str(student_init), "results": {k: asdict(v) for k, v in results.items()},
        "runs": {k: {"steps": r.steps, "seconds": round(r.seconds, 1), "output_dir": r.output_dir}
                 for k, r in runs.items()},
    }
    stage.close()
    summary["stage_seconds"] = stage.times
    summary["total_seconds"] = round(time.perf_counter() - stage.t0, 1)
    s_cfg = json.loads((student_init / "config.json").read_text())
    summary["student_desc"] = (
        f"{s_cfg['num_hidden_layers']} layers, hidden {s_cfg['hidden_size']}, vocabulary {s_cfg['vocab_size']}: "
        + ("the teacher's pretrained body with embeddings transferred to its own SentencePiece-style tokenizer"
           if budget.student_init == "transfer" else "randomly initialised, its own SentencePiece-style tokenizer"))
    highlight = RECOMMENDED if RECOMMENDED in runs else None
    report = write_report(out, summary, results, runs, DESCRIPTIONS, highlight=highlight, why=WHY_RECOMMENDED)
    write_json(out / "results.json", summary, indent=2, default=str)
    on_table("\n" + table)
    print(f"\nreport: {report}\nplots: {out / 'accuracy.png'}, {out / 'bpb.png'}, {out / 'loss_curves.png'}\n"
          f"total: {summary['total_seconds']:.0f} s")
    return summary


def _describe_pair(student: Path, teacher: str) -> None:
    from transformers import AutoConfig, AutoTokenizer

    s_tok, t_tok = AutoTokenizer.from_pretrained(student), AutoTokenizer.from_pretrained(teacher)
    s_cfg = AutoConfig.from_pretrained(student)
    example = "so she has 12 + 30 = 42 apples."
    print(f"student: {s_cfg.num_hidden_layers} layers, hidden {s_cfg.hidden_size}, "
          f"vocab {len(s_tok)} (SentencePiece-style BPE)\n"
          f"teacher: vocab {len(t_tok)} (byte-level BPE)\n"
          f"  student tokens: {s_tok.tokenize(example)}\n  teacher tokens: {t_tok.tokenize(example)}")


def _quiet_libraries() -> None:
    """Keep the demo's own progress bars and banners readable: no per-file weight-loading bars, no CPU pin_memory
    warning per DataLoader."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*pin_memory.*")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossdistill demo", description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller budget (under 3 minutes on 2 CPU cores)")
    p.add_argument("--out", default="crossdistill-demo", help="output directory (default: ./crossdistill-demo)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", help="a teacher directory instead of the packaged SmolLM2-135M-Instruct")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--task-style", choices=("template", "varied"), help="override the wording of the worked answers")
    for name in ("n_train", "n_eval", "epochs"):
        p.add_argument("--" + name.replace("_", "-"), type=float if name == "epochs" else int,
                       help=f"override the budget's {name}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet_libraries()
    budget = BUDGETS["quick" if args.quick else "full"]
    changes = {k: getattr(args, k) for k in ("n_train", "n_eval", "epochs") if getattr(args, k) is not None}
    if any(v <= 0 for v in changes.values()):
        print(f"crossdistill demo: error: budget overrides must be positive; got {changes}", file=sys.stderr)
        return 2
    budget = replace(budget, **changes)
    if args.task_style is not None:
        budget = replace(budget, task_style=args.task_style)
    if args.threads is not None:
        if args.threads < 1:
            print(f"crossdistill demo: error: --threads={args.threads} must be >= 1", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    from crossdistill.assets import AssetNotInstalled
    from crossdistill.config import ConfigError
    from crossdistill.data.load import DataError

    try:
        run_demo(Path(args.out), budget, teacher=args.teacher, methods=[m for m in args.methods.split(",") if m],
                 seed=args.seed)
    except (AssetNotInstalled, ConfigError, DataError) as err:
        print(f"crossdistill demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
