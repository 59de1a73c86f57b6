"""Target tokens per second of online distillation: crossdistill vs TRL's GKDTrainer, same models, data and batch.

    python benchmarks/train_throughput.py [--steps 10] [--batch 8] [--max-new-tokens 16] [--repeats 2]

Both trainers run the tiny recipe's pair (Llama-style teacher, Qwen2-style student, one byte-level BPE tokenizer),
the same 64 conversations, generalized JSD (beta 0.5) at temperature 1, batch ``--batch``, no checkpoints, no
loggers, on the CPU. "Target tokens" are the completion positions the loss is computed on (dataset completions
off-policy, generated tokens on-policy), counted from the batches each trainer actually trains on. Time is measured
from the first to the last optimizer step (model loading, final evaluation and saving excluded); the first step is a
warm-up and is not timed. Prints one markdown table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from transformers import TrainerCallback


class StepTimer(TrainerCallback):
    """Wall time from the end of step 1 to the end of the last step, and the target tokens trained on in between."""

    def __init__(self, count_fn):
        self.count_fn = count_fn
        self.t0 = self.t1 = None
        self.tokens0 = self.tokens1 = 0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 1:
            self.t0, self.tokens0 = time.perf_counter(), self.count_fn()
        self.t1, self.tokens1 = time.perf_counter(), self.count_fn()

    @property
    def tokens_per_s(self) -> float:
        return (self.tokens1 - self.tokens0) / max(self.t1 - self.t0, 1e-9)


def run_crossdistill(paths, work: Path, steps: int, batch: int, lmbda: float, new_tokens: int) -> float:
    import crossdistill
    from crossdistill.config import load_config

    cfg = load_config(None, [
        f"student.model={paths['student']}", f"teacher.model={paths['teacher']}", f"data.train={paths['data']}",
        "data.eval_fraction=0", "loss.name=jsd", "loss.params={beta: 0.5}", f"onpolicy.lmbda={lmbda}",
        f"onpolicy.max_new_tokens={new_tokens}", "onpolicy.temperature=1.0", f"train.max_steps={steps}",
        f"train.per_device_batch_size={batch}", "train.report_to=[]", "train.progress_bar=false",
        f"train.output_dir={work / 'cd'}", "train.learning_rate=1e-4"])
    holder = {}

    class Grab(StepTimer):
        def on_train_begin(self, args, state, control, **kwargs):
            holder["state"] = state

    timer = Grab(lambda: holder["state"].num_input_tokens_seen)
    crossdistill.distill(cfg, callbacks=[timer], overwrite=True)
    return timer.tokens_per_s


def run_trl(paths, work: Path, steps: int, batch: int, lmbda: float, new_tokens: int) -> float:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    from crossdistill.data.load import load_examples

    counted = {"n": 0}

    class CountingGKD(GKDTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            counted["n"] += int((inputs["labels"][:, 1:] != -100).sum())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    tok = AutoTokenizer.from_pretrained(paths["student"])
    ds = Dataset.from_list(load_examples(paths["data"]))
    args = GKDConfig(output_dir=str(work / "trl"), max_steps=steps, per_device_train_batch_size=batch,
                     learning_rate=1e-4, lmbda=lmbda, beta=0.5, temperature=1.0, max_new_tokens=new_tokens,
                     report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1000,
                     use_cpu=True, seed=0)
    trainer = CountingGKD(model=AutoModelForCausalLM.from_pretrained(paths["student"]),
                          teacher_model=AutoModelForCausalLM.from_pretrained(paths["teacher"]), args=args,
                          train_dataset=ds, processing_class=tok)
    timer = StepTimer(lambda: counted["n"])
    trainer.add_callback(timer)
    trainer.train()
    return timer.tokens_per_s


def micro_step(paths, reps: int, batch: int) -> tuple[float, float]:
    """Median ms of forward + loss + backward on ONE fixed batch: crossdistill's objective vs TRL's GKD loss
    (full logits of both models + ``GKDTrainer.generalized_jsd_loss``), interleaved, no Trainer around them."""
    from trl.experimental.gkd import GKDTrainer

    from crossdistill import models
    from crossdistill.config import load_config
    from crossdistill.data.dataset import DistillCollator
    from crossdistill.train.run import prepare
    from crossdistill.train.trainer import MethodRunner

    cfg = load_config(None, [f"student.model={paths['student']}", f"teacher.model={paths['teacher']}",
                             f"data.train={paths['data']}", "loss.name=jsd", "data.eval_fraction=0"])
    p = prepare(cfg, progress=False)
    student = models.load_model(cfg.student, "student")
    teacher = models.freeze_teacher(models.load_model(cfg.teacher, "teacher"))
    b = DistillCollator(p.student_tok.pad_token_id)([p.train[i] for i in range(batch)])
    runner = MethodRunner(p.method, cfg, teacher, p.student_tok, p.teacher_tok)

    def ours():
        runner.objective(student, b).loss.backward()

    def trl():
        zs = student(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        with torch.no_grad():
            zt = teacher(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        GKDTrainer.generalized_jsd_loss(zs[:, :-1], zt[:, :-1], labels=b["labels"][:, 1:], beta=0.5).backward()

    times = {ours: [], trl: []}
    for f in (ours, trl):
        f()
    for _ in range(reps):
        for f in (ours, trl):
            t0 = time.perf_counter()
            f()
            times[f].append(time.perf_counter() - t0)
    return 1000 * statistics.median(times[ours]), 1000 * statistics.median(times[trl])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--lmbdas", default="0,1", help="comma-separated on-policy fractions to measure ('' to skip)")
    ap.add_argument("--micro-reps", type=int, default=15, help="repetitions of the fixed-batch step timing (0 = skip)")
    args = ap.parse_args(argv)
    from crossdistill.train.tiny_assets import build

    have_trl = importlib.util.find_spec("trl") is not None
    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        paths = build(work / "tiny", n_examples=64)
        micro = micro_step(paths, args.micro_reps, args.batch) if have_trl and args.micro_reps else None
        for lmbda in [float(x) for x in args.lmbdas.split(",") if x]:
            res = {"crossdistill": [], "trl": []}
            for r in range(args.repeats):
                for name, fn in (("crossdistill", run_crossdistill), ("trl", run_trl)):
                    if name == "trl" and not have_trl:
                        continue
                    res[name].append(fn(paths, work / f"{name}-{lmbda}-{r}", args.steps, args.batch, lmbda,
                                        args.max_new_tokens))
                    print(f"# lambda={lmbda} {name} run {r}: {res[name][-1]:.1f} target tokens/s", file=sys.stderr)
            cd = statistics.median(res["crossdistill"])
            tr = statistics.median(res["trl"]) if res["trl"] else float("nan")
            rows.append((lmbda, cd, tr, cd / tr if res["trl"] else float("nan")))
    print(f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, torch "
          f"{torch.__version__}, threads {torch.get_num_threads()}; steps {args.steps} (first untimed), batch "
          f"{args.batch}, max_new_tokens {args.max_new_tokens}, median of {args.repeats}\n")
    print("| on-policy λ | crossdistill target tok/s | TRL GKDTrainer target tok/s | crossdistill / TRL |")
    print("|---|---|---|---|")
    for lmbda, cd, tr, ratio in rows:
        print(f"| {lmbda:g} | {cd:.1f} | {tr:.1f} | {ratio:.2f}× |")
    if micro:
        print(f"\nOne fixed batch of {args.batch}, forward + loss + backward, median of {args.micro_reps} (ms):\n")
        print("| crossdistill objective | TRL GKD loss on full logits | TRL / crossdistill |")
        print("|---|---|---|")
        print(f"| {micro[0]:.1f} | {micro[1]:.1f} | {micro[1] / micro[0]:.2f}× |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
