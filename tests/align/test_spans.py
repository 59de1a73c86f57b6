"""Span alignment over the three tokenizer families, pairwise. Run: python -m pytest tests/align/test_spans.py -q"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossdistill.align.spans import BatchAlignment, align_spans, align_spans_reference, group_ids
from crossdistill.data.render import collate_rendered, render
from crossdistill.positions import shift_targets

KINDS = ("bpe", "unigram", "wordpiece")
PAIRS = list(itertools.product(KINDS, KINDS))
MESSAGES = [{"role": "user", "content": "Say something."}]
ALPHABET = (list("ab cdeXYZ 0123.,!?\n\t") + ["  ", "   ", "\n\n", "é", "e\u0301", "a\u0308", "日", "本", "中文", "🙂",
            "🚀", "👍🏽", "👨\u200d👩\u200d👧", "한국", "ß", "Ω", "ﬁ", "\u00a0"])
TEXT = st.lists(st.sampled_from(ALPHABET) | st.characters(codec="utf-8"), max_size=40).map("".join)


def group_text_ranges(spans, groups):
    return [(spans[g[0]][0], spans[g[-1]][1]) for g in groups]


def check_alignment(rs, rt, identical):
    al = align_spans(rs.spans, rt.spans)
    gs, gt = al.groups()
    # groups partition both sides (both sides end with a zero-width EOS, so nothing is left unaligned)
    assert al.num_unaligned == 0
    assert sorted(i for g in gs for i in g) == list(range(len(rs.spans)))
    assert sorted(i for g in gt for i in g) == list(range(len(rt.spans)))
    assert all(g for g in gs) and all(g for g in gt)
    for g in gs + gt:
        assert g == list(range(g[0], g[-1] + 1))  # contiguous
    # each group covers the same text on both sides
    text = rs.completion
    ranges_s, ranges_t = group_text_ranges(rs.spans, gs), group_text_ranges(rt.spans, gt)
    assert ranges_s == ranges_t
    assert [text[a:b] for a, b in ranges_s] == [text[a:b] for a, b in ranges_t]
    assert "".join(text[a:b] for a, b in ranges_s) == text
    # the vectorized walk equals the literal two-pointer loop
    assert (gs, gt) == align_spans_reference(rs.spans, rt.spans)
    if identical:
        assert al.is_identity


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXT)
def test_alignment_properties_random_unicode(tokenizers, pair, text):
    a, b = pair
    rs = render(tokenizers[a], MESSAGES, text)
    rt = render(tokenizers[b], "plain prompt: ", text)  # different prompt rendering on purpose
    check_alignment(rs, rt, identical=(a == b))


def test_fixed_tricky_text_all_pairs(tokenizers):
    text = " Héllo 🚀👍🏽 日本語 e\u0301  x\t\nThe answer is 42."
    for a, b in PAIRS:
        check_alignment(render(tokenizers[a], MESSAGES, text), render(tokenizers[b], MESSAGES, text), a == b)


def test_zero_width_tokens_join_next_group_and_tail_rules():
    s = [(0, 3), (3, 3), (3, 5), (5, 5)]
    t = [(0, 3), (3, 5)]
    gs, gt, g = group_ids(s, t)
    # (3, 3) joins the group that closes next; the trailing zero-width (5, 5) (an EOS only s has) joins the last group
    assert g == 2 and gs.tolist() == [0, 1, 1, 1] and gt.tolist() == [0, 1]
    assert align_spans_reference(s, t) == ([[0], [1, 2, 3]], [[0], [1]])
    # positive-width tokens after the last shared boundary (a truncated side) are unaligned
    gs, gt, g = group_ids([(0, 3), (3, 5), (5, 7)], [(0, 3), (3, 4)])
    assert g == 1 and gs.tolist() == [0, -1, -1] and gt.tolist() == [0, -1]


def test_truncated_side_leaves_tail_unaligned(tokenizers):
    text = "The quick brown fox jumps over the lazy dog."
    rs = render(tokenizers["bpe"], MESSAGES, text)
    full = render(tokenizers["unigram"], MESSAGES, text)
    rt = render(tokenizers["unigram"], MESSAGES, text, max_length=full.completion_start + 4)
    al = align_spans(rs.spans, rt.spans)
    gs, gt = al.groups()
    assert al.num_unaligned > 0
    assert group_text_ranges(rs.spans, gs) == group_text_ranges(rt.spans, gt)
    assert max(b for _, b in group_text_ranges(rs.spans, gs)) <= rt.covered


def test_bad_spans_error():
    with pytest.raises(ValueError, match="non-decreasing"):
        group_ids([(0, 3), (0, 1)], [(0, 3)])


def test_batch_alignment_rows_match_shifted_targets(tokenizers):
    ts, tt = tokenizers["bpe"], tokenizers["wordpiece"]
    texts = ["Hello world 🚀!", "日本語 and more", ""]
    rs = [render(ts, MESSAGES, x) for x in texts]
    rt = [render(tt, "Q: ", x) for x in texts]
    bs, bt = collate_rendered(rs, ts.pad_token_id), collate_rendered(rt, tt.pad_token_id)
    ys, ms = shift_targets(bs["labels"])
    yt, mt = shift_targets(bt["labels"])
    al = BatchAlignment.from_collated(bs, bt, ms, mt)
    assert al.num_groups == sum(align_spans(a.spans, b.spans).num_groups for a, b in zip(rs, rt))
    # every student row is a target row and the tokens it predicts are the completion tokens, in order
    flat_s = ys[ms]
    assert torch.equal(flat_s[al.student_rows], torch.tensor([i for r in rs for i in r.input_ids[r.completion_start:]]))
    flat_t = yt[mt]
    assert torch.equal(flat_t[al.teacher_rows], torch.tensor([i for r in rt for i in r.input_ids[r.completion_start:]]))
    assert torch.all(al.student_groups[1:] >= al.student_groups[:-1])
    assert al.group_example.tolist() == sorted(al.group_example.tolist())
    first, last = al.first_last("student")
    assert first.shape == last.shape == (al.num_groups,)


def test_batch_alignment_identity(tokenizers):
    tok = tokenizers["unigram"]
    rs = [render(tok, MESSAGES, x) for x in ["a b c", "日本"]]
    b = collate_rendered(rs, tok.pad_token_id)
    _, m = shift_targets(b["labels"])
    al = BatchAlignment.from_collated(b, b, m, m)
    assert al.identity and torch.equal(al.student_rows, torch.arange(int(m.sum())))


def test_group_without_predictor_row_is_dropped():
    # completion at sequence index 0 (no prompt, no BOS): its first token has no predictor row
    spans = [np.array([(0, 1), (1, 2), (2, 2)])]
    labels = torch.tensor([[5, 6, 7]])
    _, m = shift_targets(labels)
    al = BatchAlignment.build(spans, spans, [0], [0], m, m)
    assert al.num_groups == 2 and al.student_rows.tolist() == [0, 1]
