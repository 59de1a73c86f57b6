"""MultiLevelOT, CDM and DSKD (+ CMA, ETA): time per B x T batch of the distillation terms, forward + backward.

Synthetic inputs, fp32, whatever device torch uses (CPU here):

* logits: random normal × 3 (fairly peaked) for every completion position; vocabularies V_s (student) and V_t
  (teacher); hidden sizes H_s / H_t for the DSKD variants (lm_heads random);
* token strings (CDM's DTW and dynamic map, ETA's alignment): random lowercase "words" of 1–8 letters; the student
  vocabulary shares 60% of the teacher's strings (the exact-match map); both sides spell the SAME text: the student
  copies a teacher token it has and spells the others as two pieces (~40% of teacher tokens), so the sequences have
  different lengths and DTW / ETA have real work to do;
* every method runs with its paper / recipe defaults (MultiLevelOT k = 50, N = 20, λ = 0.1; CDM k = 100, threshold
  0.3, T = 0.8; DSKD T = 2, forward KL).

The CDM map persists across repetitions as in training (the first call adds most context pairs); the first call is
timed separately as ``cdm (first call)``.

Usage (2-core CPU, a few minutes):
    python benchmarks/cross_tokenizer_methods.py                       # 8 x 512, V_s 32,768, V_t 49,152
    python benchmarks/cross_tokenizer_methods.py --batch 2 --length 128 --reps 1   # quick look
    python benchmarks/cross_tokenizer_methods.py --only mlot cdm --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from crossdistill.align.dynamic_map import DynamicVocabMap
from crossdistill.align.eta import eta_align
from crossdistill.losses.cdm import CDMConfig, cdm_terms
from crossdistill.losses.dskd import DSKDProjectors, dskd_cma_terms, dskd_eta_terms, dskd_terms
from crossdistill.losses.mlot import MultiLevelOTConfig, multilevel_ot_terms


def vocabularies(vs: int, vt: int, rng: np.random.Generator) -> tuple[list[str], list[str], np.ndarray]:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))

    def word():
        return "".join(rng.choice(letters, rng.integers(1, 9)))

    t_vocab = [word() for _ in range(vt)]
    shared = int(0.6 * min(vs, vt))
    s_vocab = t_vocab[:shared] + [word() for _ in range(vs - shared)]
    base = np.full(vt, -1, dtype=np.int64)
    base[:shared] = np.arange(shared)
    return t_vocab, s_vocab, base


def sequences(batch: int, length: int, vs: int, vt: int, shared: int, s_vocab: list[str],
              rng: np.random.Generator):
    """Per example (teacher ids, student ids) spelling the SAME text, both cut to ``length``. A teacher token the
    student lacks is spelled by two student pieces (added to the student vocabulary in its non-shared id range)."""
    t_vocab_size = vt
    pieces: dict[str, int] = {}
    next_id = shared

    def piece(text: str) -> int:
        nonlocal next_id
        if text not in pieces:
            pieces[text] = next_id
            s_vocab[next_id] = text
            next_id = shared + (next_id + 1 - shared) % (vs - shared)
        return pieces[text]

    out = []
    for _ in range(batch):
        t_ids = rng.integers(0, t_vocab_size, length)
        s_ids: list[int] = []
        for t in t_ids:
            if t < shared:
                s_ids.append(int(t))
            else:
                w = T_VOCAB_REF[int(t)]
                cut = max(1, len(w) // 2)
                s_ids += [piece(w[:cut])] + ([piece(w[cut:])] if w[cut:] else [])
        out.append((t_ids[:length], np.array(s_ids[:length])))
    return out


T_VOCAB_REF: list[str] = []


def timed(fn, reps: int) -> tuple[float, float]:
    """Median wall time and median process CPU time (the CPU time is what to compare on a shared machine: other
    users' load stretches the wall time, not the CPU seconds this process needs)."""
    wall, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--length", type=int, default=512)
    ap.add_argument("--vocab-student", type=int, default=32768)
    ap.add_argument("--vocab-teacher", type=int, default=49152)
    ap.add_argument("--hidden-student", type=int, default=576)
    ap.add_argument("--hidden-teacher", type=int, default=960)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1 default: on a shared, oversubscribed CPU 2 threads were 20x slower)")
    ap.add_argument("--only", nargs="*", default=None, help="subset of: mlot mlot_envelope cdm dskd dskd_cma dskd_eta")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    B, T, vs, vt, hs, ht = (args.batch, args.length, args.vocab_student, args.vocab_teacher, args.hidden_student,
                            args.hidden_teacher)
    t_vocab, s_vocab, base = vocabularies(vs, vt, rng)
    T_VOCAB_REF[:] = t_vocab
    seqs = sequences(B, T, vs, vt, int((base >= 0).sum()), s_vocab, rng)
    zs = [(torch.randn(T, vs) * 3).requires_grad_() for _ in range(B)]
    zt = [torch.randn(T, vt) * 3 for _ in range(B)]
    rows = []

    def run(name, fn):
        if args.only and name.split(" ")[0] not in args.only:
            return
        wall, cpu = timed(fn, args.reps)
        rows.append((name, wall, cpu))
        print(f"{name:28s} wall {wall * 1000:9.1f} ms   cpu {cpu * 1000:9.1f} ms", flush=True)

    def backward(terms):
        sum(v for v in terms.values() if v.requires_grad).backward()

    def mlot(grad):
        cfg = MultiLevelOTConfig(sinkhorn_grad=grad)
        return lambda: backward(multilevel_ot_terms(zs, zt, cfg))

    run("mlot", mlot("unroll"))
    run("mlot_envelope", mlot("envelope"))

    s_str = [[s_vocab[i] for i in s] for _, s in seqs]
    t_str = [[t_vocab[i] for i in t] for t, _ in seqs]
    vmap = DynamicVocabMap(base, t_vocab, s_vocab)
    cfg = CDMConfig()
    run("cdm (first call)", lambda: backward(cdm_terms(zs, zt, s_str, t_str, vmap, cfg)))
    run("cdm", lambda: backward(cdm_terms(zs, zt, s_str, t_str, vmap, cfg)))

    w_s = (torch.randn(vs, hs) * 0.05).requires_grad_()
    h_s = torch.randn(B, T, hs).requires_grad_()
    h_t = torch.randn(B, T, ht)
    w_t = torch.randn(vt, ht) * 0.05
    proj = DSKDProjectors(hs, ht)
    y = torch.randint(0, vs, (B * T,))
    w_t_same = torch.randn(vs, ht) * 0.05
    run("dskd", lambda: backward(dskd_terms(h_s.reshape(-1, hs), w_s, h_t.reshape(-1, ht), w_t_same, y, proj)))

    proj_cma = DSKDProjectors(hs, ht, cross_attention=True)
    e_s, e_t = torch.randn(vs, hs), torch.randn(vt, ht)
    x_s, x_t = torch.randint(0, vs, (B, T)), torch.randint(0, vt, (B, T))
    ys = torch.tensor(np.stack([s for _, s in seqs]))
    yt = torch.tensor(np.stack([t for t, _ in seqs]))
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[:, :16] = False  # a short prompt
    run("dskd_cma", lambda: backward(dskd_cma_terms(h_s, w_s, e_s, x_s, torch.where(mask, ys, -100), mask, h_t, w_t,
                                                    e_t, x_t, torch.where(mask, yt, -100), mask, proj_cma)))

    t2s = torch.as_tensor(base)

    def eta():
        t_rows, s_rows = [], []
        for b in range(B):
            pairs = eta_align(t_str[b], s_str[b], strip=False)
            t_rows += [b * T + i for i, _ in pairs]
            s_rows += [b * T + j for _, j in pairs]
        backward(dskd_eta_terms(h_s.reshape(-1, hs), w_s, h_t.reshape(-1, ht), w_t, torch.tensor(t_rows),
                                torch.tensor(s_rows), t2s, proj))

    run("dskd_eta", eta)
    print(f"\n{B} x {T} completion positions per side, V_s {vs:,} / V_t {vt:,}, H_s {hs} / H_t {ht}, fp32, "
          f"{torch.get_num_threads()} torch threads, {args.reps} reps")
    print("| method | CPU ms / batch | wall ms / batch | CPU ms / 1k student tokens |")
    print("|---|---|---|---|")
    for name, wall, cpu in rows:
        print(f"| {name} | {cpu * 1000:,.0f} | {wall * 1000:,.0f} | {cpu * 1000 / (B * T / 1000):,.1f} |")


if __name__ == "__main__":
    main()
