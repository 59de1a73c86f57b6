"""DSKD, DSKD-CMA and DSKDv2-ETA vs naive references. Run: python -m pytest tests/losses/test_dskd.py -q"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from crossdistill.losses.dskd import (
    DSKDProjectors,
    dskd_cma_terms,
    dskd_eta_terms,
    dskd_terms,
    load_projectors,
    pinv_projector_init,
    save_projectors,
)


def kl_rows(p_logits, q_logits, tau):
    """Σ over rows of KL(softmax(p/τ) ‖ softmax(q/τ)), written out."""
    total = 0.0
    for p_row, q_row in zip(p_logits, q_logits):
        lp = torch.log_softmax(p_row / tau, -1)
        lq = torch.log_softmax(q_row / tau, -1)
        total = total + sum(lp[v].exp() * (lp[v] - lq[v]) for v in range(len(lp)))
    return total


def ce_rows(logits, labels):
    return sum(-torch.log_softmax(z, -1)[y] for z, y in zip(logits, labels))


def _grads(out, params):
    return torch.autograd.grad(sum(out.values()), params, allow_unused=True)


def _params(proj, *extra):
    return [*extra, *[p for p in proj.parameters() if p.requires_grad]]


def test_dskd_same_vocab_matches_naive_value_and_gradient():
    torch.manual_seed(0)
    n, hs, ht, v = 7, 5, 6, 11
    h_s = torch.randn(n, hs, requires_grad=True)
    w_s = torch.randn(v, hs, requires_grad=True)
    h_t, w_t = torch.randn(n, ht), torch.randn(v, ht)
    y = torch.randint(0, v, (n,))
    proj = DSKDProjectors(hs, ht)
    for chunk in (1024, 3):                       # 3: chunked + activation checkpointing path
        out = dskd_terms(h_s, w_s, h_t, w_t, y, proj, temperature=2.0, chunk_tokens=chunk)
        got = _grads(out, _params(proj, h_s, w_s))
        z_s = h_s @ w_s.T
        z_t = h_t @ w_t.T
        z_t2s = proj.t2s(h_t) @ w_s.detach().T
        z_s2t = proj.s2t(h_s) @ w_t.T
        ref = {"t2s_kd": kl_rows(z_t2s.detach(), z_s, 2.0), "t2s_ce": ce_rows(z_t2s, y),
               "s2t_kd": kl_rows(z_t, z_s2t, 2.0)}
        want = _grads(ref, _params(proj, h_s, w_s))
        for name in ref:
            torch.testing.assert_close(out[name], ref[name], atol=1e-5, rtol=1e-5)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_dskd_gradient_routing():
    # t2s_ce trains only P_t2s; t2s_kd only the student; s2t_kd the student hidden and P_s2t, never the heads' sg.
    torch.manual_seed(1)
    h_s = torch.randn(4, 5, requires_grad=True)
    w_s = torch.randn(9, 5, requires_grad=True)
    proj = DSKDProjectors(5, 6)
    out = dskd_terms(h_s, w_s, torch.randn(4, 6), torch.randn(9, 6), torch.randint(0, 9, (4,)), proj)
    def norms(term):
        g = torch.autograd.grad(out[term], [h_s, w_s, proj.t2s.weight, proj.s2t.weight], allow_unused=True,
                                retain_graph=True)
        return [0.0 if x is None else float(x.abs().sum()) for x in g]

    ce = norms("t2s_ce")
    assert ce[0] == 0 and ce[1] == 0 and ce[2] > 0 and ce[3] == 0
    kd = norms("t2s_kd")
    assert kd[0] > 0 and kd[1] > 0 and kd[2] == 0 and kd[3] == 0
    s2t = norms("s2t_kd")
    assert s2t[0] > 0 and s2t[1] == 0 and s2t[2] == 0 and s2t[3] > 0


def naive_cma(h_s, w_s, e_s, x_s, y_s, m_s, h_t, w_t, e_t, x_t, y_t, m_t, proj, tau):
    bsz = h_s.shape[0]
    k_all = torch.cat([e_t[x_t.clamp_min(0)], e_t[y_t.clamp_min(0)]], -1)
    k_all = k_all / k_all.std()
    ey = e_t[y_t.clamp_min(0)]
    v_all = proj.t2s(h_t / h_t.std() + ey / ey.std())
    vs_all = proj.s2t(h_s)
    t2s_kd = t2s_ce = s2t_kd = 0.0
    d = k_all.shape[-1]
    for b in range(bsz):
        q = proj.query(torch.cat([e_s[x_s[b].clamp_min(0)], e_s[y_s[b].clamp_min(0)]], -1))
        scores = torch.stack([torch.stack([
            (q[i] @ k_all[b, j]) / math.sqrt(d) if (m_s[b, i] and m_t[b, j]) else torch.tensor(-1e5)
            for j in range(h_t.shape[1])]) for i in range(h_s.shape[1])])
        for i in range(h_s.shape[1]):
            if not m_s[b, i]:
                continue
            a = torch.softmax(scores[i], -1)
            hid = sum(a[j] * v_all[b, j] for j in range(h_t.shape[1]))
            z = hid @ w_s.detach().T
            t2s_ce = t2s_ce + ce_rows([z], [y_s[b, i]])
            if int(z.argmax()) == int(y_s[b, i]):
                t2s_kd = t2s_kd + kl_rows([z.detach()], [h_s[b, i] @ w_s.T], tau)
        for j in range(h_t.shape[1]):
            if not m_t[b, j]:
                continue
            a = torch.softmax(scores[:, j], -1)
            hid = sum(a[i] * vs_all[b, i] for i in range(h_s.shape[1]))
            s2t_kd = s2t_kd + kl_rows([h_t[b, j] @ w_t.T], [hid @ w_t.T], tau)
    return {"t2s_kd": t2s_kd, "t2s_ce": t2s_ce, "s2t_kd": s2t_kd}


def test_dskd_cma_matches_naive_value_and_gradient():
    torch.manual_seed(2)
    b, ts, tt, hs, ht, vs, vt = 2, 5, 6, 4, 6, 9, 13
    h_s = torch.randn(b, ts, hs, requires_grad=True)
    w_s = torch.randn(vs, hs, requires_grad=True)
    e_s = torch.randn(vs, hs)
    x_s = torch.randint(0, vs, (b, ts))
    y_s = torch.randint(0, vs, (b, ts))
    m_s = torch.tensor([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1]], dtype=torch.bool)
    y_s = torch.where(m_s, y_s, -100)
    h_t, w_t, e_t = torch.randn(b, tt, ht), torch.randn(vt, ht), torch.randn(vt, ht)
    x_t = torch.randint(0, vt, (b, tt))
    m_t = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    y_t = torch.where(m_t, torch.randint(0, vt, (b, tt)), -100)
    proj = DSKDProjectors(hs, ht, cross_attention=True)
    # Make the projected teacher predict token 4 everywhere (a large t2s bias along W_S[4]) and make token 4 the gold
    # token at some positions only, so the "KD only where argmax z_t2s = gold" mask is exercised both ways.
    with torch.no_grad():
        w_s[4] *= 3
        proj.t2s.bias.copy_(3 * w_s[4] / w_s[4].norm())
    y_s = torch.where(m_s & (torch.arange(ts) % 2 == 0), torch.tensor(4), y_s)
    out = dskd_cma_terms(h_s, w_s, e_s, x_s, y_s, m_s, h_t, w_t, e_t, x_t, y_t, m_t, proj, temperature=2.0)
    got = _grads(out, _params(proj, h_s, w_s))
    ref = naive_cma(h_s, w_s, e_s, x_s, y_s, m_s, h_t, w_t, e_t, x_t, y_t, m_t, proj, 2.0)
    want = _grads({k: v for k, v in ref.items() if isinstance(v, torch.Tensor)}, _params(proj, h_s, w_s))
    assert out["t2s_kd"].detach().item() > 0 and out["t2s_ce"].detach().item() > 0
    for name in ref:
        torch.testing.assert_close(out[name], torch.as_tensor(ref[name]).float(), atol=1e-5, rtol=1e-5)
    for a, w in zip(got, want):
        if w is None:
            assert a is None or a.abs().max() < 1e-6
        else:
            torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("agreement", [1.0, 0.0])
def test_dskd_eta_matches_naive_value_and_gradient(agreement):
    torch.manual_seed(3)
    hs, ht, vs, vt = 5, 7, 10, 12
    h_s = torch.randn(6, hs, requires_grad=True)
    w_s = torch.randn(vs, hs, requires_grad=True)
    h_t, w_t = torch.randn(8, ht), torch.randn(vt, ht)
    t_rows = torch.tensor([0, 2, 3, 6])
    s_rows = torch.tensor([0, 1, 3, 5])
    t2s_map = torch.tensor([0, 1, 2, -1, 4, 5, 6, 7, 8, 9, -1, 3])
    proj = DSKDProjectors(hs, ht)
    z_t = h_t @ w_t.T
    labels = t2s_map[z_t[t_rows].argmax(-1)]
    # Steer the projected teacher to the teacher's label on the first aligned row, so agreement is mixed.
    with torch.no_grad():
        proj.t2s.bias.copy_(4 * w_s[int(labels[0])] / w_s[int(labels[0])].norm())
    out = dskd_eta_terms(h_s, w_s, h_t, w_t, t_rows, s_rows, t2s_map, proj, temperature=2.0,
                         t2s_agreement=agreement)
    got = _grads({k: v for k, v in out.items() if k != "aligned"}, _params(proj, h_s, w_s))
    rows = []
    for i, j in zip(t_rows.tolist(), s_rows.tolist()):
        label = int(t2s_map[int(z_t[i].argmax())])
        z_t2s = proj.t2s(h_t[i]) @ w_s.detach().T
        rows.append((i, j, label, z_t2s, label >= 0 and int(z_t2s.argmax()) == label))
    rate = sum(r[4] for r in rows) / len(rows)
    assert 0 < rate < 1
    t2s_kd = t2s_ce = s2t_kd = 0.0
    for i, j, label, z_t2s, agree in rows:
        if label >= 0:
            t2s_ce = t2s_ce + ce_rows([z_t2s], [label])
        if (agree if rate <= agreement else True):
            t2s_kd = t2s_kd + kl_rows([z_t2s.detach()], [h_s[j] @ w_s.T], 2.0)
        s2t_kd = s2t_kd + kl_rows([z_t[i]], [proj.s2t(h_s[j]) @ w_t.T], 2.0)
    ref = {"t2s_kd": t2s_kd, "t2s_ce": t2s_ce, "s2t_kd": s2t_kd}
    want = _grads({k: v for k, v in ref.items() if isinstance(v, torch.Tensor)}, _params(proj, h_s, w_s))
    for name in ref:
        torch.testing.assert_close(out[name], torch.as_tensor(ref[name]).float(), atol=1e-5, rtol=1e-5)
    assert out["aligned"] == 4
    for a, w in zip(got, want):
        if w is None:
            assert a is None or a.abs().max() < 1e-6
        else:
            torch.testing.assert_close(a, w, atol=1e-5, rtol=1e-4)
    # No aligned pair: zero terms, graph still connected to the student.
    empty = dskd_eta_terms(h_s, w_s, h_t, w_t, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long),
                           t2s_map, proj)
    assert sum(v.detach() for k, v in empty.items() if k != "aligned").item() == 0.0


def test_pinv_init_is_least_squares_and_frozen_s2t():
    torch.manual_seed(4)
    w_s, w_t = torch.randn(30, 6), torch.randn(40, 9)
    t_ids = torch.arange(0, 40, 2)[:18]
    s_ids = torch.arange(18)
    proj = DSKDProjectors(6, 9)
    used = pinv_projector_init(proj, w_s, w_t, t_ids, s_ids, freeze_s2t=True)
    assert used == 18
    # t2s.weight [H_s, H_t] = argmin || W^s_ovᵀ X − W^t_ovᵀ || (numpy lstsq, min-norm solution).
    lst = np.linalg.lstsq(w_s[s_ids].double().numpy(), w_t[t_ids].double().numpy(), rcond=None)[0]
    np.testing.assert_allclose(proj.t2s.weight.detach().double().numpy(), lst, atol=1e-5)
    lst2 = np.linalg.lstsq(w_t[t_ids].double().numpy(), w_s[s_ids].double().numpy(), rcond=None)[0]
    np.testing.assert_allclose(proj.s2t.weight.detach().double().numpy(), lst2, atol=1e-5)
    assert not proj.s2t.weight.requires_grad
    assert all(p.requires_grad for p in proj.projector_parameters())
    assert len(proj.projector_parameters()) == 2
    with pytest.raises(ValueError, match="overlap"):
        pinv_projector_init(proj, w_s, w_t, torch.tensor([], dtype=torch.long), torch.tensor([], dtype=torch.long))


def test_teacher_signal_only_is_refused_with_a_clear_error():
    proj = DSKDProjectors(4, 4)
    with pytest.raises(ValueError, match="hidden states"):
        dskd_terms(torch.randn(2, 4), torch.randn(5, 4), None, torch.randn(5, 4), torch.zeros(2, dtype=torch.long),
                   proj)


def test_projectors_save_load_roundtrip(tmp_path):
    proj = DSKDProjectors(4, 6, cross_attention=True)
    path = save_projectors(proj, tmp_path / "run" / "projectors.safetensors")
    back = load_projectors(path)
    assert back.query is not None
    for (k, a), (k2, b) in zip(proj.state_dict().items(), back.state_dict().items()):
        assert k == k2 and torch.equal(a, b)
    assert not list(path.parent.glob("*.tmp"))
