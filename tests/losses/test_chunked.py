"""Chunked / fused loss == naive full-logits reference, in value and gradient.

Run: python -m pytest tests/losses/test_chunked.py -q
"""

from __future__ import annotations

import pytest
import torch

from crossdistill.losses import ALIASES, TeacherSignal, combine_terms
from crossdistill.losses.chunked import ChunkedLossConfig, TeacherHead, distill_loss_from_logits, fused_distill_loss

PARAMS = {
    "forward_kl": {},
    "reverse_kl": {},
    "generalized_jsd": {"beta": 0.3},
    "skew_kl": {"alpha": 0.1},
    "skew_reverse_kl": {"alpha": 0.1},
    "tvd": {},
    "adaptive_kl": {"alpha": 0.5},
}


def naive_per_token(
    name: str, s_logits: torch.Tensor, t_logits: torch.Tensor, temp: float, params: dict
) -> torch.Tensor:
    """Independent reference: probabilities, explicit sums, [M, V] -> [M]."""
    name = ALIASES.get(name, name)
    q = torch.softmax(s_logits / temp, -1)
    p = torch.softmax(t_logits / temp, -1)

    def kl(a, b):
        return (a * (a.log() - b.log())).sum(-1)

    if name == "forward_kl":
        return kl(p, q)
    if name == "reverse_kl":
        return kl(q, p)
    if name == "generalized_jsd":
        b = params["beta"]
        m = b * p + (1 - b) * q
        return b * kl(p, m) + (1 - b) * kl(q, m)
    if name == "skew_kl":
        a = params["alpha"]
        return kl(p, a * p + (1 - a) * q)
    if name == "skew_reverse_kl":
        a = params["alpha"]
        return kl(q, (1 - a) * p + a * q)
    if name == "tvd":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "adaptive_kl":
        ps, order = p.sort(-1)
        qs = q.gather(-1, order)
        tail = (ps.cumsum(-1) <= params["alpha"]).float()
        gap = (ps - qs).abs()
        gh, gt = (gap * (1 - tail)).sum(-1).detach(), (gap * tail).sum(-1).detach()
        return gh / (gh + gt) * kl(p, q) + gt / (gh + gt) * kl(q, p)
    raise KeyError(name)


def naive_sums(h, w, b, targets, t_logits, name, params, temp, ignore_index, vocab):
    """Full [N, V] logits, mask AFTER the loss: the textbook (memory-hungry) way."""
    z = (h @ w.T + (b if b is not None else 0)).float()[:, :vocab]
    mask = targets != ignore_index
    safe_t = torch.where(mask, targets, torch.zeros_like(targets))
    ce = -(torch.log_softmax(z, -1).gather(-1, safe_t[:, None]).squeeze(1)) * mask
    kd = naive_per_token(name, z, t_logits.float()[:, :vocab], temp, params) * mask
    return ce.sum(), kd.sum()


def make_case(n=3 * 47, h_s=31, h_t=19, v=123, v_s=None, v_t=None, dtype=torch.float32, ignore_index=-100, seed=0):
    g = torch.Generator().manual_seed(seed)
    v_s, v_t = v_s or v, v_t or v
    hidden = torch.randn(n, h_s, generator=g).to(dtype)
    weight = (torch.randn(v_s, h_s, generator=g) * 0.3).to(dtype)
    bias = (torch.randn(v_s, generator=g) * 0.1).to(dtype)
    t_hidden = torch.randn(n, h_t, generator=g).to(dtype)
    t_weight = (torch.randn(v_t, h_t, generator=g) * 0.4).to(dtype)
    targets = torch.randint(0, v, (n,), generator=g)
    targets[torch.rand(n, generator=g) < 0.35] = ignore_index
    targets[:5] = ignore_index  # a masked prefix (a prompt)
    return hidden, weight, bias, t_hidden, t_weight, targets


def run_fused(hidden, weight, bias, targets, teacher, cfg):
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    b = bias.clone().requires_grad_() if bias is not None else None
    out = fused_distill_loss(h, w, targets, teacher, cfg, student_bias=b)
    (out.sums["ce"] + 0.7 * out.sums["kd"]).backward()
    return out, h.grad, w.grad, None if b is None else b.grad


def run_naive(hidden, weight, bias, targets, t_logits, cfg, vocab):
    h = hidden.clone().requires_grad_()
    w = weight.clone().requires_grad_()
    b = bias.clone().requires_grad_() if bias is not None else None
    ce, kd = naive_sums(
        h, w, b, targets, t_logits, cfg.divergence, cfg.divergence_params, cfg.temperature, cfg.ignore_index, vocab
    )
    (ce + 0.7 * kd).backward()
    return ce, kd, h.grad, w.grad, None if b is None else b.grad


def assert_close(a, b, atol):
    torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=0)


@pytest.mark.parametrize("name", sorted(PARAMS))
@pytest.mark.parametrize("teacher_kind", ["head", "logits"])
def test_fp32_matches_naive_every_divergence(name, teacher_kind):
    # B=3, T=47 flattened; H_s=31 != H_t=19; V=123; chunk 16 leaves a smaller last chunk; T=2; ignore_index=42.
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(ignore_index=42)
    cfg = ChunkedLossConfig(
        divergence=name, divergence_params=PARAMS[name], temperature=2.0, chunk_size=16, ignore_index=42
    )
    t_logits = t_hidden @ t_weight.T
    teacher = TeacherHead(t_hidden, t_weight) if teacher_kind == "head" else TeacherSignal.dense(t_logits)
    out, gh, gw, gb = run_fused(hidden, weight, bias, targets, teacher, cfg)
    ce, kd, rh, rw, rb = run_naive(hidden, weight, bias, targets, t_logits, cfg, 123)
    assert out.num_targets == int((targets != 42).sum()) and out.num_targets % 16 != 0
    assert_close(out.sums["ce"], ce, 1e-4)  # sums over ~90 tokens: 1e-5 per token
    assert_close(out.sums["kd"], kd, 1e-4)
    for got, ref in ((gh, rh), (gw, rw), (gb, rb)):
        assert_close(got, ref, 1e-5)


def test_bf16_matches_naive():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(dtype=torch.bfloat16, seed=3)
    cfg = ChunkedLossConfig(divergence="jsd", divergence_params={"beta": 0.5}, temperature=1.5, chunk_size=32)
    out, gh, gw, gb = run_fused(hidden, weight, bias, targets, TeacherHead(t_hidden, t_weight), cfg)
    ce, kd, rh, rw, rb = run_naive(hidden, weight, bias, targets, t_hidden @ t_weight.T, cfg, 123)
    n = out.num_targets
    assert_close(out.sums["ce"] / n, ce / n, 5e-2)
    assert_close(out.sums["kd"] / n, kd / n, 5e-2)
    assert gh.dtype == torch.bfloat16 and gw.dtype == torch.bfloat16
    for got, ref in ((gh, rh), (gw, rw), (gb, rb)):
        assert_close(got, ref, 5e-2)


def test_all_masked_gives_zero_and_finite_grads():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case()
    targets[:] = -100
    cfg = ChunkedLossConfig(divergence="jsd", divergence_params={"beta": 0.5}, chunk_size=8)
    out, gh, gw, gb = run_fused(hidden, weight, bias, targets, TeacherHead(t_hidden, t_weight), cfg)
    assert out.num_targets == 0 and out.sums["ce"].item() == 0.0 and out.sums["kd"].item() == 0.0
    assert torch.all(gh == 0) and torch.all(gw == 0) and torch.isfinite(gb).all()
    obj = combine_terms(out.sums, {"ce": 1.0, "kd": 1.0}, out.num_targets)
    assert obj.loss.item() == 0.0


def test_chunk_size_does_not_change_the_result():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(seed=5)
    teacher = TeacherHead(t_hidden, t_weight)
    ref = run_fused(hidden, weight, bias, targets, teacher, ChunkedLossConfig(chunk_size=10_000))
    for c in (1, 7, 64):
        got = run_fused(hidden, weight, bias, targets, teacher, ChunkedLossConfig(chunk_size=c))
        assert_close(got[0].sums["kd"], ref[0].sums["kd"], 1e-4)
        for a, b in zip(got[1:], ref[1:], strict=True):
            assert_close(a, b, 1e-5)


def test_padded_heads_of_different_sizes():
    # Real vocab 123; student head padded to 128, teacher head to 130 (Qwen 151936 vs 152064 in miniature).
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(v_s=128, v_t=130, seed=7)
    cfg = ChunkedLossConfig(divergence="fkl", vocab_size=123, temperature=1.3, chunk_size=20)
    out, gh, gw, gb = run_fused(hidden, weight, bias, targets, TeacherHead(t_hidden, t_weight), cfg)
    ce, kd, rh, rw, rb = run_naive(hidden, weight, bias, targets, t_hidden @ t_weight.T, cfg, 123)
    assert_close(out.sums["kd"], kd, 1e-4)
    assert_close(out.sums["ce"], ce, 1e-4)
    assert_close(gh, rh, 1e-5)
    assert_close(gw, rw, 1e-5)
    assert torch.all(gw[123:] == 0)  # padding rows get no gradient


def test_default_vocab_is_the_smaller_head():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(v_s=123, v_t=130, seed=8)
    out = fused_distill_loss(hidden, weight, targets, TeacherHead(t_hidden, t_weight))
    ce, kd = naive_sums(hidden, weight, None, targets, t_hidden @ t_weight.T, "forward_kl", {}, 1.0, -100, 123)
    assert_close(out.sums["kd"], kd, 1e-4)


def test_target_in_padding_is_a_clear_error():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(v_s=128, v_t=130)
    targets[7] = 125
    with pytest.raises(ValueError, match=r"target id 125 falls in the padded rows .*vocab_size=123"):
        fused_distill_loss(hidden, weight, targets, TeacherHead(t_hidden, t_weight), ChunkedLossConfig(vocab_size=123))
    with pytest.raises(ValueError, match="exceeds a head"):
        fused_distill_loss(hidden, weight, targets, TeacherHead(t_hidden, t_weight), ChunkedLossConfig(vocab_size=129))


def test_teacher_gets_no_gradient():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case()
    th, tw = t_hidden.clone().requires_grad_(), t_weight.clone().requires_grad_()
    h = hidden.clone().requires_grad_()
    out = fused_distill_loss(h, weight, targets, TeacherHead(th, tw))
    out.sums["kd"].backward()
    assert th.grad is None and tw.grad is None and h.grad is not None


def test_frozen_head_gets_no_weight_grad():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case()
    h = hidden.clone().requires_grad_()
    out = fused_distill_loss(h, weight, targets, TeacherHead(t_hidden, t_weight))
    (out.sums["ce"] + out.sums["kd"]).backward()
    assert weight.grad is None and torch.isfinite(h.grad).all()


def test_softcap_and_logit_scale_match_naive():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(seed=11)
    cfg = ChunkedLossConfig(
        divergence="rkl",
        chunk_size=16,
        student_logit_scale=0.5,
        student_softcap=3.0,
        teacher_logit_scale=2.0,
        teacher_softcap=5.0,
    )
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    out = fused_distill_loss(h, w, targets, TeacherHead(t_hidden, t_weight), cfg)
    (out.sums["ce"] + out.sums["kd"]).backward()
    h2, w2 = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    zs = 3.0 * torch.tanh((h2 @ w2.T) * 0.5 / 3.0)
    zt = 5.0 * torch.tanh((t_hidden @ t_weight.T) * 2.0 / 5.0)
    mask = targets != -100
    ce = torch.nn.functional.cross_entropy(zs[mask], targets[mask], reduction="sum")
    kd = naive_per_token("reverse_kl", zs[mask], zt[mask], 1.0, {}).sum()
    (ce + kd).backward()
    assert_close(out.sums["kd"], kd, 1e-4)
    assert_close(h.grad, h2.grad, 1e-5)
    assert_close(w.grad, w2.grad, 1e-5)


def test_micro_batches_with_global_count_equal_the_whole_batch():
    # One batch vs the same batch split into 4 micro-batches, each normalized by the GLOBAL target count.
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(n=4 * 37, seed=13)
    hidden, weight, t_hidden, t_weight = (x.double() for x in (hidden, weight, t_hidden, t_weight))
    cfg = ChunkedLossConfig(divergence="jsd", divergence_params={"beta": 0.5}, temperature=2.0, chunk_size=16)
    weights = {"ce": 0.5, "kd": 0.5}
    count = int((targets != -100).sum())

    def objective(rows):
        h = hidden[rows].clone().requires_grad_()
        w = weight.clone().requires_grad_()
        out = fused_distill_loss(h, w, targets[rows], TeacherHead(t_hidden[rows], t_weight), cfg)
        obj = combine_terms(out.sums, weights, count, temperature=2.0)
        obj.loss.backward()
        return obj.loss.detach(), h.grad, w.grad

    whole_loss, whole_gh, whole_gw = objective(slice(0, 148))
    parts = [objective(slice(i, i + 37)) for i in range(0, 148, 37)]
    assert abs(float(sum(p[0] for p in parts)) - float(whole_loss)) < 1e-6
    torch.testing.assert_close(torch.cat([p[1] for p in parts]), whole_gh, atol=1e-6, rtol=0)
    torch.testing.assert_close(sum(p[2] for p in parts), whole_gw, atol=1e-6, rtol=0)


def test_shared_gradient_buffer_with_grad_weights_hint():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(seed=19)
    teacher = TeacherHead(t_hidden, t_weight)
    base = dict(divergence="jsd", divergence_params={"beta": 0.3}, temperature=2.0, chunk_size=16)
    ref = run_fused(hidden, weight, bias, targets, teacher, ChunkedLossConfig(**base))  # ce + 0.7 * kd
    hinted = ChunkedLossConfig(**base, grad_weights={"ce": 2.0, "kd": 1.4})  # same ratio, other scale
    got = run_fused(hidden, weight, bias, targets, teacher, hinted)
    for a, b in zip(got[1:], ref[1:], strict=True):
        assert_close(a, b, 1e-5)
    h = hidden.clone().requires_grad_()
    out = fused_distill_loss(h, weight, targets, teacher, hinted)
    with pytest.raises(RuntimeError, match="grad_weights=.*promised"):
        (out.sums["ce"] + out.sums["kd"]).backward()


def test_logits_path_equals_fused_path():
    hidden, weight, bias, t_hidden, t_weight, targets = make_case(seed=17)
    cfg = ChunkedLossConfig(divergence="skl", divergence_params={"alpha": 0.2}, temperature=1.7, chunk_size=9)
    fused = run_fused(hidden, weight, bias, targets, TeacherHead(t_hidden, t_weight), cfg)
    h = hidden.clone().requires_grad_()
    logits = h @ weight.T + bias
    plain = distill_loss_from_logits(
        logits.view(3, 47, -1), targets.view(3, 47), (t_hidden @ t_weight.T).view(3, 47, -1), cfg
    )
    (plain.sums["ce"] + 0.7 * plain.sums["kd"]).backward()
    assert plain.num_targets == fused[0].num_targets
    assert_close(plain.sums["kd"], fused[0].sums["kd"], 1e-4)
    assert_close(h.grad, fused[1], 1e-5)


def test_ce_only_without_teacher():
    hidden, weight, bias, _, _, targets = make_case()
    out = fused_distill_loss(hidden, weight, targets, None, ChunkedLossConfig(chunk_size=13))
    mask = targets != -100
    ref = torch.nn.functional.cross_entropy((hidden @ weight.T)[mask], targets[mask], reduction="sum")
    assert set(out.sums) == {"ce"}
    assert_close(out.sums["ce"], ref, 1e-4)


def test_bad_config_and_shapes_fail_early():
    with pytest.raises(ValueError, match="unknown divergence"):
        ChunkedLossConfig(divergence="kld")
    with pytest.raises(ValueError, match="chunk_size=0"):
        ChunkedLossConfig(chunk_size=0)
    hidden, weight, bias, t_hidden, t_weight, targets = make_case()
    with pytest.raises(ValueError, match="positions but targets"):
        fused_distill_loss(hidden[:-1], weight, targets, None)
    with pytest.raises(ValueError, match="TeacherSignal has 7 rows"):
        fused_distill_loss(hidden, weight, targets, TeacherSignal.dense(torch.randn(7, 123)))
