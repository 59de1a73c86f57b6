"""The strong-teacher and compute challenges, measured on the demo's real teacher (issue 17, Scope 4).

Reproduce (2 CPU cores; see benchmarks/results/challenges.md for the wall time of the recorded run):

    OMP_NUM_THREADS=1 python benchmarks/challenges.py --seeds 0 1 2 --out benchmarks/results/challenges.md

Setting: exactly the demo's (``crossdistill demo``) with its ``quick`` budget — the packaged SmolLM2-135M-Instruct
teacher (converted once, cached), the arithmetic word-problem task (training and held-out sets drawn per seed), the
randomly initialised Llama-style student with its own SentencePiece-style tokenizer (cross-tokenizer against the
teacher), ``gold_hybrid`` with the demo's parameters as the distillation objective, the demo's optimizer settings.
Per seed every row starts from the same initial student and trains the same number of optimizer steps as the demo's
quick budget (``n_train / batch_size * epochs``), except where a row says otherwise. Rows:

* ``ce`` — the student's cross-entropy on the ground truth, no teacher (the row every teacher must beat).
* ``direct`` — teacher -> student, ``gold_hybrid`` from the demo's top-k teacher cache.
* ``assistant`` — teacher -> assistant (a wider, deeper student: the demo's full-budget size, same tokenizer as the
  student), ``gold_hybrid`` from the same cache, ``--assistant-epochs`` epochs; chain stage 1.
* ``chain`` — assistant -> student, ``gold_hybrid`` with the assistant as the (online) teacher; chain stage 2. Both
  stages are one ``chain:`` recipe run by :func:`crossdistill.train.chain.run_chain`. The final student gets the same
  steps as ``direct`` (same total student compute); the assistant's training is the chain's extra cost, reported.
* ``smol_online`` — teacher -> student with SmolLM2 online (λ = 0): the one-teacher row of (c) and the λ = 0 row of
  (b), on the same online-teacher path as both.
* ``lam_const`` — on-policy mixing with constant λ = 0.5 (the student samples ``gen_tokens`` tokens per prompt).
* ``lam_linear`` — a linear ramp λ: 0 -> 0.5 over the run, given as many steps as fit in ``lam_const``'s wall time
  (matched per seed: the per-step times of ``lam_const``'s own off- and on-policy steps, times the ramp's seeded
  decisions, which are known in advance; the measured seconds are reported next to it).
* ``lam_adaptive`` — the adaptive rule (start 0.5, lower 0.05, upper 1), as many steps as ``lam_const`` (its
  decisions depend on the losses, so they cannot be matched in advance; its measured seconds are reported).
* ``two_teachers`` — SmolLM2 (online) and the assistant, weight 0.5 each, off-policy (``teachers:``); against
  ``smol_online`` (SmolLM2 alone) and ``chain`` (the assistant alone, the same steps from the same student).

Every student, the assistant and the teacher are then scored on the seed's held-out set with
:func:`crossdistill.evaluation.evaluate_models`: bits per byte, CE, agreement with SmolLM2 over aligned groups and
greedy task accuracy. The table reports mean ± std over seeds; the comparisons report per-seed differences of
held-out bits per byte, "helps" only when better in every seed by more than one std of the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

ROWS = ("ce", "direct", "assistant", "chain", "smol_online", "lam_const", "lam_linear", "lam_adaptive",
        "two_teachers")
DESCRIPTIONS = {
    "untrained": "the initial student (every row below starts from it, except the assistant)",
    "ce": "CE on the ground truth, no teacher",
    "direct": "SmolLM2 -> student, gold_hybrid from the top-k cache",
    "assistant": "SmolLM2 -> assistant (4 layers, hidden 192), gold_hybrid from the cache: chain stage 1",
    "chain": "assistant -> student, gold_hybrid, assistant online: chain stage 2",
    "smol_online": "SmolLM2 -> student, gold_hybrid, teacher online, λ = 0",
    "lam_const": "as smol_online, on-policy λ = 0.5 constant",
    "lam_linear": "as smol_online, λ linear 0 -> 0.5, steps matched to lam_const's wall time",
    "lam_adaptive": "as smol_online, adaptive λ (start 0.5, [0.05, 1]), lam_const's steps",
    "two_teachers": "SmolLM2 (online) + assistant, weight 0.5 each, gold_hybrid, off-policy",
    "teacher": "SmolLM2-135M-Instruct itself",
}
COMPARISONS = (
    ("a", "chain", "direct", "assistant chain vs direct distillation (final student: same init, same steps)"),
    ("a", "direct", "ce", "direct distillation vs CE only"),
    ("a", "chain", "ce", "assistant chain vs CE only"),
    ("b", "lam_const", "smol_online", "λ = 0.5 constant vs λ = 0 (what on-policy steps buy)"),
    ("b", "lam_linear", "lam_const", "λ linear 0 -> 0.5 vs constant 0.5 (same wall time)"),
    ("b", "lam_adaptive", "lam_const", "adaptive λ vs constant 0.5 (same steps)"),
    ("b", "lam_linear", "smol_online", "λ linear 0 -> 0.5 vs λ = 0"),
    ("c", "two_teachers", "smol_online", "two teachers vs SmolLM2 alone (online, same steps)"),
    ("c", "two_teachers", "chain", "two teachers vs the assistant alone (same steps)"),
    ("c", "two_teachers", "ce", "two teachers vs CE only"),
    ("-", "direct", "smol_online", "SmolLM2 from the cache vs online (sanity: should be a tie)"),
)
ADAPTIVE = {"kind": "adaptive", "start": 0.5, "lower": 0.05, "upper": 1.0}
TIE = 0.001
"""A difference below this (bits per byte) in every seed is reported as a tie, whatever its sign."""


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f}/{five:.1f}/{fifteen:.1f}"


def make_step_timer():
    """A ``TrainerCallback`` that records the wall time of every optimizer step (between consecutive step ends, so a
    step's rollouts, which happen before its first micro-batch, are counted)."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self._last = 0.0

        def on_train_begin(self, args, state, control, **kwargs):
            self._last = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            now = time.perf_counter()
            self.times.append(now - self._last)
            self._last = now

    return StepTimer()


def on_policy_steps(history: list[dict[str, Any]]) -> int:
    """Realised on-policy steps of a run logged every step (``logging_steps: 1``)."""
    return int(round(sum(h.get("on_policy_fraction", 0.0) for h in history if "loss" in h)))


def predicted_decisions(seed: int, schedule: dict[str, Any] | float, steps: int) -> list[bool]:
    """The on-policy decision of every step of a constant or ramp schedule (the trainer's own seeded coin)."""
    from crossdistill.config.schema import LambdaSchedule
    from crossdistill.train.onpolicy import ramp_lmbda, step_is_on_policy

    sched = LambdaSchedule(kind="constant", start=float(schedule)) if not isinstance(schedule, dict) else \
        LambdaSchedule(**schedule)
    return [step_is_on_policy(seed, s, ramp_lmbda(sched, s, steps)) for s in range(steps)]


def matched_steps(seed: int, schedule: dict[str, Any], ref_times: list[float], ref_on: list[bool],
                  limit: int) -> tuple[int, float]:
    """Steps of ``schedule`` whose predicted wall time is closest to the reference run's (``ref_times`` per step,
    ``ref_on`` its decisions): off-policy and on-policy steps cost what they cost in the reference run."""
    on = [t for t, d in zip(ref_times, ref_on) if d]
    off = [t for t, d in zip(ref_times, ref_on) if not d]
    t_off = statistics.mean(off) if off else statistics.mean(ref_times)
    t_on = statistics.mean(on) if on else t_off
    target = sum(ref_times)
    best = (len(ref_times), float("inf"), 0.0)
    for m in range(2, limit + 1):
        pred = sum(t_on if d else t_off for d in predicted_decisions(seed, schedule, m))
        if abs(pred - target) < best[1]:
            best = (m, abs(pred - target), pred)
    return best[0], best[2]


class SeedRun:
    """All rows of one seed, in a fresh work directory."""

    def __init__(self, seed: int, work: Path, teacher: str, budget, assistant_epochs: float, rows: list[str]):
        self.seed, self.work, self.teacher, self.budget = seed, work, teacher, budget
        self.assistant_epochs, self.rows = assistant_epochs, rows
        self.info: dict[str, dict[str, Any]] = {}
        self.dirs: dict[str, str] = {}

    def base(self, row: str, method: str, student: Path, cache: Path | None = None) -> dict[str, Any]:
        from crossdistill.demo.methods import method_config

        cfg = method_config(method, student=student, teacher=self.teacher, train=self.paths["train"],
                            generated=None, out=self.work, budget=self.budget, seed=self.seed, cache=cache)
        cfg["train"]["output_dir"] = str(self.work / "students" / row)
        cfg["train"]["logging_steps"] = 1  # every step's on_policy_fraction: the realised on-policy steps, exactly
        cfg["train"]["progress_bar"] = cfg["train"]["log_lines"] = False
        cfg["method"] = f"challenges:{row}"
        return cfg

    def train(self, row: str, cfg: dict[str, Any], timed: bool = False) -> None:
        from crossdistill.demo.methods import train_method

        if not timed:
            run = train_method(cfg)
            times = None
        else:  # train_method, with a per-step timer
            from crossdistill.config import config_from_dict
            from crossdistill.train.run import run_training

            timer = make_step_timer()
            parsed = config_from_dict(cfg)
            start = time.perf_counter()
            run_training(parsed, overwrite=True, callbacks=[timer])
            seconds = time.perf_counter() - start
            state = json.loads((Path(parsed.train.output_dir) / "trainer_state.json").read_text())
            run = type("Run", (), {"output_dir": parsed.train.output_dir, "seconds": seconds,
                                   "steps": int(state["global_step"]), "log_history": state["log_history"]})
            times = timer.times
        self.record(row, run.output_dir, run.seconds, run.steps, run.log_history, times)

    def record(self, row: str, output_dir: str, seconds: float, steps: int, history: list[dict[str, Any]],
               times: list[float] | None = None) -> None:
        record = json.loads((Path(output_dir) / "run_record.json").read_text())
        self.dirs[row] = output_dir
        self.info[row] = {"steps": steps, "on_policy_steps": on_policy_steps(history),
                          "train_seconds": float(record["train_seconds"]), "run_seconds": round(seconds, 1),
                          "step_times": times, "load": load()}
        print(f"  seed {self.seed} {row}: {steps} steps ({self.info[row]['on_policy_steps']} on-policy), "
              f"{record['train_seconds']:.0f} s training, {seconds:.0f} s in all; load {load()}", flush=True)

    def run(self) -> dict[str, Any]:
        from crossdistill import tasks
        from crossdistill.demo.student import build_student
        from crossdistill.demo.teacher import build_teacher_cache

        shutil.rmtree(self.work, ignore_errors=True)
        b = self.budget
        train_ex, held_ex = tasks.make_split(b.n_train, b.n_eval, self.seed, style=b.task_style)
        self.paths = tasks.write_split(self.work / "data", train_ex, held_ex)
        texts = [e.question for e in train_ex] + [e.completion for e in train_ex] + ["user\nmodel\n"] * 8
        student = build_student(self.work / "students" / "untrained", texts, b, self.seed)
        assistant_init = build_student(self.work / "students" / "assistant_init", texts,
                                       replace(b, student_hidden=192, student_layers=4), self.seed)
        start = time.perf_counter()
        cache = build_teacher_cache(self.teacher, self.paths["train"], self.work / "teacher_cache", b, False)
        self.cache_seconds = round(time.perf_counter() - start, 1)
        want = set(self.rows)
        online = {"model": self.teacher}
        gen = {"max_new_tokens": b.gen_tokens}

        if "ce" in want:
            self.train("ce", self.base("ce", "ce", student))
        if "direct" in want:
            self.train("direct", self.base("direct", "gold_hybrid", student, cache))
        if want & {"assistant", "chain", "two_teachers"}:
            self.run_chain(student, assistant_init, cache)
        if "smol_online" in want:
            self.train("smol_online", self.base("smol_online", "gold_hybrid", student), timed=True)
        if want & {"lam_const", "lam_linear", "lam_adaptive"}:
            cfg = self.base("lam_const", "gold_hybrid", student)
            cfg["onpolicy"] = {"lmbda": 0.5, **gen}
            self.train("lam_const", cfg, timed=True)
            ref = self.info["lam_const"]
            ref_on = predicted_decisions(self.seed, 0.5, ref["steps"])
            if sum(ref_on) != ref["on_policy_steps"]:
                print(f"  warning: predicted {sum(ref_on)} on-policy steps, logged {ref['on_policy_steps']}")
        if "lam_linear" in want:
            ramp = {"kind": "linear", "start": 0.0, "end": 0.5}
            steps, pred = matched_steps(self.seed, ramp, ref["step_times"], ref_on, 4 * ref["steps"])
            cfg = self.base("lam_linear", "gold_hybrid", student)
            cfg["onpolicy"] = {"lmbda": ramp, **gen}
            cfg["train"]["max_steps"] = steps
            self.train("lam_linear", cfg, timed=True)
            self.info["lam_linear"]["predicted_seconds"] = round(pred, 1)
            self.info["lam_linear"]["reference_seconds"] = round(sum(ref["step_times"]), 1)
        if "lam_adaptive" in want:
            cfg = self.base("lam_adaptive", "gold_hybrid", student)
            cfg["onpolicy"] = {"lmbda": dict(ADAPTIVE), **gen}
            self.train("lam_adaptive", cfg, timed=True)
        if "two_teachers" in want:
            cfg = self.base("two_teachers", "gold_hybrid", student)
            cfg.pop("teacher")
            cfg["teachers"] = [{"name": "smollm2", **online, "weight": 0.5},
                               {"name": "assistant", "model": self.dirs["assistant"], "weight": 0.5}]
            self.train("two_teachers", cfg, timed=True)
        return self.evaluate(student, held_ex)

    def run_chain(self, student: Path, assistant_init: Path, cache: Path) -> None:
        """Teacher -> assistant -> student as one ``chain:`` recipe; stage 1 reads the cache like ``direct``."""
        from crossdistill.config import config_from_dict
        from crossdistill.train.chain import run_chain

        cfg = self.base("chain", "gold_hybrid", assistant_init, cache)
        cfg["train"]["output_dir"] = str(self.work / "chain")
        cfg["train"]["num_epochs"] = self.assistant_epochs
        cfg["chain"] = [{"name": "assistant", "recipe": {}},
                        {"name": "student", "recipe": {"student": {"model": str(student)},
                                                       "train": {"num_epochs": self.budget.epochs}}}]
        start = time.perf_counter()
        records = run_chain(config_from_dict(cfg), overwrite=True)
        seconds = time.perf_counter() - start
        for row, rec in zip(("assistant", "chain"), records):
            out = Path(rec["output_dir"])
            history = json.loads((out / "trainer_state.json").read_text())["log_history"]
            self.record(row, str(out), seconds if row == "chain" else float(rec["train_seconds"]), int(rec["steps"]),
                        history)
        self.info["chain"]["run_seconds"] = round(seconds, 1)  # both stages, loading included

    def evaluate(self, student: Path, held_ex) -> dict[str, Any]:
        from crossdistill.evaluation import evaluate_models, load_pretrained

        models = {"untrained": load_pretrained(str(student))}
        models.update({row: load_pretrained(d) for row, d in self.dirs.items()})
        start = time.perf_counter()
        results, _ = evaluate_models(models, [e.record() for e in held_ex], teacher=load_pretrained(self.teacher),
                                     max_new_tokens=self.budget.eval_tokens, teacher_generate=False, progress=False)
        print(f"  seed {self.seed} evaluation: {time.perf_counter() - start:.0f} s", flush=True)
        return {"results": {k: {m: getattr(v, m) for m in ("bpb", "ce", "agreement", "accuracy")}
                            for k, v in results.items()},
                "runs": self.info, "cache_seconds": self.cache_seconds}


# --------------------------------------------------------------------------------------------------------- report
def mean_std(xs: list[float | None], fmt: str = "{:.4f}") -> str:
    xs = [x for x in xs if x is not None]
    if not xs:
        return "—"
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{fmt.format(statistics.mean(xs))} ± {fmt.format(sd)}"


def compare(per_seed: list[dict[str, Any]], row: str, ref: str) -> dict[str, Any] | None:
    pairs = [(s["results"][row]["bpb"], s["results"][ref]["bpb"]) for s in per_seed
             if row in s["results"] and ref in s["results"]]
    if len(pairs) != len(per_seed) or not pairs:
        return None
    d = [a - b for a, b in pairs]
    m = statistics.mean(d)
    sd = statistics.stdev(d) if len(d) > 1 else 0.0
    better = sum(x < 0 for x in d)
    if max(abs(x) for x in d) < TIE:
        verdict = "tie"
    elif all(x < 0 for x in d) and -m > sd:
        verdict = "helps"
    elif all(x > 0 for x in d) and m > sd:
        verdict = "hurts"
    else:
        verdict = "no clear effect"
    ts = [(s["runs"].get(row, {}).get("train_seconds"), s["runs"].get(ref, {}).get("train_seconds"))
          for s in per_seed]
    dt = [a - b for a, b in ts if a is not None and b is not None]
    return {"d": d, "mean": m, "sd": sd, "better": better, "n": len(d), "verdict": verdict,
            "dt": statistics.mean(dt) if len(dt) == len(per_seed) else None}


def tables(per_seed: list[dict[str, Any]], rows: list[str]) -> tuple[str, str]:
    order = ["teacher", "untrained"] + [r for r in ROWS if r in rows]
    head = ("| row | what | bits/byte | CE nats/tok | agreement | accuracy | steps | on-policy steps | train s |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for row in order:
        res = [s["results"].get(row) for s in per_seed]
        if any(r is None for r in res):
            continue
        runs = [s["runs"].get(row) for s in per_seed]
        has_run = all(r is not None for r in runs)
        steps = "/".join(str(r["steps"]) for r in runs) if has_run else ""
        onp = "/".join(str(r["on_policy_steps"]) for r in runs) if has_run else ""
        secs = mean_std([r["train_seconds"] for r in runs], "{:.0f}") if has_run else ""
        lines.append(f"| {row} | {DESCRIPTIONS[row]} | {mean_std([r['bpb'] for r in res])} | "
                     f"{mean_std([r['ce'] for r in res])} | {mean_std([r['agreement'] for r in res], '{:.3f}')} | "
                     f"{mean_std([r['accuracy'] for r in res], '{:.3f}')} | {steps} | {onp} | {secs} |")
    comp = ["| | comparison | Δ bits/byte (mean ± std) | per seed | better in | Δ train s | verdict |",
            "|---|---|---|---|---|---|---|"]
    for part, row, ref, what in COMPARISONS:
        c = compare(per_seed, row, ref)
        if c is None:
            continue
        dt = "" if c["dt"] is None else f"{c['dt']:+.0f}"
        comp.append(f"| {part} | {row} − {ref}: {what} | {c['mean']:+.4f} ± {c['sd']:.4f} | "
                    f"{', '.join(f'{x:+.4f}' for x in c['d'])} | {c['better']}/{c['n']} | {dt} | "
                    f"**{c['verdict']}** |")
    return "\n".join(lines), "\n".join(comp)


def write_markdown(path: Path, run: dict[str, Any]) -> None:
    """The result file from a run's ``results.json`` contents."""
    from crossdistill.demo.budget import DemoBudget

    budget, per_seed, rows = DemoBudget(**run["budget"]), run["per_seed"], run["rows"]
    seeds, wall, loads, command = run["seeds"], run["wall_seconds"], run["loads"], run["command"]
    table, comp = tables(per_seed, rows)
    lin = [(s["runs"]["lam_linear"], s["runs"]["lam_const"]) for s in per_seed if "lam_linear" in s["runs"]]
    not_run = [r for r in ROWS if r not in rows]
    steps = int(budget.n_train / budget.batch_size * budget.epochs)
    lines = [
        "# Strong-teacher and compute challenges on the real teacher (issue 17, Scope 4)", "",
        "Teacher-assistant chain vs direct distillation, a λ schedule vs constant λ, two teachers vs one — on the "
        "demo's setting (SmolLM2-135M-Instruct teacher, arithmetic word problems, a randomly initialised "
        "cross-tokenizer student; `benchmarks/challenges.py` describes every row).", "",
        f"Command: `{command}`  ",
        f"Budget: the demo's `quick` budget — {budget.n_train} training prompts × {budget.epochs:g} epochs, batch "
        f"{budget.batch_size} = {steps} optimizer steps per student, lr {budget.learning_rate:g}, student "
        f"{budget.student_layers} layers / hidden {budget.student_hidden}, {budget.n_eval} held-out examples, "
        f"on-policy samples of {budget.gen_tokens} tokens, accuracy from {budget.eval_tokens} greedy tokens; "
        f"assistant 4 layers / hidden 192 (the demo's full-budget student), {run['assistant_epochs']:g} epochs "
        f"({int(budget.n_train / budget.batch_size * run['assistant_epochs'])} steps) from the teacher cache "
        f"(top-{budget.cache_k}); seeds {' '.join(map(str, seeds))} (each seed: its own data split and "
        "initial student).  ",
        f"Machine: 2-core CPU shared with other jobs, `OMP_NUM_THREADS={run['omp_num_threads']}`;"
        f" load average (1/5/15 min) {loads['start']} at the start, {loads['end']} at the end. "
        f"**Wall time {wall / 60:.1f} min.**", "",
        "bits/byte: held-out NLL / (ln 2 · UTF-8 bytes of the completions), lower is better, comparable across "
        "tokenizers; agreement: with SmolLM2's greedy next token over aligned groups; accuracy: greedy answers "
        "scored against the task's answer. Steps and on-policy steps are per seed; train s is the training loop "
        "(mean ± std over seeds). The teacher's accuracy is not measured (as in the demo's quick budget: greedy "
        "generation with the 135M teacher is the slowest part of the evaluation).", "",
        table, "",
        "Comparisons (held-out bits per byte, row minus reference, paired by seed; negative = the row is better; "
        "'helps' / 'hurts' only when every seed agrees and the mean exceeds one std of the differences; 'tie' when "
        f"every seed's difference is below {TIE} bits/byte):", "",
        comp, "",
    ]
    if lin:
        lines += ["Wall-time matching of `lam_linear` (per seed): steps chosen so that its predicted loop time — "
                  "`lam_const`'s measured mean off-policy and on-policy step times, times the ramp's seeded "
                  "decisions — is closest to `lam_const`'s measured loop time; measured afterwards: " +
                  "; ".join(f"seed {s}: {li['steps']} steps, predicted {li['predicted_seconds']:.0f} s, measured "
                            f"{sum(li['step_times']):.0f} s vs lam_const {sum(lc['step_times']):.0f} s"
                            for s, (li, lc) in zip(seeds, lin)) + ".", ""]
    cache = [s["cache_seconds"] for s in per_seed]
    assist = [s["runs"]["assistant"]["train_seconds"] for s in per_seed if "assistant" in s["runs"]]
    lines += [f"Teacher cache (per seed, shared by `direct` and the assistant): {mean_std(cache, '{:.0f}')} s. "
              f"Assistant training (the chain's extra cost, per seed): {mean_std(assist, '{:.0f}')} s.", ""]
    if not_run:
        lines += [f"Not run: {', '.join(not_run)} (`--rows` excluded them).", ""]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines), encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    p.add_argument("--assistant-epochs", type=float, default=8.0,
                   help="epochs of the assistant (chain stage 1; default 8: 4x the final student's)")
    p.add_argument("--work", default=str(ROOT / "outputs" / "challenges"), help="work directory (replaced)")
    p.add_argument("--out", help="markdown result file (e.g. benchmarks/results/challenges.md)")
    p.add_argument("--from-json", help="write --out from a finished run's results.json (in its --work) instead of "
                   "training: the report's layout changes, the measurements do not")
    args = p.parse_args(argv)
    if args.from_json:
        if not args.out:
            p.error("--from-json needs --out")
        write_markdown(Path(args.out), json.loads(Path(args.from_json).read_text()))
        print(f"written: {args.out}")
        return 0
    rows = [r for r in args.rows.split(",") if r]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {list(ROWS)}")
    if "lam_linear" in rows or "lam_adaptive" in rows:
        rows = list(dict.fromkeys(rows + ["lam_const"]))
    if "two_teachers" in rows:
        rows = list(dict.fromkeys(rows + ["assistant"]))

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from crossdistill.assets import SMOLLM2_135M_INSTRUCT, convert_gguf, find_packaged_file
    from crossdistill.demo.budget import BUDGETS
    from crossdistill.demo.run import _quiet_libraries

    _quiet_libraries()
    budget = BUDGETS["random_quick"]
    teacher = str(convert_gguf(find_packaged_file(SMOLLM2_135M_INSTRUCT)))
    loads = {"start": load()}
    start = time.perf_counter()
    per_seed = []
    for seed in args.seeds:
        print(f"seed {seed} (t={time.perf_counter() - start:.0f} s, load {load()})", flush=True)
        per_seed.append(SeedRun(seed, Path(args.work) / f"seed{seed}", teacher, budget, args.assistant_epochs,
                                rows).run())
    wall = time.perf_counter() - start
    loads["end"] = load()
    Path(args.work).mkdir(parents=True, exist_ok=True)
    run = {"command": " ".join(["OMP_NUM_THREADS=1", "python", "benchmarks/challenges.py", *sys.argv[1:]]),
           "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"), "budget": asdict(budget),
           "assistant_epochs": args.assistant_epochs, "seeds": args.seeds, "rows": rows, "wall_seconds": wall,
           "loads": loads, "per_seed": per_seed}
    (Path(args.work) / "results.json").write_text(json.dumps(run, indent=2, default=str))
    table, comp = tables(per_seed, rows)
    print("\n" + table + "\n\n" + comp + f"\n\nwall time {wall / 60:.1f} min; load {loads['start']} -> {loads['end']}")
    if args.out:
        write_markdown(Path(args.out), run)
        print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
