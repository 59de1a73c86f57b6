"""Cross-tokenizer distillation from a teacher cache vs the online teacher, on the demo's real pair.

SmolLM2-135M-Instruct (byte-level BPE, 49,152 tokens) teaches the demo's SentencePiece-style student (~675 tokens,
random init). The teacher's top-k is written once with `crossdistill cache` machinery; then `uld` and `gold_hybrid`
train from the cache (no teacher model in memory) and, for comparison, with the teacher online, same data, seed and
budget as `crossdistill demo`. Reported: cache build time and size, training seconds per step, and held-out bits per
byte of each student (CE-only student as the reference).

Usage (idle 2-core CPU, ~5 minutes):
    python benchmarks/cache_xtok.py                 # k = 64, the demo's full budget (128 prompts x 2 epochs)
    python benchmarks/cache_xtok.py --k 16 --n-train 32 --epochs 1   # a quick look
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=64, help="teacher entries per token in the cache")
    ap.add_argument("--n-train", type=int, default=128)
    ap.add_argument("--n-eval", type=int, default=48)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--methods", default="uld,gold_hybrid")
    ap.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args(argv)

    import crossdistill
    from crossdistill import tasks
    from crossdistill.assets import convert_gguf, find_packaged_file
    from crossdistill.demo.budget import BUDGETS, MAX_LENGTH
    from crossdistill.demo.methods import method_config, train_method
    from crossdistill.demo.student import build_student
    from crossdistill.evaluation import evaluate_models, load_pretrained
    from crossdistill.teacher.reader import CacheReader

    budget = replace(BUDGETS["random_full"], n_train=args.n_train, n_eval=args.n_eval, epochs=args.epochs)
    methods = [m for m in args.methods.split(",") if m]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        teacher = str(convert_gguf(find_packaged_file()))
        train_ex, held_ex = tasks.make_split(budget.n_train, budget.n_eval, args.seed, style=budget.task_style)
        paths = tasks.write_split(out / "data", train_ex, held_ex)
        texts = [e.question for e in train_ex] + [e.completion for e in train_ex] + ["user\nmodel\n"] * 8
        student = build_student(out / "students" / "untrained", texts, budget, args.seed)

        def config(method: str, cache: Path | None) -> dict:
            cfg = method_config(method, student=student, teacher=teacher, train=paths["train"], generated=None,
                                     out=out, budget=budget, seed=args.seed, cache=cache)
            tag = f"{method}-{'cache' if cache else 'online'}" if method != "ce" else "ce"
            cfg["train"]["output_dir"] = str(out / "students" / tag)
            return cfg

        t0 = time.perf_counter()
        cache = out / f"cache-top{args.k}"
        crossdistill.build_cache({"teacher": teacher, "data": str(paths["train"]), "output": str(cache), "k": args.k,
                                  "max_length": MAX_LENGTH}, progress=True)
        build_s = time.perf_counter() - t0
        stats = CacheReader(cache).stats()

        runs = {"ce": train_method(config("ce", None))}
        for method in methods:
            for source in ("cache", "online"):
                runs[f"{method}-{source}"] = train_method(config(method, cache if source == "cache" else None))

        records = [e.record() for e in held_ex]
        students = {name: load_pretrained(r.output_dir) for name, r in runs.items()}
        results, _ = evaluate_models(students, records, generate=False, progress=False)

    print(f"\n# cache: k = {args.k}, {stats['tokens']:,} teacher tokens, "
          f"{stats['bytes_per_token']:.1f} bytes/token, mean tail mass {stats['mean_tail_mass']:.3f}, "
          f"built in {build_s:.1f} s (teacher forward included); torch threads {torch.get_num_threads()}\n")
    print("| student | teacher signal | steps | train s | s / step | bits/byte | vs CE |")
    print("|---|---|---|---|---|---|---|")
    ce_bpb = results["ce"].bpb
    for name, run in runs.items():
        method, _, source = name.partition("-")
        r = results[name]
        signal = {"cache": f"cache, top-{args.k} + tail", "online": "online, full logits", "": "none"}[source]
        print(f"| {method} | {signal} | {run.steps} | {run.seconds:.1f} | {run.seconds / max(run.steps, 1):.2f} | "
              f"{r.bpb:.4f} | {r.bpb - ce_bpb:+.4f} |")


if __name__ == "__main__":
    main()
