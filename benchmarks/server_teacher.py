"""A teacher served by vLLM vs the in-process teacher, on the demo's real cross-tokenizer pair.

SmolLM2-135M-Instruct (byte-level BPE, 49,152 tokens) on a vLLM CPU server (fp32, the command of docs/server.md,
started here from ``.venv-vllm``) against the same model in the training process. Measured:

1. scoring: teacher top-k records of the demo's training examples (the cache writer's work), positions per second,
   in-process (batched forward) vs the server (one request per sequence, 1 and ``--concurrency`` in flight);
2. training: seconds per step of the demo's cross-tokenizer ``uld`` student with the teacher served vs in-process;
3. ``crossdistill cache`` (top-k) from the server vs in-process;
4. with ``--rollouts`` (instead of 1-3): on-policy rollouts of the demo student, tokens per second of a vLLM server
   (``onpolicy.backend: vllm``) vs HF ``generate``, and the seconds of one weight refresh (save + reload).

Usage (2-core CPU, ~6 minutes with the server's start):
    python benchmarks/server_teacher.py
    python benchmarks/server_teacher.py --n-train 32 --steps 4      # a quick look
    python benchmarks/server_teacher.py --rollouts                  # ~3 minutes
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=64, help="teacher log-probs per position")
    ap.add_argument("--n-train", type=int, default=128, help="demo training examples scored / cached")
    ap.add_argument("--steps", type=int, default=8, help="training steps of each uld run")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1, help="torch threads here, OMP threads of the server")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="work directory (default: a temporary one)")
    ap.add_argument("--rollouts", action="store_true", help="measure vLLM rollouts vs HF generate instead")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="rollout length (--rollouts)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rollouts:
        return rollouts(args)

    import crossdistill
    from crossdistill import tasks
    from crossdistill.assets import convert_gguf, find_packaged_file
    from crossdistill.config import TeacherServerConfig, config_from_dict
    from crossdistill.data.load import load_examples, prompt_messages
    from crossdistill.data.render import render
    from crossdistill.demo.budget import BUDGETS, MAX_LENGTH
    from crossdistill.demo.methods import method_config
    from crossdistill.demo.student import build_student
    from crossdistill.teacher.forward import load_teacher, teacher_records
    from crossdistill.teacher.server import ServedTeacher, server_records
    from crossdistill.testing.vllm_server import VLLMServer
    from crossdistill.train.run import run_training

    budget = replace(BUDGETS["random_full"], n_train=args.n_train)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        teacher = str(convert_gguf(find_packaged_file()))
        train_ex, held_ex = tasks.make_split(budget.n_train, budget.n_eval, args.seed, style=budget.task_style)
        paths = tasks.write_split(out / "data", train_ex, held_ex)
        texts = [e.question for e in train_ex] + [e.completion for e in train_ex] + ["user\nmodel\n"] * 8
        student = build_student(out / "students" / "untrained", texts, budget, args.seed)

        server = VLLMServer(teacher, served_name="teacher", max_logprobs=max(64, args.k), max_model_len=1024,
                            threads=args.threads, log=out / "server.log")
        server.start(timeout=900)
        print(f"server ready in {server.startup_seconds:.0f} s ({server.url})")
        try:
            model, tok = load_teacher(teacher)
            examples = load_examples(str(paths["train"]))
            rendered = []
            for ex in examples:
                prompt, completion = prompt_messages(ex)
                rendered.append(render(tok, prompt if prompt is not None else "", completion,
                                       max_length=MAX_LENGTH))
            positions = sum(sum(1 for y in r.labels[1:] if y != -100) for r in rendered)
            tokens = sum(len(r.input_ids) for r in rendered)

            # 1. scoring
            t0 = time.perf_counter()
            for s in range(0, len(rendered), 8):
                teacher_records(model, tok, rendered[s:s + 8], list(range(s, s + 8)), k=args.k)
            local_s = time.perf_counter() - t0
            rows = [("in-process, batches of 8", local_s)]
            for conc in (1, args.concurrency):
                served = ServedTeacher.connect(TeacherServerConfig(url=server.url, model="teacher", top_k=args.k,
                                                                   concurrency=conc), tok, k=args.k)
                server_records(served, rendered[:4])  # warm
                t0 = time.perf_counter()
                for s in range(0, len(rendered), 8):
                    server_records(served, rendered[s:s + 8])
                rows.append((f"vLLM server, {conc} request(s) in flight", time.perf_counter() - t0))
                served.close()
            del model

            # 2. training steps, uld across tokenizers
            def uld_config(served_teacher: bool, name: str) -> dict:
                cfg = method_config("uld", student=student, teacher=teacher, train=paths["train"],
                                         generated=None, out=out, budget=budget, seed=args.seed)
                cfg["train"].update({"output_dir": str(out / "students" / name), "max_steps": args.steps,
                                     "logging_steps": 1, "progress_bar": False})
                cfg["loss"]["params"] = {"top_k": args.k}
                cfg["teacher"]["missing_mass"] = "tail_bucket"
                if served_teacher:
                    cfg["teacher"] = {"tokenizer": teacher, "missing_mass": "tail_bucket",
                                      "server": {"url": server.url, "model": "teacher", "top_k": args.k,
                                                 "concurrency": args.concurrency}}
                return cfg

            steps = {}
            for name, served_teacher in (("in-process", False), ("served", True)):
                record = run_training(config_from_dict(uld_config(served_teacher, f"uld-{name}")), overwrite=True)
                steps[name] = (record["train_seconds"] / record["steps"], record["steps"])

            # 3. cache builds
            caches = {}
            for name, server_settings in (("in-process", None), ("served", {"url": server.url, "model": "teacher",
                                                                            "concurrency": args.concurrency})):
                t0 = time.perf_counter()
                settings = {"teacher": teacher, "data": str(paths["train"]), "output": str(out / f"cache-{name}"),
                            "k": args.k, "max_length": MAX_LENGTH}
                if server_settings:
                    settings["server"] = server_settings
                crossdistill.build_cache(settings, progress=False)
                caches[name] = time.perf_counter() - t0
        finally:
            server.stop()

    print(f"\n# {len(rendered)} demo training examples, {tokens:,} teacher tokens, {positions:,} completion "
          f"positions scored, k = {args.k}; {args.threads} thread(s) for each side; 1-min load average at start "
          f"{load:.1f}\n")
    print("| teacher | seconds | completion positions / s | sequences / s |")
    print("|---|---|---|---|")
    for name, s in rows:
        print(f"| {name} | {s:.1f} | {positions / s:,.0f} | {len(rendered) / s:.1f} |")
    print(f"\n# uld, cross-tokenizer (demo student, {budget.batch_size} examples per step)\n")
    print("| teacher | steps | s / step |")
    print("|---|---|---|")
    for name, (sps, n) in steps.items():
        print(f"| {name} | {n} | {sps:.2f} |")
    print("\n# crossdistill cache, top-k\n")
    print("| teacher | build s |")
    print("|---|---|")
    for name, s in caches.items():
        print(f"| {name} | {s:.1f} |")


def rollouts(args) -> None:
    """Section 4: the demo student's samples from a vLLM server (refreshed) vs HF ``generate``."""
    from crossdistill import tasks
    from crossdistill.config import ModelConfig, OnPolicyConfig, RolloutServerConfig
    from crossdistill.data.render import render
    from crossdistill.demo.budget import BUDGETS
    from crossdistill.demo.student import build_student
    from crossdistill.models import load_model, load_tokenizer
    from crossdistill.testing.vllm_server import VLLMServer
    from crossdistill.train.onpolicy import sample
    from crossdistill.train.vllm_rollouts import VLLMRollouts, export_untied

    budget = replace(BUDGETS["random_full"], n_train=args.n_train)
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        train_ex, held_ex = tasks.make_split(budget.n_train, budget.n_eval, args.seed, style=budget.task_style)
        texts = [e.question for e in train_ex] + [e.completion for e in train_ex] + ["user\nmodel\n"] * 8
        student_dir = build_student(out / "students" / "untrained", texts, budget, args.seed)
        mc = ModelConfig(model=str(student_dir))
        model, tok = load_model(mc, "student").eval(), load_tokenizer(mc, "student")
        rendered = [render(tok, e.record()["prompt"], "x") for e in train_ex[:32]]
        prompts = [r.input_ids[: r.completion_start] for r in rendered]
        cfg = OnPolicyConfig(lmbda=1.0, max_new_tokens=args.max_new_tokens)
        untied = export_untied(student_dir, out / "students" / "untied")  # vLLM reloads an untied head only
        server = VLLMServer(untied, served_name="student", threads=args.threads, log=out / "server.log",
                            env={"VLLM_SERVER_DEV_MODE": "1"})
        server.start(timeout=900)
        try:
            vr = VLLMRollouts(RolloutServerConfig(url=server.url, model="student", concurrency=args.concurrency),
                              tok, out)
            vr.check()
            vr.sync(model, step=0)
            vr.sample(prompts[:2], cfg, seed=1)  # warm
            t0 = time.perf_counter()
            got = vr.sample(prompts, cfg, seed=2)
            v_s = time.perf_counter() - t0
            v_tok = sum(len(ids) for ids, _ in got)
            t0 = time.perf_counter()
            vr.sync(model, step=1)
            sync_s = time.perf_counter() - t0
        finally:
            server.stop()
        t0 = time.perf_counter()
        h_tok = 0
        for s in range(0, len(prompts), 8):
            h_tok += sum(len(ids) for ids, _ in sample(model, tok, prompts[s:s + 8], cfg, seed=3))
        h_s = time.perf_counter() - t0
    n = sum(p.numel() for p in model.parameters())
    print(f"\n# rollouts: demo student ({n / 1e6:.1f} M parameters), {len(prompts)} prompts, up to "
          f"{args.max_new_tokens} new tokens, sampling at temperature 1; {args.threads} thread(s) each; 1-min load "
          f"average at start {load:.1f}\n")
    print("| engine | tokens | seconds | tokens / s |")
    print("|---|---|---|---|")
    print(f"| HF generate, batches of 8 | {h_tok} | {h_s:.1f} | {h_tok / h_s:.0f} |")
    print(f"| vLLM server, {args.concurrency} requests in flight | {v_tok} | {v_s:.1f} | {v_tok / v_s:.0f} |")
    print(f"\nOne weight refresh (save the student + reload_weights + reset_prefix_cache): {sync_s:.2f} s")


if __name__ == "__main__":
    main()
