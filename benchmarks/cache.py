"""Teacher-cache benchmarks: bytes per token, write/read throughput, training tokens/s from cache vs online teacher.

Prints markdown tables (copy them into benchmarks/results/cache.md). CPU run, a few minutes on 2 cores:

    python benchmarks/cache.py            # everything
    python benchmarks/cache.py --quick    # smaller shards, fewer steps

Sections:
1. Bytes per token of a shard, every field included (top-k ids + values, tail mass, target id + log-prob, spans,
   per-example offsets, safetensors header), for k in {8, 32, 128} and real vocabulary sizes; budget 5k + 16.
2. Format throughput: encode + sha256 + atomic write, and read + verify + decode + TeacherSignal assembly.
3. End-to-end ``cache`` on the tiny teacher (teacher forward included).
4. Training-step throughput (student forward + objective + backward, the training engine's MethodRunner) with the
   teacher signal from the cache vs from an online teacher (full distribution, and restricted to the same top-k),
   for the tiny teacher and for a 12x wider one (where the teacher forward dominates).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch

from crossdistill.io import write_bytes
from crossdistill.teacher.bitpack import bits_for
from crossdistill.teacher.format import ShardData, decode_shard, encode_shard
from crossdistill.testing.tiny import CORPUS, save_model, save_tokenizer


def synthetic_shard(n_examples: int, tokens_per_example: int, k: int, vocab: int, seed: int = 0) -> ShardData:
    g = torch.Generator().manual_seed(seed)
    n = n_examples * tokens_per_example
    logp = torch.log_softmax(torch.randn(n, 512, generator=g) * 3, -1).topk(k, -1).values if k <= 512 else None
    return ShardData(
        example_index=np.arange(n_examples), token_offsets=np.arange(n_examples + 1) * tokens_per_example,
        token_ids=torch.randint(0, vocab, (n,), generator=g), token_logprob=-torch.rand(n, generator=g) * 10,
        spans=torch.stack([torch.arange(n), torch.arange(n) + 1], -1) % 4096,
        support_ids=torch.randint(0, vocab, (n, k), generator=g), support_logprobs=logp,
        tail_logmass=-torch.rand(n, generator=g))


def table(headers: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def bench_size(tokens_per_example: int, n_examples: int) -> str:
    rows = []
    for vocab in (49_152, 151_936, 262_144):
        for k in (8, 32, 128):
            data = synthetic_shard(n_examples, tokens_per_example, k, vocab)
            raw = encode_shard(data, bits=bits_for(vocab), value_dtype="fp16", shard_index=0, support="topk")
            per_tok = len(raw) / (n_examples * tokens_per_example)
            budget = 5 * k + 16
            int32 = 2 * k + 4 * k + 2 + 4 + 8 + 4  # same fields with int32 ids
            rows.append([f"{vocab:,}", bits_for(vocab), k, f"{per_tok:.2f}", budget, "yes" if per_tok <= budget else
                         "NO", int32, f"{2 * vocab:,}"])
    return table(["V", "id bits", "k", "bytes/token (all fields)", "budget 5k+16", "within", "int32 ids",
                  "dense bf16"], rows)


def bench_format(tokens_per_example: int, n_examples: int, tmp: Path) -> str:
    from crossdistill.teacher.reader import CachedExample, to_signal

    rows = []
    vocab = 151_936
    for k in (8, 32, 128):
        data = synthetic_shard(n_examples, tokens_per_example, k, vocab)
        n = n_examples * tokens_per_example
        t0 = time.perf_counter()
        raw = encode_shard(data, bits=bits_for(vocab), value_dtype="fp16", shard_index=0, support="topk")
        import hashlib

        hashlib.sha256(raw).hexdigest()
        write_bytes(tmp / "s.safetensors", raw)
        t_write = time.perf_counter() - t0
        t0 = time.perf_counter()
        back_raw = (tmp / "s.safetensors").read_bytes()
        hashlib.sha256(back_raw).hexdigest()
        back = decode_shard(back_raw, bits=bits_for(vocab), k=k)
        t_read = time.perf_counter() - t0
        t0 = time.perf_counter()
        exs = [CachedExample(int(back.example_index[e]), back.token_ids[back.example_slice(e)],
                             back.token_logprob[back.example_slice(e)], back.spans[back.example_slice(e)],
                             back.support_ids[back.example_slice(e)], back.support_logprobs[back.example_slice(e)],
                             back.tail_logmass[back.example_slice(e)]) for e in range(n_examples)]
        for s in range(0, n_examples, 8):
            to_signal(exs[s:s + 8])
        t_sig = time.perf_counter() - t0
        mb = len(raw) / 2**20
        rows.append([k, f"{n:,}", f"{mb:.1f}", f"{n / t_write:,.0f}", f"{mb / t_write:.0f}", f"{n / t_read:,.0f}",
                     f"{mb / t_read:.0f}", f"{n / t_sig:,.0f}"])
    return table(["k", "tokens", "shard MiB", "write tok/s", "write MiB/s", "read+verify tok/s", "read MiB/s",
                  "signal assembly tok/s"], rows)


def write_dataset(path: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        a, b = CORPUS[i % 11], " ".join(CORPUS[(i + j) % 11] for j in range(1, 4))
        rows.append({"messages": [{"role": "user", "content": a}, {"role": "assistant", "content": b}]})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


def bench_build(tmp: Path, teacher: Path, data: Path) -> tuple[str, dict]:
    from crossdistill import build_cache
    from crossdistill.config import cache_build_from_dict
    from crossdistill.teacher.reader import CacheReader

    rows, caches = [], {}
    for k in (8, 32, 128):
        cfg = cache_build_from_dict(dict(teacher=str(teacher), data=str(data), output=str(tmp / f"cache-k{k}"), k=k,
                                         examples_per_shard=32, batch_size=8, max_length=2048))
        t0 = time.perf_counter()
        manifest = build_cache(cfg, progress=False)
        dt = time.perf_counter() - t0
        tokens = sum(f["tokens"] for f in manifest.files)
        reader = CacheReader(cfg.output)
        stats = reader.stats()
        t0 = time.perf_counter()
        n = sum(ex.token_ids.numel() for ex in reader)
        t_read = time.perf_counter() - t0
        rows.append([k, tokens, f"{stats['bytes_per_token']:.2f}", 5 * k + 16, f"{tokens / dt:,.0f}",
                     f"{n / t_read:,.0f}", f"{stats['mean_tail_mass']:.3f}"])
        caches[k] = cfg
    return table(["k", "tokens", "bytes/token (V=300, 9-bit ids, manifest incl.)", "budget", "build tok/s "
                  "(teacher fwd incl.)", "stream read tok/s", "mean tail mass"], rows), caches


def bench_training(tmp: Path, data: Path, tok_path: Path, student: Path, teachers: dict[str, Path], k: int,
                   steps: int) -> str:
    from transformers import AutoModelForCausalLM

    from crossdistill import build_cache
    from crossdistill.config import cache_build_from_dict, config_from_dict
    from crossdistill.data.dataset import DistillCollator
    from crossdistill.data.load import load_examples
    from crossdistill.losses.signal import TeacherSignal
    from crossdistill.teacher.source import CachedTeacher
    from crossdistill.train.run import prepare
    from crossdistill.train.trainer import MethodRunner

    class TopK(MethodRunner):
        def context(self, model, inputs):
            ctx = super().context(model, inputs)
            z = ctx.teacher_hidden[ctx.mask] @ ctx.teacher_lm_head_weight.T
            ctx.teacher_signal = TeacherSignal.top_k(z[:, : ctx.teacher_vocab_size], k, policy="tail_bucket")
            return ctx

    class FromCache(MethodRunner):
        def __init__(self, method, dcfg, tok, cached):
            super().__init__(replace(method, teacher="none"), dcfg, None, tok, None)
            self.cached = cached

        def context(self, model, inputs):
            ctx = super().context(model, inputs)
            ctx.teacher_signal = self.cached.signal(inputs["example_index"], ctx.targets, ctx.mask)
            return ctx

    rows = []
    for name, teacher_dir in teachers.items():
        dcfg = config_from_dict({
            "student": {"model": str(student)}, "teacher": {"model": str(teacher_dir)},
            "data": {"train": str(data), "eval": str(data), "max_length": 2048},
            "loss": {"name": "forward_kl", "weights": {"ce": 0.3, "kd": 0.7}}, "train": {"report_to": []}})
        p = prepare(dcfg, progress=False)
        s_model = AutoModelForCausalLM.from_pretrained(student)
        t_model = AutoModelForCausalLM.from_pretrained(teacher_dir).eval()
        n_params = sum(x.numel() for x in t_model.parameters())
        ccfg = cache_build_from_dict(dict(teacher=str(teacher_dir), data=str(data),
                                          output=str(tmp / f"train-cache-{name}"), k=k, examples_per_shard=32,
                                          batch_size=8, max_length=2048))
        t0 = time.perf_counter()
        build_cache(ccfg, progress=False)
        t_build = time.perf_counter() - t0
        cached = CachedTeacher(ccfg.output, examples=load_examples(data), student_tokenizer=p.student_tok,
                               policy="tail_bucket")
        runners = {"online (full teacher)": MethodRunner(p.method, dcfg, t_model, p.student_tok, p.teacher_tok),
                   f"online top-{k}": TopK(p.method, dcfg, t_model, p.student_tok, p.teacher_tok),
                   f"cache top-{k}": FromCache(p.method, dcfg, p.student_tok, cached)}
        collate = DistillCollator(p.student_tok.pad_token_id)
        batches = [collate([p.train[i] for i in range(s, s + 8)]) for s in range(0, len(p.train) - 7, 8)][:steps]
        tokens = sum(int((b["labels"][:, 1:] != -100).sum()) for b in batches)
        losses = {}
        for rname, runner in runners.items():
            runner.objective(s_model, batches[0]).loss.backward()  # warm-up
            s_model.zero_grad()
            t0 = time.perf_counter()
            for b in batches:
                out = runner.objective(s_model, b)
                out.loss.backward()
                s_model.zero_grad()
            dt = time.perf_counter() - t0
            losses[rname] = runner.objective(s_model, batches[0]).loss.item()
            rows.append([name, f"{n_params / 1e6:.2f}M", rname, f"{tokens / dt:,.0f}", f"{losses[rname]:.6f}",
                         f"{t_build:.1f} s" if rname.startswith("cache") else ""])
    return table(["teacher", "teacher params", "teacher signal", "train tok/s (fwd+loss+bwd)", "first-batch loss",
                  "cache build"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="cache-bench-"))
    try:
        tpe, n_ex = (128, 16) if args.quick else (256, 64)
        print(f"## 1. Bytes per token (fp16 values, bit-packed ids, {n_ex} examples x {tpe} tokens per shard)\n")
        print(bench_size(tpe, n_ex), "\n")
        print(f"## 2. Format throughput (V = 151,936, {n_ex * tpe:,} tokens per shard, one shard)\n")
        print(bench_format(tpe, n_ex, tmp), "\n")
        tok = save_tokenizer("bpe", tmp / "tok")
        teacher = save_model("llama", tok, tmp / "teacher", hidden=48, seed=1)
        wide = save_model("llama", tok, tmp / "teacher-wide", hidden=576, layers=4, seed=1)
        student = save_model("llama", tok, tmp / "student", hidden=32, seed=2)
        data = write_dataset(tmp / "data.jsonl", 32 if args.quick else 128)
        print("## 3. End-to-end `crossdistill cache` on the tiny teacher (hidden 48, 2 layers, V = 300)\n")
        text, _ = bench_build(tmp, teacher, data)
        print(text, "\n")
        print("## 4. Training-step throughput: cache vs online teacher (tiny recipe: student hidden 32, batch 8)\n")
        print(bench_training(tmp, data, tok, student, {"tiny (h48, 2L)": teacher, "wide (h576, 4L)": wide}, k=32,
                             steps=4 if args.quick else 12), "\n")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
