"""Does any soft cross-tokenizer method beat SFT on the teacher's text, on a pretrained pair? (3 seeds, every method.)

Reproduce (2 CPU cores; each row trains once per seed and its result is kept in the repository,
``benchmarks/results/quality_pretrained/seed<N>/<row>.json``, so the run resumes, can be split over processes with
``--rows`` and ``--seeds``, and ``--render`` works on any machine):

    python benchmarks/quality_pretrained.py --seeds 0 1 2
    python benchmarks/quality_pretrained.py --render          # the table from what is measured so far

The pair is the demo's (``crossdistill demo``, docs/demo.md), because it is the pretrained cross-tokenizer pair that two
CPU cores can train 50+ times:

* teacher: SmolLM2-135M-Instruct (byte-level BPE, 49k tokens, ChatML) fine-tuned once on 512 task examples of its own
  (the demo's cached teacher, :func:`crossdistill.demo.teacher.fine_tune_teacher`);
* student: the packaged SmolLM2's pretrained body under a SentencePiece-style BPE tokenizer of ~860 tokens with byte
  fallback and a Gemma-style template, its embeddings and head transferred from the teacher pieces that spell each
  token (:mod:`crossdistill.transfer`). Every soft method therefore goes through the cross-tokenizer alignment.

Each seed draws its own training set (128 prompts with worked answers) and held-out set (48), its own student tokenizer
and its own data order; every row starts from that seed's same student and trains the same 16 steps (batch 8, lr 1e-4,
warm-up 10 %, cosine) -- the demo's full budget. Rows:

* ``ce (ground truth)``: CE on the dataset's completions, no teacher;
* ``ce (teacher text)``: CE on the teacher's greedy answers to the same prompts (SeqKD / hard labels) -- the bar a soft
  method has to clear;
* every registered cross-tokenizer method with its **recipe defaults** (``loss.params`` empty), teacher from the
  top-64 cache where the method can train from one (``alm``, ``gold_hybrid``, ``uld``, ``xtoken_*``), else online;
* ``gold_hybrid (demo)``: the demo's fixed weights (matched 1, unmatched 0, beta 0), and the same with matched 3;
* ``alm (weight 100)``: ALM with its term weighted by its binarization temperature (at weight 1 it is CE);
* on-policy rows ``<row> λ=0.5`` / ``λ=1`` for the ``--onpolicy`` rows (default: every cross-tokenizer method with
  its recipe defaults; temperature 1, 48 new tokens, teacher online; on the student's own samples only the terms
  that carry the teacher's token identities train, the default ``onpolicy.ce_on_samples: false``).

Reported per row: held-out task accuracy (greedy, 48 tokens) with its mean binomial standard error, bits per byte and
agreement with the teacher, each as mean ± std over seeds, and the paired difference to ``ce (teacher text)``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from quality import mean_std  # the sibling benchmark (a script's directory is on sys.path): one seed summary

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "quality_pretrained"
"""Per-seed, per-row results (``seed<N>/<row>.json``): what ``--render`` builds the table from."""

BAR = "ce (teacher text)"
READING = "<!-- reading: kept by --render -->"
"""The row every soft method is compared with (the issue's question: better than SFT on the teacher's text?)."""


def rows_plan(onpolicy: list[str]) -> dict[str, dict[str, Any]]:
    """Row name -> what it trains (``data``: ``train`` or ``teacher_text``; ``loss``; ``params``; ``lmbda``)."""
    from crossdistill.demo.methods import GOLD_PARAMS
    from crossdistill.methods import cross_tokenizer_methods

    plan: dict[str, dict[str, Any]] = {"untrained": {}, "ce (ground truth)": {"loss": "ce"},
                                       BAR: {"loss": "ce", "data": "teacher_text"}}
    for m in cross_tokenizer_methods():
        plan[m] = {"loss": m}
    plan["gold_hybrid (demo)"] = {"loss": "gold_hybrid", "params": dict(GOLD_PARAMS)}
    # ALM's binarization at tau = 100 scales its gradient by ~1/tau against CE's (d loss / d log p_chunk ~
    # (log p_t / log p_s - 1) / tau): at weight 1 it is CE to four digits (measured), so one row puts it on par.
    plan["alm (weight 100)"] = {"loss": "alm", "weights": {"alm": 100.0}}
    plan["gold_hybrid (demo; matched 3)"] = {"loss": "gold_hybrid", "params": {**GOLD_PARAMS, "matched_weight": 3.0}}
    for row in onpolicy:  # a method name (recipe defaults) or an off-policy row such as "gold_hybrid (demo)"
        if row not in plan or row in ("untrained", "ce (ground truth)", BAR):
            raise ValueError(f"--onpolicy: {row!r} is not a soft row; choose from {list(plan)[3:]}")
        for lm in (0.5, 1.0):
            plan[f"{row} λ={lm:g}"] = {**plan[row], "lmbda": lm}
    return plan


def slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name.replace("λ=", "lambda"))


class Seed:
    """One seed's shared inputs: the teacher, the split, the transferred student, the teacher cache, hard labels."""

    def __init__(self, work: Path, seed: int, progress: bool):
        from crossdistill import tasks
        from crossdistill.assets import SMOLLM2_135M_INSTRUCT, convert_gguf, find_packaged_file
        from crossdistill.demo.budget import BUDGETS
        from crossdistill.demo.student import build_student
        from crossdistill.demo.teacher import (
            build_teacher_cache,
            fine_tune_teacher,
            generate_hard_labels,
            teacher_examples,
        )

        self.seed, self.dir = seed, work / f"seed{seed}"
        self.budget = BUDGETS["full"]
        base = str(convert_gguf(find_packaged_file(SMOLLM2_135M_INSTRUCT)))
        teacher_ex = teacher_examples(self.budget)
        self.teacher, _ = fine_tune_teacher(base, teacher_ex, self.budget, progress)
        train_ex, held_ex = tasks.make_split(self.budget.n_train, self.budget.n_eval, seed,
                                             style=self.budget.task_style, exclude={e.question for e in teacher_ex})
        self.paths = tasks.write_split(self.dir / "data", train_ex, held_ex)
        self.records = [e.record() for e in held_ex]
        texts = [e.question for e in train_ex] + [e.completion for e in train_ex] + ["user\nmodel\n"] * 8
        self.student = build_student(self.dir / "untrained", texts, self.budget, seed, base)
        # Both reuse (and verify) what an earlier run of this seed wrote, before loading the teacher.
        self.cache = build_teacher_cache(self.teacher, self.paths["train"], self.dir / "teacher_cache",
                                              self.budget, progress)
        self.teacher_text = generate_hard_labels(self.teacher, self.paths["train"],
                                                      self.dir / "teacher_generations", self.budget, seed)
        self._teacher_eval: tuple[Any, Any, Any] | None = None

    def config(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        from crossdistill.demo.methods import run_config

        data = self.teacher_text if spec.get("data") == "teacher_text" else self.paths["train"]
        return run_config(spec["loss"], student=self.student, teacher=self.teacher, data=data,
                          output_dir=self.dir / "runs" / slug(name), budget=self.budget, seed=self.seed,
                          label=f"quality_pretrained:{name}", runs_file=self.dir / "runs.jsonl", cache=self.cache,
                          params=spec.get("params"), weights=spec.get("weights"), lmbda=spec.get("lmbda", 0.0),
                          progress=False)

    def evaluate(self, name: str, model_dir: Path) -> dict[str, Any]:
        from crossdistill.evaluation import evaluate_models, load_pretrained

        if self._teacher_eval is None:
            t_model, t_tok = load_pretrained(self.teacher)
            self._teacher_eval = (t_model, t_tok, None)
        t_model, t_tok, t_out = self._teacher_eval
        results, t_out = evaluate_models({name: load_pretrained(str(model_dir))}, self.records,
                                         teacher=(t_model, t_tok), teacher_outputs=t_out, teacher_generate=False,
                                         max_new_tokens=self.budget.eval_tokens, progress=False, batch_size=48)
        self._teacher_eval = (t_model, t_tok, t_out)
        r = results[name]
        return {"bpb": r.bpb, "ce": r.ce, "agreement": r.agreement, "accuracy": r.accuracy, "scored": r.scored,
                "samples": r.samples[:3]}

    def teacher_row(self) -> dict[str, Any]:
        from crossdistill.evaluation import evaluate_models, load_pretrained

        t = load_pretrained(self.teacher)
        r = evaluate_models({}, self.records, teacher=t, max_new_tokens=self.budget.eval_tokens, progress=False,
                            batch_size=48)[0]["teacher"]
        return {"bpb": r.bpb, "ce": r.ce, "agreement": None, "accuracy": r.accuracy, "scored": r.scored,
                "samples": r.samples[:3]}


def run_row(s: Seed, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    from crossdistill.demo.methods import train_method

    start = time.perf_counter()
    if name == "teacher":
        return {**s.teacher_row(), "seconds": 0.0, "steps": 0}
    if not spec:
        return {**s.evaluate(name, s.student), "seconds": 0.0, "steps": 0}
    run = train_method(s.config(name, spec))
    trained = time.perf_counter() - start
    return {**s.evaluate(name, Path(run.output_dir)), "seconds": round(trained, 1), "steps": run.steps}


# ------------------------------------------------------------------------------------------------------ rendering
def paired(row: list[float], bar: list[float], higher_better: bool) -> tuple[float, float, int]:
    """Mean and std of the per-seed gain over the bar (positive = better) and the seeds it is better in."""
    d = [(a - b) if higher_better else (b - a) for a, b in zip(row, bar)]
    return statistics.mean(d), (statistics.stdev(d) if len(d) > 1 else 0.0), sum(x > 0 for x in d)


def beats(row: dict[str, list], bar: dict[str, list]) -> bool:
    """The issue's target: better than the bar on accuracy AND bits per byte in every seed, by more than the spread
    (std over seeds) of the paired difference."""
    if len(row["accuracy"]) < 3 or len(row["accuracy"]) != len(bar["accuracy"]):
        return False
    ok = True
    for key, hb in (("accuracy", True), ("bpb", False)):
        m, sd, wins = paired(row[key], bar[key], hb)
        ok &= wins == len(row[key]) and m > sd
    return ok


def collect(results: Path, seeds: list[int], names: list[str]) -> dict[str, dict[str, list]]:
    rows: dict[str, dict[str, list]] = {}
    for name in names:
        per = [results / f"seed{s}" / f"{slug(name)}.json" for s in seeds]
        got = [json.loads(p.read_text()) for p in per if p.is_file()]
        if got:
            rows[name] = {k: [g.get(k) for g in got] for k in ("accuracy", "scored", "bpb", "agreement", "seconds")}
            rows[name]["seeds"] = [s for s, p in zip(seeds, per) if p.is_file()]
    return rows


def vs_untrained(row: dict[str, list], base: dict[str, list], key: str, higher_better: bool) -> str:
    """``k/n``: the seeds in which ``row`` is at least as good as the untrained student on ``key`` (paired by seed)."""
    by_seed = dict(zip(base["seeds"], base[key]))
    pairs = [(v, by_seed[s]) for s, v in zip(row["seeds"], row[key]) if s in by_seed]
    ok = sum((v >= b) if higher_better else (v <= b) for v, b in pairs)
    return f"{ok}/{len(pairs)}" + ("" if ok == len(pairs) else " **worse**")


def onpolicy_lines(rows: dict[str, dict[str, list]]) -> list[str]:
    """The on-policy table: per method, λ = 0 (its off-policy row), 0.5 and 1 side by side, and whether each λ > 0 run
    ends at or above the untrained student in every seed (task accuracy, and bits per byte)."""
    base = rows.get("untrained")
    methods = [n.rsplit(" λ=", 1)[0] for n in rows if n.endswith(" λ=0.5") or n.endswith(" λ=1")]
    if not methods or base is None:
        return []
    lines = ["", "## On-policy (GKD λ) against off-policy and the untrained student", "",
             "Each method with its recipe defaults; λ = 0 is its off-policy row above (a blank where not measured in "
             "these results). On-policy steps sample 48 new tokens at temperature 1 and score them with the online "
             "teacher; on those samples only the terms that carry the teacher's token identities train (CE and each "
             "method's `sample_terms` are off: the default `onpolicy.ce_on_samples: false`), so `uld` and "
             "`multilevel_ot*` train nothing there. "
             f"Untrained student: accuracy {mean_std(base['accuracy'], 3)}, bits/byte {mean_std(base['bpb'])}. "
             "'≥ untrained': the seeds in which the run's accuracy is at least the untrained student's (bits/byte: "
             "at most), paired by seed.", "",
             "| method | accuracy λ=0 | λ=0.5 | λ=1 | bits/byte λ=0 | λ=0.5 | λ=1 | ≥ untrained acc. λ=0.5 / λ=1 | "
             "≤ untrained bpb λ=0.5 / λ=1 | train s λ=0.5 / λ=1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for m in dict.fromkeys(methods):
        lam = [rows.get(m), rows.get(f"{m} λ=0.5"), rows.get(f"{m} λ=1")]
        acc = [mean_std(r["accuracy"], 3) + f" ({len(r['seeds'])})" if r else "" for r in lam]
        bpb = [mean_std(r["bpb"]) if r else "" for r in lam]
        ge = [vs_untrained(r, base, "accuracy", True) if r else "—" for r in lam[1:]]
        le = [vs_untrained(r, base, "bpb", False) if r else "—" for r in lam[1:]]
        secs = [f"{statistics.mean(r['seconds']):.0f}" if r else "—" for r in lam[1:]]
        lines.append(f"| {m} | {' | '.join(acc)} | {' | '.join(bpb)} | {' / '.join(ge)} | {' / '.join(le)} | "
                     f"{' / '.join(secs)} |")
    return lines


def render(results: Path, seeds: list[int], names: list[str], out: Path) -> str:
    from crossdistill.io import write_text

    rows = collect(results, seeds, names)
    bar = rows.get(BAR)
    lines = ["# Quality on a pretrained cross-tokenizer pair: soft methods against SFT on the teacher's text", "",
             "Command: `python benchmarks/quality_pretrained.py --seeds " + " ".join(map(str, seeds)) + "` "
             "(2-core CPU; per-row results are kept, `--render` rebuilds this table).", "",
             "Teacher: SmolLM2-135M-Instruct fine-tuned on 512 task examples (byte-level BPE, 49k). Student: the same "
             "pretrained body under its own SentencePiece-style BPE (~860 tokens, byte fallback, another chat "
             "template), embeddings transferred; 128 prompts, 16 steps, lr 1e-4, 48 held-out problems per seed. "
             "accuracy: greedy task accuracy, mean ± std over seeds, and the mean binomial standard error of one "
             "seed's estimate; Δ: paired gain over `ce (teacher text)` (positive = better), mean ± std, and the "
             "seeds it is better in.", "",
             "| row | seeds | accuracy | s.e. | Δ accuracy | bits/byte | Δ bits/byte | agreement | train s | "
             "Δ accuracy vs CE (ground truth) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    gt = rows.get("ce (ground truth)")
    winners = []
    for name, r in rows.items():
        se = [math.sqrt(a * (1 - a) / n) for a, n in zip(r["accuracy"], r["scored"]) if a is not None and n]
        d_acc = d_bpb = ""
        if bar and name not in (BAR, "teacher") and r["seeds"] == bar["seeds"]:
            m, sd, w = paired(r["accuracy"], bar["accuracy"], True)
            d_acc = f"{m:+.3f} ± {sd:.3f} ({w}/{len(r['seeds'])})"
            m, sd, w = paired(r["bpb"], bar["bpb"], False)
            d_bpb = f"{m:+.4f} ± {sd:.4f} ({w}/{len(r['seeds'])})"
            if beats(r, bar):
                winners.append(name)
        d_gt = ""
        if gt and name not in ("ce (ground truth)", "teacher") and r["seeds"] == gt["seeds"]:
            m, sd, w = paired(r["accuracy"], gt["accuracy"], True)
            d_gt = f"{m:+.3f} ± {sd:.3f} ({w}/{len(r['seeds'])})"
        secs = [s for s in r["seconds"] if s]
        lines.append(f"| {name} | {len(r['seeds'])} | {mean_std(r['accuracy'], 3)} | "
                     f"{statistics.mean(se) if se else float('nan'):.3f} | {d_acc} | {mean_std(r['bpb'])} | {d_bpb} | "
                     f"{mean_std(r['agreement'], 3)} | {statistics.mean(secs) if secs else 0:.0f} | {d_gt} |")
    lines += ["", "Target (better than `ce (teacher text)` on accuracy and bits per byte in every seed, by more than "
              "the std of the paired difference): " + (", ".join(f"**{w}**" for w in winners) or "**no row meets it**")
              + "."]
    lines += onpolicy_lines(rows)
    text = "\n".join(lines) + "\n"
    # The hand-written reading of the numbers lives below READING in the same file; a re-render keeps it.
    if out.is_file() and READING in (old := out.read_text()):
        text += "\n" + old[old.index(READING):]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text(out, text)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", help="comma-separated subset of row names (default: all); e.g. to split the work")
    p.add_argument("--onpolicy", default="all",
                   help="comma-separated rows that also get on-policy λ = 0.5 and 1 variants (default 'all': every "
                        "cross-tokenizer method with its recipe defaults)")
    p.add_argument("--work", default="/tmp/crossdistill-quality-pretrained",
                   help="scratch directory: students, caches, trained runs (resumable)")
    p.add_argument("--results", default=str(RESULTS),
                   help="one JSON per seed and row (kept in the repository, so --render works on any machine)")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "quality_pretrained.md"))
    p.add_argument("--render", action="store_true", help="only rebuild the table from the kept results")
    p.add_argument("--rerun", action="store_true", help="train rows again even when a result is kept")
    args = p.parse_args(argv)
    import os

    from crossdistill.io import write_json

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(args.work)
    from crossdistill.methods import cross_tokenizer_methods

    onpolicy = cross_tokenizer_methods() if args.onpolicy == "all" else [m for m in args.onpolicy.split(",") if m]
    plan = {"teacher": {}, **rows_plan(onpolicy)}
    if not args.render:
        wanted = [r for r in args.rows.split(",")] if args.rows else list(plan)
        unknown = [r for r in wanted if r not in plan]
        if unknown:
            p.error(f"--rows: unknown {unknown}; choose from {list(plan)}")
        for seed in args.seeds:
            s = Seed(work, seed, progress=False)
            for name in wanted:
                target = Path(args.results) / f"seed{seed}" / f"{slug(name)}.json"
                if target.is_file() and not args.rerun:
                    continue
                t0 = time.perf_counter()
                try:
                    res = run_row(s, name, plan[name])
                except Exception as err:  # a failing row is reported, not hidden
                    print(f"seed {seed} {name}: FAILED {type(err).__name__}: {err}", flush=True)
                    continue
                write_json(target, res, indent=1, default=str)  # atomic: a killed run leaves no half result
                print(f"seed {seed} {name}: accuracy {res['accuracy']:.3f} bpb {res['bpb']:.4f} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print(render(Path(args.results), args.seeds, list(plan), Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
