"""``crossdistill scaling predict | fit | plan | should-i-distill | assistant``: the distillation scaling laws on the
command line.

Examples (sizes accept K/M/B/T/P suffixes):

    crossdistill scaling predict --student-params 1B --student-tokens 20B --teacher-loss 2.2
    crossdistill scaling predict --student-params 1B --student-tokens 20B --teacher-params 7B --teacher-tokens 1T
    crossdistill scaling fit runs.jsonl --law both --bootstrap 200 --output coefficients.json
    crossdistill scaling plan --compute 1e22 --student-params 1B --scenario teacher-inference
    crossdistill scaling should-i-distill --compute 1e21 --student-params 500M --teacher-loss 2.3 --teacher-params 7B
    crossdistill scaling assistant --teacher-loss 1.4 --student-params 1B --student-tokens 20B --assistant 3B:1.75

Every command takes ``--json`` for machine-readable output and ``--coefficients FILE`` (written by ``fit --output``)
to replace the paper's coefficients, which are specific to the paper's setup (C4, its architecture and tokenizer).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import textwrap
from pathlib import Path

from crossdistill.io import write_json
from crossdistill.scaling.flops import SCENARIOS, Scenario, forward_flops_per_token
from crossdistill.scaling.laws import (
    PAPER,
    PRESETS,
    DistillationCoefficients,
    LawPreset,
    SupervisedCoefficients,
    optimal_teacher_loss,
    student_loss,
    supervised_loss,
)

_SUFFIX = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12, "P": 1e15}


def _size(text: str) -> float:
    """Parse ``7B``, ``1.5e9``, ``20T``; reject non-positive and non-finite values with a clear message."""
    raw = text.strip()
    mult = _SUFFIX.get(raw[-1:].upper(), None) if raw else None
    try:
        value = float(raw[:-1]) * mult if mult else float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (examples: 1e9, 7B, 500M, 20T)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: must be a positive finite number")
    return value


def _loss(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number (a cross-entropy in nats, e.g. 2.3)") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a loss must be a positive finite number of nats")
    return value


def _load_preset(args) -> LawPreset:
    if not getattr(args, "coefficients", None):
        return PRESETS[args.preset]
    path = Path(args.coefficients)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"--coefficients {path}: cannot read a JSON coefficients file ({exc}).") from None
    sup = SupervisedCoefficients(**data["supervised"]) if "supervised" in data else PAPER.supervised
    dis = DistillationCoefficients(**data["distillation"]) if "distillation" in data else PAPER.distillation
    return LawPreset(name=str(path), supervised=sup, distillation=dis, description=f"fitted, from {path}")


def _emit(args, payload: dict, lines: list[str]) -> None:
    print(json.dumps(payload, indent=2) if args.json else "\n".join(lines))


def _g(x) -> str:
    return "—" if x is None else f"{x:.4g}"


# ------------------------------------------------------------------ predict


def _cmd_predict(args) -> int:
    preset = _load_preset(args)
    if (args.teacher_params is None) != (args.teacher_tokens is None):
        raise ValueError("pass both --teacher-params and --teacher-tokens to derive L_T from Eq. 1, or --teacher-loss.")
    if args.teacher_loss is not None and args.teacher_params is not None:
        raise ValueError("pass either --teacher-loss or --teacher-params/--teacher-tokens, not both.")
    n_s, d_s = args.student_params, args.student_tokens
    l_sup = supervised_loss(n_s, d_s, preset)
    lt_opt, ls_opt = optimal_teacher_loss(n_s, d_s, preset)
    flops = 3 * forward_flops_per_token(n_s) * d_s
    payload = {"preset": preset.name, "student_params": n_s, "student_tokens": d_s,
               "supervised_student_loss": l_sup, "teacher_optimal_loss": lt_opt,
               "student_loss_at_optimal_teacher": ls_opt, "student_training_flops": flops}
    lines = [f"student: N_S = {n_s:.4g} non-embedding params, D_S = {d_s:.4g} tokens  (preset: {preset.name})",
             f"  supervised loss L(N_S, D_S) (Eq. 1)        {l_sup:.5f} nats",
             f"  best teacher for this student: L_T* = {lt_opt:.4f} -> L_S = {ls_opt:.5f} nats",
             f"  student training compute 3 F(N_S) D_S      {flops:.4g} FLOPs"]
    if args.teacher_params is not None:
        args.teacher_loss = supervised_loss(args.teacher_params, args.teacher_tokens, preset)
        payload.update(teacher_params=args.teacher_params, teacher_tokens=args.teacher_tokens)
        lines.append(f"teacher: N_T = {args.teacher_params:.4g}, D_T = {args.teacher_tokens:.4g} -> L_T = "
                     f"{args.teacher_loss:.5f} nats (Eq. 1)")
    if args.teacher_loss is not None:
        l_s = student_loss(n_s, d_s, args.teacher_loss, preset)
        payload.update(teacher_loss=args.teacher_loss, student_loss=l_s, gain_over_supervised=l_sup - l_s)
        verdict = "better" if l_s < l_sup else "worse"
        lines.append(f"  distilled student loss L_S (Eq. 8)         {l_s:.5f} nats  "
                     f"({abs(l_sup - l_s):.4f} nats {verdict} than supervised)")
    if args.plot:
        from crossdistill.scaling.plots import plot_capacity_gap

        students = [(n_s, d_s)] + [(n_s * k, d_s * k) for k in (10.0,)]
        payload["plot"] = str(plot_capacity_gap(args.plot, students, preset))
        lines.append(f"plot: {payload['plot']}")
    _emit(args, payload, lines)
    return 0


# ------------------------------------------------------------------ fit


def _cmd_fit(args) -> int:
    from crossdistill.scaling.fit import FitOptions, fit_runs
    from crossdistill.scaling.runs import load_runs

    runs = load_runs(args.runs, args.metric)
    options = FitOptions(n_bootstrap=args.bootstrap, top_m=args.top_m, min_loss=args.min_loss, seed=args.seed,
                         progress=not args.json and sys.stderr.isatty())
    results = fit_runs(runs, args.law, options, supervised=_load_preset(args).supervised)
    payload = {name: r.to_dict() for name, r in results.items()}
    lines = [f"{len(runs)} runs in {args.runs} ({int(runs.is_distillation.sum())} distillation, "
             f"{int((~runs.is_distillation).sum())} supervised)"]
    paper = {"supervised": PAPER.supervised.as_dict(), "distillation": PAPER.distillation.as_dict()}
    for name, r in results.items():
        lines += ["", f"{name} law: {r.n_runs} runs fitted, {r.n_grid} grid points scored, {r.n_starts} L-BFGS-B "
                  f"starts, objective {r.objective:.4g}",
                  f"  {'coef':<6} {'fit':>12} {'90% CI':>27} {'paper':>10}"]
        for k, v in r.coefficients.as_dict().items():
            ci = r.intervals.get(k)
            ci_s = f"({ci[0]:.4g}, {ci[1]:.4g})" if ci else "—"
            lines.append(f"  {k:<6} {v:>12.5g} {ci_s:>27} {paper[name][k]:>10.5g}")
        for key, s in r.summary().items():
            lines.append(f"  {key:<8} runs: {s['runs']:>4}   mean |rel err| {100 * s['mean_abs_rel_error']:.3f}%   "
                         f"max {100 * s['max_abs_rel_error']:.3f}%")
    if args.output:
        write_json(args.output, {name: r.coefficients.as_dict() for name, r in results.items()})
        lines.append(f"\ncoefficients written to {args.output} (use with --coefficients)")
    if args.plot:
        from crossdistill.scaling.plots import plot_fit

        name = "distillation" if "distillation" in results else "supervised"
        payload["plot"] = str(plot_fit(args.plot, results[name].residuals, f"{name} law: fit vs observed"))
        lines.append(f"plot: {payload['plot']}")
    _emit(args, payload, lines)
    return 0


# ------------------------------------------------------------------ plan / should-i-distill


def _plan_lines(p, teacher_given: bool = False) -> list[str]:
    optimal = p.N_T is None and not teacher_given
    lines = [f"  scenario {p.scenario}: {Scenario(p.scenario).meaning}",
             f"  student tokens D_S     {p.D_S:.4g}",
             f"  teacher loss L_T       {p.L_T:.4f} nats" + ("  (teacher-optimal L_T*)" if optimal else "")]
    if p.N_T is not None:
        lines.append(f"  teacher size N_T       {p.N_T:.4g} non-embedding params")
    if p.D_T is not None:
        lines.append(f"  teacher tokens D_T     {p.D_T:.4g}" + ("  (at the 1e17 bound: overtrain the teacher)"
                                                              if p.D_T > 0.99e17 else ""))
    total = p.flops_student + p.flops_teacher_inference + p.flops_teacher_pretraining
    lines += [f"  compute split          student {100 * p.flops_student / total:.1f}%, teacher inference "
              f"{100 * p.flops_teacher_inference / total:.1f}%, teacher pretraining "
              f"{100 * p.flops_teacher_pretraining / total:.1f}%",
              f"  predicted student loss {p.L_S:.5f} nats"]
    return lines


def _cmd_plan(args) -> int:
    from crossdistill.scaling.plan import plan_distillation, plan_supervised

    preset = _load_preset(args)
    p = plan_distillation(args.compute, args.student_params, args.scenario, preset)
    s = plan_supervised(args.compute, args.student_params, preset)
    payload = {"preset": preset.name, "distillation": p.to_dict(), "supervised": vars(s)}
    lines = [f"compute-optimal distillation, C = {args.compute:.4g} FLOPs, N_S = {args.student_params:.4g}"]
    lines += _plan_lines(p)
    lines += ["supervised alternative (same student, same compute):",
              f"  tokens D {s.D:.4g} -> loss {s.loss:.5f} nats"]
    if args.plot:
        from crossdistill.scaling.plots import plot_isoflop

        payload["plot"] = str(plot_isoflop(args.plot, [args.compute / 100, args.compute, args.compute * 100], preset))
        lines.append(f"plot: {payload['plot']}")
    _emit(args, payload, lines)
    return 0


def _cmd_should(args) -> int:
    from crossdistill.scaling.plan import should_distill

    preset = _load_preset(args)
    scenario = args.scenario or ("teacher-inference" if args.teacher_loss is not None
                                 else "teacher-pretraining-inference")
    d = should_distill(args.compute, args.student_params, scenario, args.teacher_loss, args.teacher_params, preset)
    payload = {"preset": preset.name, **d.to_dict()}
    lines = [f"C = {args.compute:.4g} FLOPs, student N_S = {args.student_params:.4g}"
             + (f", existing teacher L_T = {args.teacher_loss:.4g}" if args.teacher_loss is not None else ""),
             "distillation:"] + _plan_lines(d.distill, args.teacher_loss is not None) + [
             "supervised (same student, same compute):",
             f"  tokens D {d.supervised.D:.4g} -> loss {d.supervised.loss:.5f} nats", ""]
    if d.winner == "distillation":
        match = (f"plain training would need {d.supervised_compute_to_match:.3g} FLOPs "
                 f"({d.supervised_compute_to_match / args.compute:.3g}x) to match it"
                 if math.isfinite(d.supervised_compute_to_match) else "plain training of this student never reaches it")
        lines.append(f"DISTILL: {d.delta_nats:.4f} nats ({d.delta_percent:.2f}%) lower loss than supervised; {match}.")
    else:
        lines.append(f"TRAIN SUPERVISED: distillation is {-d.delta_nats:.4f} nats ({-d.delta_percent:.2f}%) worse at "
                     "this compute.")
    _emit(args, payload, lines)
    return 0


# ------------------------------------------------------------------ assistant


def _candidate(text: str):
    """``[NAME=]SIZE:LOSS`` (a measured assistant) or ``[NAME=]SIZE@TOKENS`` (one distilled from the teacher)."""
    from crossdistill.scaling.assistant import Candidate

    name, sep, spec = text.partition("=")
    if not sep:
        name, spec = "", text
    if ":" in spec:
        size, loss = spec.split(":", 1)
        params, kwargs = _size(size), {"loss": _loss(loss)}
    elif "@" in spec:
        size, tokens = spec.split("@", 1)
        params, kwargs = _size(size), {"tokens": _size(tokens)}
    else:
        raise argparse.ArgumentTypeError(f"{text!r}: give SIZE:LOSS (e.g. 3B:1.95, a measured assistant) or "
                                         "SIZE@TOKENS (e.g. 3B@60B, distilled from the teacher), optionally NAME=...")
    return Candidate(name.strip() or spec, params, **kwargs)


def _cmd_assistant(args) -> int:
    from crossdistill.scaling.assistant import ASSUMPTIONS, recommend_assistant

    preset = _load_preset(args)
    if (args.teacher_params is None) != (args.teacher_tokens is None):
        raise ValueError("pass both --teacher-params and --teacher-tokens to derive L_T from Eq. 1, or --teacher-loss.")
    if (args.teacher_loss is None) == (args.teacher_params is None):
        raise ValueError("give the teacher: --teacher-loss, or --teacher-params with --teacher-tokens (not both).")
    l_t = args.teacher_loss if args.teacher_loss is not None else float(
        supervised_loss(args.teacher_params, args.teacher_tokens, preset))
    a = recommend_assistant(l_t, args.student_params, args.student_tokens, args.assistant or [], preset)
    lines = [f"student: N_S = {a.student_params:.4g}, D_S = {a.student_tokens:.4g} tokens  (preset: {preset.name})",
             f"teacher: L_T = {l_t:.4f} nats" + (f" (Eq. 1 from N_T = {args.teacher_params:.4g}, D_T = "
                                                 f"{args.teacher_tokens:.4g})" if args.teacher_loss is None else ""),
             f"  supervised student (no teacher)     {a.supervised_loss:.5f} nats",
             f"  distilled directly from the teacher {a.direct_loss:.5f} nats",
             f"  best teacher for this student       L_T* = {a.optimal_teacher_loss:.4f} -> "
             f"{a.student_loss_at_optimal:.5f} nats"
             + ("  (the teacher is stronger than L_T*: capacity gap)" if a.teacher_too_strong else "")]
    if a.options:
        lines += ["assistants (teacher -> assistant -> student), best first:",
                  f"  {'name':<14} {'N_A':>9} {'L_A':>8}  {'student L_S':>11} {'vs direct':>10}  L_A from"]
        for o in a.options:
            lines.append(f"  {o.name:<14} {o.params:>9.4g} {o.loss:>8.4f}  {o.student_loss:>11.5f} "
                         f"{-o.gain:>+10.5f}  {o.loss_source}")
    if a.best is not None:
        lines.append(f"USE ASSISTANT {a.best.name}: the student's predicted loss is {a.best.gain:.4f} nats lower than "
                     "distilled directly.")
    else:
        why = ("no candidate given" if not a.options else "no candidate lowers the student's predicted loss")
        hint = (f"; an assistant helps when its loss is nearer L_T* = {a.optimal_teacher_loss:.4f} than the teacher's"
                if a.teacher_too_strong else "; the teacher is not past the capacity gap, so a weaker one cannot help")
        lines.append(f"DISTILL DIRECTLY: {why}{hint}.")
    lines.append("assumptions:")
    for x in (*ASSUMPTIONS, f"preset {preset.name}: {preset.description or 'no description'}"):
        lines.append(textwrap.fill(x, 116, initial_indent="  - ", subsequent_indent="    ", break_on_hyphens=False))
    payload = {"preset": preset.name, **a.to_dict()}
    if args.teacher_loss is None:
        payload.update(teacher_params=args.teacher_params, teacher_tokens=args.teacher_tokens)
    _emit(args, payload, lines)
    return 0


# ------------------------------------------------------------------ parser


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="crossdistill scaling",
                                     description=__doc__.split("\n\n")[0].replace("``", ""),  # plain text
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="{predict,fit,plan,should-i-distill,assistant}")

    def common(p):
        p.add_argument("--json", action="store_true", help="print machine-readable JSON instead of text")
        p.add_argument("--preset", default=PAPER.name, choices=sorted(PRESETS), help="coefficient preset")
        p.add_argument("--coefficients", help="JSON file written by `fit --output` (overrides --preset)")

    p = sub.add_parser("predict", help="student (and supervised) loss from the laws")
    p.add_argument("--student-params", type=_size, required=True, help="student non-embedding parameters N_S")
    p.add_argument("--student-tokens", type=_size, required=True, help="distillation / training tokens D_S")
    p.add_argument("--teacher-loss", type=_loss, help="teacher validation cross-entropy L_T (nats)")
    p.add_argument("--teacher-params", type=_size, help="teacher non-embedding params N_T (with --teacher-tokens)")
    p.add_argument("--teacher-tokens", type=_size, help="teacher pretraining tokens D_T: L_T = L(N_T, D_T) by Eq. 1")
    p.add_argument("--plot", help="write the capacity-gap plot (PNG) here")
    common(p)
    p.set_defaults(func=_cmd_predict)

    p = sub.add_parser("fit", help="fit the laws to runs.jsonl / CSV records")
    p.add_argument("runs", help="runs.jsonl from `crossdistill train`, or CSV (N,D,L or N_S,D_S,L_T,L_S)")
    p.add_argument("--law", choices=("supervised", "distillation", "both", "joint"), default="both",
                   help="both: supervised, then distillation on the fitted L~_S (the paper's order); joint: then "
                        "refine all 15 coefficients on one objective")
    p.add_argument("--bootstrap", type=int, default=200, help="bootstrap resamples for 90%% CIs (0: none)")
    p.add_argument("--top-m", type=int, default=None, help="L-BFGS-B starts from the best grid points")
    p.add_argument("--min-loss", type=float, default=None, help="fit only runs with loss above this; report the rest")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metric", choices=("loss", "bpb"), default="loss",
                   help="fit per-token cross-entropy (the paper's) or bits per byte (teacher and student with "
                        "different tokenizers: their per-token losses are not comparable)")
    p.add_argument("--output", help="write the fitted coefficients (JSON) here")
    p.add_argument("--plot", help="write a fit-vs-observed plot (PNG) here")
    common(p)
    p.set_defaults(func=_cmd_fit)

    for name, func, help_ in (("plan", _cmd_plan, "compute-optimal teacher and tokens for a student and budget"),
                              ("should-i-distill", _cmd_should, "distillation vs supervised at the same compute")):
        p = sub.add_parser(name, help=help_)
        p.add_argument("--compute", type=_size, required=True, help="total budget in FLOPs (e.g. 1e21)")
        p.add_argument("--student-params", type=_size, required=True, help="student non-embedding parameters N_S")
        p.add_argument("--scenario", choices=SCENARIOS, default=None if name != "plan" else SCENARIOS[-1],
                       help="which teacher costs count (Table 2)")
        if name == "should-i-distill":
            p.add_argument("--teacher-loss", type=_loss, help="an existing teacher's cross-entropy L_T (nats)")
            p.add_argument("--teacher-params", type=_size, help="the existing teacher's non-embedding params")
        else:
            p.add_argument("--plot", help="write iso-FLOP profiles around this budget (PNG) here")
        common(p)
        p.set_defaults(func=func)

    p = sub.add_parser("assistant", help="does a teacher assistant lower the student's predicted loss? which one?")
    p.add_argument("--teacher-loss", type=_loss, help="teacher validation cross-entropy L_T (nats)")
    p.add_argument("--teacher-params", type=_size, help="teacher non-embedding params N_T (with --teacher-tokens)")
    p.add_argument("--teacher-tokens", type=_size, help="teacher pretraining tokens D_T: L_T = L(N_T, D_T) by Eq. 1")
    p.add_argument("--student-params", type=_size, required=True, help="student non-embedding parameters N_S")
    p.add_argument("--student-tokens", type=_size, required=True, help="student distillation tokens D_S")
    p.add_argument("--assistant", type=_candidate, action="append", metavar="[NAME=]SIZE:LOSS|SIZE@TOKENS",
                   help="a candidate assistant (repeat): its size and measured loss (3B:1.95), or its size and the "
                        "tokens it would be distilled on from the teacher (3B@60B)")
    common(p)
    p.set_defaults(func=_cmd_assistant)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError) as exc:  # includes RunsError: bad input gets one clear line, not a traceback
        print(f"crossdistill scaling {args.command}: error: {exc}", file=sys.stderr)
        return 2
