"""Cross-tokenizer ULD: alignment + merge + sorted-L1 time, top-k vs full sort, and TRL's ULDLoss on the same inputs.

Synthetic batch: B sequences of T positions per side (prompt 16 tokens, the rest completion + EOS), a shared
completion text cut into student and teacher tokens so that ~70-80% of the tokens fall in 1:1 groups (like SmolLM2 vs
Gemma-3 on prose, docs/alignment.md), random logits with vocabularies V_s and V_t. Every timing is forward + backward
of the distillation term (no CE), fp32, on whatever CPU/GPU torch uses.

Parity check: TRL's "bayesian" mode slices the rows that predict each token, which is our position contract, so our
full-sort aligned ULD with merge="bayesian" (normalized like TRL: mean over groups per sample, then over the batch)
must equal TRL's value.

Usage (idle 2-core CPU: ~9 minutes with TRL, of which TRL takes ~7; ~1.5 without):
    python benchmarks/cross_tokenizer.py                      # 8 x 512, V 49,152 vs 151,936, k = 256
    python benchmarks/cross_tokenizer.py --batch 2 --length 128 --no-trl   # quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from types import SimpleNamespace

import numpy as np
import torch

from crossdistill.align.spans import BatchAlignment
from crossdistill.losses.uld import uld_from_alignment
from crossdistill.positions import shift_targets

PROMPT = 16


def make_batch(B: int, T: int, vs: int, vt: int, seed: int = 0):
    """Spans, labels and offsets for both sides; every completion ends with a zero-width EOS."""
    rng = np.random.default_rng(seed)
    n_s = T - PROMPT - rng.integers(0, 8, B)  # completion tokens incl. EOS, a little padding on some rows
    sides = {"s": [], "t": []}
    for b in range(B):
        widths = rng.integers(1, 6, n_s[b] - 1)
        cuts_s = np.cumsum(widths)  # student token ends
        L = int(cuts_s[-1])
        # Teacher: drop 15% of the student's inner boundaries (merges), add a few of its own (splits).
        keep = cuts_s[:-1][rng.random(n_s[b] - 2) > 0.15]
        extra = rng.choice(np.setdiff1d(np.arange(1, L), cuts_s), size=max(1, (n_s[b] - 2) // 40), replace=False)
        cuts_t = np.unique(np.concatenate([keep, extra, [L]]))
        cuts_t = cuts_t[: T - PROMPT - 1]
        cuts_t[-1] = L
        for key, cuts in (("s", cuts_s), ("t", cuts_t)):
            starts = np.concatenate([[0], cuts[:-1]])
            spans = np.stack([np.append(starts, L), np.append(cuts, L)], axis=1)  # EOS (L, L)
            sides[key].append(spans)
    out = {}
    for key, V in (("s", vs), ("t", vt)):
        labels = torch.full((B, T), -100, dtype=torch.long)
        offsets = torch.zeros((B, T, 2), dtype=torch.long)
        ids = torch.randint(0, V, (B, T))
        for b, spans in enumerate(sides[key]):
            n = len(spans)
            labels[b, PROMPT:PROMPT + n] = ids[b, PROMPT:PROMPT + n]
            offsets[b, PROMPT:PROMPT + n] = torch.as_tensor(spans)
        out[key] = SimpleNamespace(spans=sides[key], labels=labels, ids=ids, offsets=offsets,
                                   start=[PROMPT] * B)
    return out["s"], out["t"]


def timeit(fn, repeats: int, label: str = "") -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    if label:
        print(f"# {label}: {' '.join(f'{x:.2f}' for x in times)} s", flush=True)
    return statistics.median(times), result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--vs", type=int, default=49_152, help="student vocabulary (SmolLM2)")
    ap.add_argument("--vt", type=int, default=151_936, help="teacher vocabulary (Qwen2.5)")
    ap.add_argument("--k", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-trl", action="store_true", help="skip TRL's ULDLoss")
    ap.add_argument("--no-parity", action="store_true", help="skip the value check against TRL's bayesian mode")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    B, T = args.batch, args.length
    s, t = make_batch(B, T, args.vs, args.vt)
    zs = torch.randn(B, T, args.vs, requires_grad=True)
    zt = torch.randn(B, T, args.vt) * 2
    ys, ms = shift_targets(s.labels)
    yt, mt = shift_targets(t.labels)
    print(f"# batch {B} x {T}, V_s {args.vs:,} vs V_t {args.vt:,}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, cpus {os.cpu_count()}")

    def align():
        return BatchAlignment.build(s.spans, t.spans, s.start, t.start, ms, mt).flat(ms, mt)

    t_align, al = timeit(align, args.repeats)
    n_s, n_t = int(ms.sum()), int(mt.sum())
    sizes_s = torch.bincount(al.student_groups, minlength=al.num_groups)
    sizes_t = torch.bincount(al.teacher_groups, minlength=al.num_groups)
    one = float(((sizes_s == 1) & (sizes_t == 1)).sum()) / al.num_groups
    print(f"# student tokens {n_s:,}, teacher tokens {n_t:,}, groups {al.num_groups:,} ({one:.0%} 1:1)", flush=True)
    flat_zs, flat_zt = zs.reshape(-1, args.vs), zt.reshape(-1, args.vt)
    flat_ys, flat_yt = ys.reshape(-1), yt.reshape(-1)

    def ours(top_k, merge="observed"):
        def run():
            zs.grad = None
            out = uld_from_alignment(flat_zs, flat_zt, al, flat_ys, flat_yt, top_k=top_k, merge=merge)
            out.loss.backward()
            return out
        return run

    rows = [("alignment (BatchAlignment.build, numpy)", t_align, None)]
    t_topk, out_topk = timeit(ours(args.k), args.repeats, f"ours top-{args.k}")
    rows.append((f"crossdistill aligned ULD, top-{args.k} (fwd+bwd)", t_topk, out_topk))
    t_full, out_full = timeit(ours(None), max(1, args.repeats - 1), "ours full sort")
    rows.append(("crossdistill aligned ULD, full sort (fwd+bwd)", t_full, out_full))
    rel = float((out_full.loss - out_topk.loss).abs().detach() / out_full.loss.detach())
    bound = float(out_topk.bound.sum() / out_full.loss.detach())

    trl_time = trl_val = ours_bayes = None
    if not args.no_trl:
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.gold.gold_trainer import ULDLoss

        def trl_loss(strategy):
            cfg = SimpleNamespace(uld_crossentropy_weight=0.0, uld_distillation_weight=1.0,
                                  uld_student_temperature=1.0, uld_teacher_temperature=1.0,
                                  uld_skip_student_eos=False, uld_skip_teacher_eos=False, use_extended_uld=True,
                                  uld_token_merge_strategy=strategy, uld_use_hybrid_loss=False, beta=0.5)
            return ULDLoss(cfg)

        def trl_run(strategy):
            def run():
                zs.grad = None
                loss = trl_loss(strategy)(zs, zt, s.labels, t.labels, s.ids.masked_fill(s.labels < 0, 0),
                                          t.ids.masked_fill(t.labels < 0, 0), s.offsets, t.offsets)
                loss.backward()
                return loss
            return run

        trl_time, trl_val = timeit(trl_run("observed"), 1, "TRL observed")
        rows.append(("TRL 1.16 ULDLoss (extended ULD, observed; fwd+bwd)", trl_time, None))
    if not args.no_trl and not args.no_parity:
        _, trl_bayes = timeit(trl_run("bayesian"), 1, "TRL bayesian")
        # Ours, normalized like TRL (mean over groups per sample, then over samples), bayesian rows = TRL bayesian.
        _, ob = timeit(ours(None, "bayesian"), 1, "ours full sort, bayesian")
        per_ex = torch.zeros(B).index_add(0, al.group_example, ob.per_group.detach())
        cnt = torch.bincount(al.group_example, minlength=B)
        ours_bayes = float((per_ex / cnt).mean())
        trl_val = float(trl_bayes)

    print()
    print("| step | time (s) | speed-up vs TRL |")
    print("|---|---|---|")
    for name, sec, _ in rows:
        sp = f"{trl_time / sec:.1f}x" if trl_time else "n/a"
        print(f"| {name} | {sec:.3f} | {sp} |")
    if trl_time:
        tot = t_align + t_topk
        print(f"| **alignment + top-{args.k} ULD (our full path)** | **{tot:.3f}** | **{trl_time / tot:.1f}x** |")
        tot_full = t_align + t_full
        print(f"| alignment + full-sort ULD | {tot_full:.3f} | {trl_time / tot_full:.1f}x |")
    print()
    print(f"top-{args.k} vs full sort: relative difference {rel:.2e}; documented bound 2*min(S_k,T_k) summed = "
          f"{bound:.2e} of the full value")
    if ours_bayes is not None:
        print(f"parity (merge='bayesian', TRL normalization): crossdistill {ours_bayes:.6f} vs TRL {trl_val:.6f} "
              f"(rel. diff {abs(ours_bayes - trl_val) / abs(trl_val):.1e})")


if __name__ == "__main__":
    main()
