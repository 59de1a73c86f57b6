"""Naive vs chunked (fused) distillation loss: peak extra memory and forward+backward time.

Every configuration runs in a FRESH subprocess so its memory numbers do not inherit another run's heap. Memory on CPU
is the peak resident set size (VmHWM) reached during one forward+backward, minus the RSS just before it, with
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed large blocks go back to the OS instead of staying in glibc's heap;
the peak counter is reset through ``/proc/self/clear_refs`` right before the measured call, so import-time and
setup transients never count. Inputs (hidden states, weights) are allocated before the reset; everything the loss
allocates, including the gradients of hidden states and weight, counts. With a GPU, ``torch.cuda.max_memory_allocated``
over the same window is used instead.

Time is the best of ``--repeats`` forward+backward passes (the first one also gives the memory peak).

Examples (2-core CPU, ~10 minutes):

    python benchmarks/losses.py                                   # N in {1024,2048,4096,8192}, V=32000, H=1024
    python benchmarks/losses.py --n 1024 4096 --vocab 151936 --impls chunked naive
    python benchmarks/losses.py --out benchmarks/results/losses.md

``trl`` (``pip install torch==2.13.0 trl==1.16.0``, extra ``bench``) adds TRL's ``generalized_jsd_loss`` (on full
logits, like the naive column) when importable; Liger's fused JSD is added when ``liger_kernel`` imports.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
import time

from crossdistill.io import append_line, write_text

IMPLS = ("naive", "chunked", "trl", "liger")
DIVS = {"fkl": ("forward_kl", {}, 0.0), "jsd": ("generalized_jsd", {"beta": 0.5}, 0.5)}


def _status_mb(key: str) -> float:
    with open("/proc/self/status") as f:
        return int(re.search(rf"{key}:\s+(\d+)", f.read()).group(1)) / 1024


def _worker(impl: str, div: str, n: int, v: int, h: int, chunk: int, repeats: int, temperature: float) -> dict:
    import torch

    from crossdistill.losses import divergence_from_logits
    from crossdistill.losses.chunked import ChunkedLossConfig, TeacherHead, fused_distill_loss

    name, params, beta = DIVS[div]
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    g = torch.Generator(device=dev).manual_seed(0)
    hidden = torch.randn(n, h, device=dev, generator=g).requires_grad_()
    weight = (0.02 * torch.randn(v, h, device=dev, generator=g)).requires_grad_()
    t_hidden = torch.randn(n, h, device=dev, generator=g)
    t_weight = 0.05 * torch.randn(v, h, device=dev, generator=g)
    targets = torch.randint(0, v, (n,), device=dev, generator=g)

    if impl == "chunked":
        cfg = ChunkedLossConfig(
            divergence=name, divergence_params=params, temperature=temperature, chunk_size=chunk, compute_ce=False
        )

        def step():
            out = fused_distill_loss(hidden, weight, targets, TeacherHead(t_hidden, t_weight), cfg)
            out.sums["kd"].backward()
            return out.sums["kd"]

    elif impl == "naive":

        def step():
            logits = hidden @ weight.T  # [N, V]
            with torch.no_grad():
                t_logits = t_hidden @ t_weight.T
            loss = divergence_from_logits(name, logits, t_logits, temperature, **params).sum()
            loss.backward()
            return loss

    elif impl == "trl":
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.gkd.gkd_trainer import GKDTrainer

        def step():
            logits = (hidden @ weight.T)[None]  # [1, N, V]
            with torch.no_grad():
                t_logits = (t_hidden @ t_weight.T)[None]
            loss = GKDTrainer.generalized_jsd_loss(
                logits, t_logits, beta=beta, temperature=temperature, reduction="sum"
            )
            loss.backward()
            return loss

    elif impl == "liger":
        from liger_kernel.chunked_loss import LigerFusedLinearJSDLoss

        liger = LigerFusedLinearJSDLoss(beta=beta, temperature=temperature, weight_hard_loss=0.0, weight_soft_loss=1.0)

        def step():
            loss = liger(hidden, weight, t_hidden, t_weight, targets) * n
            loss.backward()
            return loss

    else:
        raise ValueError(impl)

    times, peak, value = [], None, None
    for i in range(repeats):
        hidden.grad = None
        weight.grad = None
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM (peak RSS) to the current RSS
            base = _status_mb("VmRSS")
        t0 = time.perf_counter()
        loss = step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        if i == 0:
            value = float(loss.detach()) / n
            peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if cuda else _status_mb("VmHWM") - base
        del loss
    return {"impl": impl, "div": div, "n": n, "v": v, "h": h, "peak_mb": peak, "time_s": min(times), "loss": value}


def _available(impl: str) -> bool:
    if impl == "trl":
        return importlib.util.find_spec("trl") is not None
    if impl == "liger":
        return importlib.util.find_spec("liger_kernel") is not None
    return True


def _run_one(args, impl: str, div: str, n: int) -> dict | None:
    sizes = (n, args.vocab, args.hidden, args.chunk_size, args.repeats, args.temperature)
    cmd = [sys.executable, __file__, "--worker", impl, div, *map(str, sizes)]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", TRL_EXPERIMENTAL_SILENCE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        print(f"# {impl} {div} N={n}: failed (rc={proc.returncode}): {proc.stderr.strip()[-300:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: list[dict], impls: list[str]) -> str:
    head = "| div | N | " + " | ".join(f"{i} peak MB | {i} time s" for i in impls)
    head += " | naive/chunked mem | chunked/naive time |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    keys = sorted({(r["div"], r["n"]) for r in results})
    for div, n in keys:
        row = {r["impl"]: r for r in results if r["div"] == div and r["n"] == n}
        cells = []
        for i in impls:
            r = row.get(i)
            cells += [f"{r['peak_mb']:.0f}", f"{r['time_s']:.2f}"] if r else ["—", "—"]
        nv, ch = row.get("naive"), row.get("chunked")
        ratio_mem = f"{nv['peak_mb'] / ch['peak_mb']:.1f}×" if nv and ch else "—"
        ratio_t = f"{ch['time_s'] / nv['time_s']:.2f}×" if nv and ch else "—"
        lines.append(f"| {div} | {n} | " + " | ".join(cells) + f" | {ratio_mem} | {ratio_t} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/losses.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, nargs="+", default=[1024, 2048, 4096, 8192], help="target tokens N")
    parser.add_argument("--vocab", type=int, default=32000, help="vocabulary size V")
    parser.add_argument("--hidden", type=int, default=1024, help="hidden size H (student and teacher)")
    parser.add_argument("--divs", nargs="+", default=list(DIVS), choices=list(DIVS), help="divergences")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS, help="implementations")
    parser.add_argument("--chunk-size", type=int, default=512, help="chunked: target tokens per chunk")
    parser.add_argument("--temperature", type=float, default=1.0, help="distillation temperature")
    parser.add_argument("--repeats", type=int, default=2, help="forward+backward passes per configuration")
    parser.add_argument("--max-naive-mb", type=float, default=16000, help="skip full-logit runs predicted above this")
    parser.add_argument("--out", help="also write the markdown table to this file")
    parser.add_argument("--jsonl", help="append each configuration's raw result to this file as it finishes")
    parser.add_argument("--worker", nargs=8, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        impl, div, n, v, h, c, r, t = args.worker
        print(json.dumps(_worker(impl, div, int(n), int(v), int(h), int(c), int(r), float(t))))
        return 0

    impls = [i for i in args.impls if _available(i)]
    skipped = sorted(set(args.impls) - set(impls))
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = lambda x, **_: x  # noqa: E731
    jobs = [(i, d, n) for d in args.divs for n in sorted(args.n) for i in impls]
    results, per_token_mb = [], {}
    for impl, div, n in tqdm(jobs, desc="configs"):
        full_logits = impl in ("naive", "trl")
        if full_logits and (impl, div) in per_token_mb and per_token_mb[impl, div] * n > args.max_naive_mb:
            print(f"# skip {impl} {div} N={n}: predicted {per_token_mb[impl, div] * n:.0f} MB", file=sys.stderr)
            continue
        r = _run_one(args, impl, div, n)
        if r:
            results.append(r)
            if args.jsonl:
                append_line(args.jsonl, json.dumps(r))
            per_token_mb[impl, div] = r["peak_mb"] / n
    machine = f"{os.cpu_count()}-core CPU" if not _cuda() else "CUDA"
    header = (
        f"V={args.vocab}, H={args.hidden}, chunk={args.chunk_size} tokens, T={args.temperature}, fp32, {machine}; "
        f"peak = extra memory during one fwd+bwd (RSS delta, MALLOC_MMAP_THRESHOLD_=65536); time = best of "
        f"{args.repeats}."
    )
    if skipped:
        header += f" Not importable here: {', '.join(skipped)}."
    text = header + "\n\n" + _table(results, impls)
    print(text)
    if args.out:
        write_text(args.out, text + "\n")
    return 0


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:  # pragma: no cover
        return False


if __name__ == "__main__":
    raise SystemExit(main())
