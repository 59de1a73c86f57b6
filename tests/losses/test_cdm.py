"""CDM and its dynamic vocabulary map vs naive references. Run: python -m pytest tests/losses/test_cdm.py -q"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from crossdistill.align.dynamic_map import DynamicVocabMap
from crossdistill.losses.cdm import CDMConfig, cdm_terms, dtw_groups, entropy_weights
from crossdistill.losses.signal import TeacherSignal
from crossdistill.testing.reference import levenshtein as lev


def ref_dtw_path(cost):
    n, m = len(cost), len(cost[0])
    acc = [[math.inf] * (m + 1) for _ in range(n + 1)]
    acc[0][0] = 0.0
    for i in range(n):
        for j in range(m):
            acc[i + 1][j + 1] = cost[i][j] + min(acc[i][j + 1], acc[i + 1][j], acc[i][j])
    i, j, path = n, m, [(n - 1, m - 1)]
    while (i, j) != (1, 1):
        opts = [acc[i - 1][j - 1], acc[i - 1][j], acc[i][j - 1]]
        i, j = [(i - 1, j - 1), (i - 1, j), (i, j - 1)][opts.index(min(opts))]
        path.append((i - 1, j - 1))
    return path[::-1]


def ref_weights(logits):
    h = [-(torch.softmax(r, -1) * torch.log_softmax(r, -1)).sum().item() for r in logits]
    lo, hi = min(h), max(h)
    return [int(3 * (1 / (1 + math.exp(-(4 * ((x - lo) / (hi - lo) if hi > lo else 0.0) - 2)))) + 3) for x in h]


def ref_map_update(mapping, base, t_text, s_text, t_topk, s_topk, thr):
    """Sequential CDM rule: per position, each unmapped teacher top-k id takes the closest student candidate."""
    for p in range(len(t_topk)):
        for a in t_topk[p]:
            if mapping[a] >= 0:
                continue
            best, best_d = None, math.inf
            for b in s_topk[p]:
                tot = len(t_text[a]) + len(s_text[b])
                d = lev(t_text[a], s_text[b]) / tot if tot else math.inf
                if d < best_d:
                    best, best_d = b, d
            if best_d < thr:
                mapping[a] = best


def ref_inverse(mapping, base, v_s):
    inv = [-1] * v_s
    for a in range(len(mapping) - 1, -1, -1):
        if mapping[a] >= 0:
            inv[mapping[a]] = a
    for a in range(len(base) - 1, -1, -1):
        if base[a] >= 0:
            inv[base[a]] = a
    return inv


def naive_cdm(student_logits, teacher_logits, s_strings, t_strings, base, t_vocab, s_vocab, k, thr, tau):
    mapping = list(base)
    t_text = [s.replace(" ", "") for s in t_vocab]
    s_text = [s.replace(" ", "") for s in s_vocab]
    kd = 0.0
    for zs, zt, ss, ts in zip(student_logits, teacher_logits, s_strings, t_strings):
        wt, ws = ref_weights(zt), ref_weights(zs)
        cost = [[lev(a.replace(" ", ""), b.replace(" ", "")) * wt[i] * ws[j] for j, b in enumerate(ss)]
                for i, a in enumerate(ts)]
        path = ref_dtw_path(cost)
        tsets = [sorted({i for i, jj in path if jj == j}) for j in range(len(ss))]
        groups = []
        for j, tset in enumerate(tsets):
            if groups and groups[-1][1] == tset:
                groups[-1][0].append(j)
            else:
                groups.append(([j], tset))
        t_logp = torch.log_softmax(zt, -1)
        merged = [(torch.stack([zs[j] for j in sj]).mean(0), torch.stack([t_logp[i] for i in ti]).mean(0))
                  for sj, ti in groups]
        t_top = [torch.topk(t, k).indices.tolist() for _, t in merged]
        s_top = [torch.topk(s.detach(), k).indices.tolist() for s, _ in merged]
        ref_map_update(mapping, base, t_text, s_text, t_top, s_top, thr)
        inv = ref_inverse(mapping, base, len(s_vocab))
        for (s, t), tt, st in zip(merged, t_top, s_top):
            t_vals, s_vals, any_mapped = [], [], False
            for a in tt:
                b = mapping[a]
                t_vals.append(t[a] if b >= 0 else torch.tensor(-10000.0))
                s_vals.append(s[b] if b >= 0 else torch.tensor(-10000.0))
                any_mapped |= b >= 0
            for b in st:
                a = inv[b]
                t_vals.append(t[a] if a >= 0 else torch.tensor(-10000.0))
                s_vals.append(s[b] if a >= 0 else torch.tensor(-10000.0))
                any_mapped |= a >= 0
            if not any_mapped:
                continue
            pt = torch.softmax(torch.stack(t_vals) / tau, -1)
            ls = torch.log_softmax(torch.stack(s_vals) / tau, -1)
            lt = torch.log_softmax(torch.stack(t_vals) / tau, -1)
            kd = kd + sum(pt[i] * (lt[i] - ls[i]) for i in range(len(pt)) if pt[i] > 0)
    return kd, mapping


T_VOCAB = ["the", " cat", " sat", "hello", " wor", "ld", "!", "<eos>", "on", " mat", "xyz", "catalog"]
S_VOCAB = ["the", " cat", " sa", "hell", " world", "!", "</s>", "o", "n", " ma"]
BASE = np.array([0, 1, -1, -1, -1, -1, 5, -1, -1, -1, -1, -1])  # exact: the, cat, !


def _case(seed):
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    lens = [(rng.randint(1, 7), rng.randint(1, 7)) for _ in range(3)]
    zs = [(torch.randn(n, len(S_VOCAB), generator=g) * 2).requires_grad_() for n, _ in lens]
    zt = [torch.randn(m, len(T_VOCAB), generator=g) * 2 for _, m in lens]
    ss = [[rng.choice(S_VOCAB) for _ in range(n)] for n, _ in lens]
    ts = [[rng.choice(T_VOCAB) for _ in range(m)] for _, m in lens]
    return zs, zt, ss, ts


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_cdm_matches_naive_value_gradient_and_map(seed):
    zs, zt, ss, ts = _case(seed)
    vm = DynamicVocabMap(BASE, T_VOCAB, S_VOCAB, threshold=0.3)
    cfg = CDMConfig(top_k=4, threshold=0.3, kd_temperature=0.8)
    out = cdm_terms(zs, zt, ss, ts, vm, cfg)
    grads = torch.autograd.grad(out["kd"], zs, allow_unused=True)
    zs2 = [z.detach().clone().requires_grad_() for z in zs]
    ref, ref_map = naive_cdm(zs2, zt, ss, ts, list(BASE), T_VOCAB, S_VOCAB, k=4, thr=0.3, tau=0.8)
    assert vm.mapping.tolist() == ref_map
    torch.testing.assert_close(out["kd"], torch.as_tensor(ref, dtype=torch.float32), atol=1e-5, rtol=1e-5)
    if isinstance(ref, torch.Tensor) and ref.requires_grad:
        ref_grads = torch.autograd.grad(ref, zs2, allow_unused=True)
        for a, b in zip(grads, ref_grads):
            if b is None:
                assert a is None or torch.all(a == 0)
            else:
                torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_entropy_weights_reference_and_range():
    z = torch.randn(9, 13) * 3
    assert entropy_weights(z).tolist() == ref_weights(z)
    assert set(entropy_weights(torch.randn(200, 50))) <= {3, 4, 5}
    assert entropy_weights(torch.zeros(4, 5)).tolist() == [3, 3, 3, 3]


def test_dtw_groups_partition_student_positions_and_eos_costs_zero():
    group, rng = dtw_groups(["the", " cat", "<eos>"], ["the", " c", "at", "</s>"], np.full(3, 3), np.full(4, 4),
                            frozenset({("<eos>", "</s>")}))
    # " c" and "at" both pair with " cat": one group with two student positions; EOS pairs with EOS at cost 0.
    assert group.tolist() == [0, 1, 1, 2]
    assert rng.tolist() == [[0, 0], [1, 1], [2, 2]]


def test_dynamic_map_only_adds_pairs_below_threshold():
    rng = random.Random(5)
    letters = "abcdefg"
    t_vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 6))) for _ in range(80)]
    s_vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(1, 6))) for _ in range(70)]
    base = np.full(80, -1)
    base[:10] = np.arange(10)
    for thr in (0.1, 0.3, 0.5):
        vm = DynamicVocabMap(base, t_vocab, s_vocab, threshold=thr)
        mapping = list(base)
        for _ in range(5):
            t_top = np.array([rng.sample(range(80), 8) for _ in range(6)])
            s_top = np.array([rng.sample(range(70), 8) for _ in range(6)])
            before = vm.mapping.copy()
            vm.update(t_top, s_top)
            ref_map_update(mapping, base, t_vocab, s_vocab, t_top.tolist(), s_top.tolist(), thr)
            assert vm.mapping.tolist() == mapping
            changed = before != vm.mapping
            assert (before[changed] == -1).all()          # only unmapped ids get a student id, once
        assert (vm.mapping[:10] == base[:10]).all()       # exact matches untouched
        assert len(vm.added) > 0
        for a, b in vm.added:
            assert lev(t_vocab[a], s_vocab[b]) / (len(t_vocab[a]) + len(s_vocab[b])) < thr


def test_sparse_teacher_signal_with_full_k_equals_dense():
    zs, zt, ss, ts = _case(7)
    cfg = CDMConfig(top_k=4)
    dense = cdm_terms(zs, zt, ss, ts, DynamicVocabMap(BASE, T_VOCAB, S_VOCAB), cfg)
    sig = [TeacherSignal.top_k(z, len(T_VOCAB)) for z in zt]
    sparse = cdm_terms(zs, sig, ss, ts, DynamicVocabMap(BASE, T_VOCAB, S_VOCAB), cfg, teacher_vocab_size=12)
    torch.testing.assert_close(dense["kd"], sparse["kd"], atol=1e-5, rtol=1e-5)
    trunc = cdm_terms(zs, [TeacherSignal.top_k(z, 6) for z in zt], ss, ts, DynamicVocabMap(BASE, T_VOCAB, S_VOCAB),
                      cfg, teacher_vocab_size=12)
    assert torch.isfinite(trunc["kd"])


def test_identical_tokenizers_reduce_to_topk_kl():
    # Same vocabulary, identity map, identical strings: DTW is the identity, groups are single positions.
    vocab = ["a", "b", "cc", "dd", "e"]
    z_s = torch.randn(4, 5, requires_grad=True)
    z_t = torch.randn(4, 5)
    strings = ["a", "cc", "e", "b"]
    out = cdm_terms([z_s], [z_t], [strings], [strings], DynamicVocabMap(np.arange(5), vocab, vocab),
                    CDMConfig(top_k=5, kd_temperature=1.0))
    # Both directions gather the full vocabulary: KL over the doubled vector equals the full-vocab KL.
    full = (torch.softmax(z_t, -1) * (torch.log_softmax(z_t, -1) - torch.log_softmax(z_s, -1))).sum()
    torch.testing.assert_close(out["kd"], full, atol=1e-5, rtol=1e-5)


def test_empty_sequences_and_bad_inputs():
    z = torch.randn(0, 10, requires_grad=True)
    out = cdm_terms([z], [torch.randn(3, 12)], [[]], [["a", "b", "c"]], DynamicVocabMap(BASE, T_VOCAB, S_VOCAB))
    assert out["kd"] == 0
    with pytest.raises(ValueError, match="student strings"):
        cdm_terms([torch.randn(2, 10)], [torch.randn(3, 12)], [["a"]], [["a", "b", "c"]],
                  DynamicVocabMap(BASE, T_VOCAB, S_VOCAB))
    with pytest.raises(ValueError, match="threshold"):
        CDMConfig(threshold=0.0)
    with pytest.raises(ValueError, match=r"\[V_t\]"):
        DynamicVocabMap(np.zeros(3), T_VOCAB, S_VOCAB)
