"""Which distillation methods actually help: held-out bits per byte (mean ± std over seeds) of every method.

Reproduce (2 CPU cores, ~20 min):

    python benchmarks/quality.py --seeds 0 1 2 --out benchmarks/results/quality.md

Setting. The demo's task (arithmetic word problems, :mod:`crossdistill.tasks`) with a teacher that is cheap enough to
run 30+ trainings on two CPU cores: a Llama-style model trained here once (through the same engine, CE only) on
``--teacher-train`` examples, with its own byte-level BPE tokenizer — the SmolLM2 family — fitted to the task text.
(The real SmolLM2-135M teacher costs ~3 s per distillation step on 2 idle cores; the demo shows it, this benchmark
needs many runs.) Students get ``--n-train`` examples, 15x fewer than the teacher saw, and start from the same random
initialisation per seed:

* cross-tokenizer student: the demo's SentencePiece-style BPE tokenizer (``▁``, byte fallback) and Gemma-style
  template — methods ``ce`` (no teacher), ``hard_label`` (teacher greedy answers), every registered cross-tokenizer
  objective (``uld``, ``gold_hybrid``, and MultiLevelOT / CDM / DSKD once registered), and ``gold_hybrid`` with
  on-policy mixing λ ∈ {0.5, 1} (λ = 0 is the plain row);
* same-tokenizer student: the teacher's tokenizer — ``ce``, ``forward_kl`` and ``reverse_kl`` (default weights: KD
  only), so same-vocabulary distillation is measured on the same task.

Every row reports mean ± std over seeds of held-out bits per byte (tokenizer-independent), CE per token, agreement
with the teacher over aligned groups and greedy task accuracy, and the bpb difference to the CE-only student of
the same tokenizer with the number of seeds in which the method was better.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def teacher_tokenizer(texts: list[str], path: Path, vocab: int) -> Path:
    """Byte-level BPE (GPT-2 / SmolLM2 family) with ChatML, fitted to the task text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from crossdistill.testing.tiny import CHATML_TEMPLATE

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False)])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(path)
    return path


def save_llama(tok_path: Path, path: Path, hidden: int, layers: int, seed: int) -> Path:
    from transformers import AutoTokenizer

    from crossdistill.demo.student import save_random_llama

    if (path / "config.json").is_file():
        return path
    tok = AutoTokenizer.from_pretrained(tok_path)
    save_random_llama(tok, path, hidden, layers, seed)
    tok.save_pretrained(path)
    return path


def run_config(*, student: Path, teacher: Path | None, train: Path, out: Path, loss: str = "ce",
               params: dict | None = None, lmbda: float = 0.0, epochs: float, lr: float, seed: int,
               batch: int = 8, gen_tokens: int = 48) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "student": {"model": str(student)},
        "data": {"train": str(train), "eval_fraction": 0.0, "max_length": 384},
        "loss": {"name": loss, **({"params": params} if params else {})},
        "onpolicy": {"lmbda": lmbda, **({"max_new_tokens": gen_tokens, "temperature": 1.0} if lmbda else {})},
        "train": {"output_dir": str(out), "seed": seed, "num_epochs": epochs, "per_device_batch_size": batch,
                  "learning_rate": lr, "warmup_ratio": 0.1, "lr_scheduler": "cosine", "logging_steps": 10,
                  "report_to": [], "runs_file": str(out.parent / "runs.jsonl"), "progress_bar": False},
        "method": f"quality:{out.name}",
    }
    if teacher is not None:
        cfg["teacher"] = {"model": str(teacher)}
    return cfg


def cross_methods() -> list[str]:
    from crossdistill.methods import cross_tokenizer_methods

    return cross_tokenizer_methods()


def mean_std(values: list[float], digits: int = 4) -> str:
    """``mean ± std`` over the seeds that measured a value (one value alone; ``—`` for none)."""
    vals = [v for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{statistics.mean(vals):.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n-train", type=int, default=96)
    p.add_argument("--n-eval", type=int, default=64)
    p.add_argument("--epochs", type=float, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--teacher-train", type=int, default=1000, help="examples the teacher is trained on")
    p.add_argument("--teacher-epochs", type=float, default=2)
    p.add_argument("--work", default="/tmp/crossdistill-quality", help="scratch directory (teacher is reused)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality.md"))
    p.add_argument("--only", help="comma-separated subset of row names (debugging)")
    p.add_argument("--from-json", help="re-render the markdown from a saved quality.json (no training)")
    args = p.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        write_markdown(Path(args.out), saved["rows"], args, saved["seconds"], saved["cross_methods"])
        print(Path(args.out).read_text())
        return 0

    from crossdistill import tasks
    from crossdistill.demo.budget import BUDGETS
    from crossdistill.demo.methods import train_method
    from crossdistill.demo.student import build_student
    from crossdistill.demo.teacher import generate_hard_labels
    from crossdistill.evaluation import evaluate_models, load_pretrained

    t0 = time.perf_counter()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    # --- data: the students' training set, a held-out set, and a larger disjoint set for the teacher
    train_ex, held_ex = tasks.make_split(args.n_train, args.n_eval, seed=100)
    paths = tasks.write_split(work / "data", train_ex, held_ex)
    seen = {e.question for e in train_ex + held_ex}
    teacher_ex = tasks.make_examples(args.teacher_train, seed=7, exclude=seen)
    tasks.write_jsonl(work / "data" / "teacher_train.jsonl", (e.record() for e in teacher_ex))
    corpus = [e.question for e in teacher_ex] + [e.completion for e in teacher_ex] + ["user\nassistant\nmodel\n"] * 8

    # --- teacher: byte-level BPE + Llama, trained once with CE through the engine
    t_tok = teacher_tokenizer(corpus, work / "teacher_tok", vocab=900)
    teacher = work / "teacher"
    if not (teacher / "model.safetensors").is_file() or not (teacher / "done").is_file():
        init = save_llama(t_tok, work / "teacher_init", hidden=192, layers=4, seed=1234)
        print(f"training the teacher on {len(teacher_ex)} examples ...", flush=True)
        train_method(run_config(student=init, teacher=None, train=work / "data" / "teacher_train.jsonl",
                                out=teacher, epochs=args.teacher_epochs, lr=2e-3, seed=0, batch=16))
        (teacher / "done").write_text("ok")
    budget = replace(BUDGETS["random_full"], student_hidden=96, student_layers=2, student_vocab=500)
    s_texts = [e.question for e in train_ex] + [e.completion for e in train_ex] + ["user\nmodel\n"] * 8

    rows: dict[str, dict[str, Any]] = {}
    only = set(args.only.split(",")) if args.only else None
    records = [e.record() for e in held_ex]
    t_model = load_pretrained(str(teacher))
    teacher_out = teacher_res = None
    xmethods = cross_methods()
    for seed in args.seeds:
        sdir = work / f"seed{seed}"
        x_init = build_student(sdir / "x_init", s_texts, budget, seed)
        same_init = save_llama(t_tok, sdir / "same_init", hidden=96, layers=2, seed=seed)
        gen = sdir / "teacher_generations"
        if not (gen / "manifest.json").is_file():
            generate_hard_labels(str(teacher), paths["train"], gen, budget, seed)
        plan: dict[str, dict[str, Any]] = {
            "x/untrained": {}, "x/ce": dict(student=x_init, teacher=None, train=paths["train"]),
            "x/hard_label": dict(student=x_init, teacher=None, train=gen),
        }
        for m in xmethods:
            params = {"matched_weight": 1.0, "unmatched_weight": 1.0} if m == "gold_hybrid" else None
            plan[f"x/{m}"] = dict(student=x_init, teacher=teacher, train=paths["train"], loss=m, params=params)
        # beta=0: the matched-column term is forward KL (TRL convention), the classic soft-label gradient
        plan["x/gold_hybrid β=0"] = dict(student=x_init, teacher=teacher, train=paths["train"], loss="gold_hybrid",
                                         params={"matched_weight": 1.0, "unmatched_weight": 1.0, "beta": 0.0})
        for lm in (0.5, 1.0):
            plan[f"x/gold_hybrid λ={lm}"] = dict(student=x_init, teacher=teacher, train=paths["train"],
                                                 loss="gold_hybrid", lmbda=lm,
                                                 params={"matched_weight": 1.0, "unmatched_weight": 1.0})
        plan.update({"same/untrained": {}, "same/ce": dict(student=same_init, teacher=None, train=paths["train"]),
                     "same/forward_kl": dict(student=same_init, teacher=teacher, train=paths["train"],
                                             loss="forward_kl"),
                     "same/reverse_kl": dict(student=same_init, teacher=teacher, train=paths["train"],
                                             loss="reverse_kl")})
        students = {}
        for name, spec in plan.items():
            if only and name not in only and not name.endswith("untrained"):
                continue
            start = time.perf_counter()
            if not spec:
                init = x_init if name.startswith("x/") else same_init
                students[name] = load_pretrained(str(init))
                continue
            out = sdir / name.replace("/", "_").replace(" ", "_").replace("λ=", "lambda").replace("β=", "beta")
            try:
                train_method(run_config(out=out, epochs=args.epochs, lr=args.lr, seed=seed, **spec))
            except Exception as err:  # a method that fails is reported as failing, not hidden
                print(f"seed {seed} {name}: FAILED {type(err).__name__}: {err}", flush=True)
                rows.setdefault(name, {}).setdefault("errors", []).append(f"{type(err).__name__}: {err}"[:200])
                continue
            students[name] = load_pretrained(str(out))
            rows.setdefault(name, {}).setdefault("seconds", []).append(time.perf_counter() - start)
            print(f"seed {seed} {name}: trained in {time.perf_counter() - start:.0f} s", flush=True)
        results, teacher_out = evaluate_models(students, records, teacher=t_model, teacher_outputs=teacher_out,
                                               teacher_result=teacher_res, max_new_tokens=40, progress=False)
        teacher_res = results["teacher"]
        for name, r in results.items():
            row = rows.setdefault(name, {})
            for k in ("bpb", "ce", "agreement", "accuracy"):
                row.setdefault(k, []).append(getattr(r, k))
        print(f"seed {seed} done at {time.perf_counter() - t0:.0f} s", flush=True)

    seconds = time.perf_counter() - t0
    write_markdown(Path(args.out), rows, args, seconds, xmethods)
    (work / "quality.json").write_text(json.dumps({"rows": rows, "seconds": seconds, "cross_methods": xmethods},
                                                  indent=2, default=str))
    print(Path(args.out).read_text())
    return 0


def write_markdown(path: Path, rows: dict[str, dict[str, Any]], args: Any, seconds: float, xmethods: list[str]):
    lines = ["# Quality benchmark: which distillation methods help", "",
             f"Command: `python benchmarks/quality.py --seeds {' '.join(map(str, args.seeds))} --n-train "
             f"{args.n_train} --n-eval {args.n_eval} --epochs {args.epochs}`  ",
             f"Machine: 2-core CPU shared with other jobs; wall time {seconds / 60:.1f} min. Cross-tokenizer "
             f"methods registered at run time: {', '.join(xmethods)}.", "",
             "bits/byte: held-out NLL / (ln 2 · UTF-8 bytes), lower is better, comparable across tokenizers. "
             "Δ vs CE: bpb minus the CE-only student of the same tokenizer (negative = the method helps); "
             "'better in' counts seeds.", "",
             "| row | bits/byte | Δ vs CE | better in | CE nats/tok | agreement | accuracy |",
             "|---|---|---|---|---|---|---|"]
    for name, row in rows.items():
        if "bpb" not in row:
            lines.append(f"| {name} | failed: {row.get('errors', ['?'])[0]} | | | | | |")
            continue
        base = rows.get(("x/ce" if name.startswith("x/") else "same/ce"), {}).get("bpb")
        delta = better = ""
        if base and name not in ("x/ce", "same/ce", "teacher") and len(base) == len(row["bpb"]):
            d = [a - b for a, b in zip(row["bpb"], base)]
            delta = mean_std(d)
            better = f"{sum(x < 0 for x in d)}/{len(d)}"
        lines.append(f"| {name} | {mean_std(row['bpb'])} | {delta} | {better} | {mean_std(row['ce'])} | "
                     f"{mean_std(row['agreement'])} | {mean_std(row['accuracy'])} |")
    lines += ["", "## Verdicts (held-out bits per byte against the CE-only student of the same tokenizer)", ""]
    lines += [f"- **{name}**: {verdict}" for name, verdict in verdicts(rows)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def verdicts(rows: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """'helps' when better in every seed by more than one std of the difference; 'hurts' symmetric; else no clear
    effect."""
    out = []
    for name, row in rows.items():
        if name.endswith(("/ce", "untrained")) or name == "teacher" or "bpb" not in row:
            continue
        base = rows.get("x/ce" if name.startswith("x/") else "same/ce", {}).get("bpb")
        if not base or len(base) != len(row["bpb"]):
            continue
        d = [a - b for a, b in zip(row["bpb"], base)]
        m = statistics.mean(d)
        sd = statistics.stdev(d) if len(d) > 1 else 0.0
        if all(x < 0 for x in d) and -m > sd:
            v = f"helps ({m:+.4f} bits/byte, better in all {len(d)} seeds)"
        elif all(x > 0 for x in d) and m > sd:
            v = f"hurts ({m:+.4f} bits/byte, worse in all {len(d)} seeds)"
        else:
            v = f"no clear effect ({m:+.4f} ± {sd:.4f} bits/byte, better in {sum(x < 0 for x in d)}/{len(d)} seeds)"
        out.append((name, v))
    return out


if __name__ == "__main__":
    sys.exit(main())
