"""ALM's chunks and boundary masks. Run: python -m pytest tests/align/test_chunks.py -q"""

from __future__ import annotations

import pytest
import torch

from crossdistill.align.chunks import boundary_masks, ids_from_closures, last_of_example, space_closures
from crossdistill.align.spans import BatchAlignment
from crossdistill.data.render import collate_rendered, render
from crossdistill.losses.alm import alm_loss
from crossdistill.positions import shift_targets

TEXTS = ["The answer is 42.\nThen 12 + 30 = 42.", "日本語 🚀 naïve café, déjà vu"]
PROMPT = [{"role": "user", "content": "Please answer."}]


def batch(tok, texts=TEXTS):
    b = collate_rendered([render(tok, PROMPT, t) for t in texts], tok.pad_token_id or 0)
    targets, mask = shift_targets(b["labels"])
    return b, targets, mask


def test_ids_from_closures():
    ids, n = ids_from_closures(torch.tensor([False, True, True, False, True]))
    assert ids.tolist() == [0, 0, 1, 2, 2] and n == 3
    ids, n = ids_from_closures(torch.tensor([True, False]))
    assert ids.tolist() == [0, 1] and n == 2
    assert ids_from_closures(torch.zeros(0, dtype=torch.bool))[1] == 0
    assert last_of_example(torch.tensor([0, 0, 1, 2, 2])).tolist() == [False, True, True, False, True]


def test_boundary_masks_per_family(tokenizers):
    bpe, uni, wp = tokenizers["bpe"], tokenizers["unigram"], tokenizers["wordpiece"]
    m = boundary_masks(bpe)
    the = bpe.convert_tokens_to_ids("Ġand")
    nl = bpe.convert_tokens_to_ids("Ċ")
    eos = bpe.convert_tokens_to_ids("<|im_end|>")
    assert m.space[the] and m.boundary[the] and not m.special[the]
    assert m.boundary[nl] and not m.space[nl]
    assert m.special[eos] and m.boundary[eos] and not m.space[eos]
    a = bpe.convert_tokens_to_ids("a")
    assert not m.boundary[a]
    mu = boundary_masks(uni)
    assert mu.space[uni.convert_tokens_to_ids("\u2581and")] and not mu.space[uni.convert_tokens_to_ids("a")]
    mw = boundary_masks(wp)
    assert mw.space[wp.convert_tokens_to_ids("the")] and not mw.space[wp.convert_tokens_to_ids("##s")]


def test_identical_tokenizers_unconstrained_chunks_are_single_tokens(tokenizers):
    """The issue's check: with one tokenizer on both sides every ALM chunk is one token."""
    for tok in tokenizers.values():
        b, targets, mask = batch(tok)
        al = BatchAlignment.from_collated(b, b, mask, mask)
        assert al.identity and al.num_groups == int(mask.sum())
        logp = -torch.rand(int(mask.sum()), dtype=torch.float64)
        ex = torch.nonzero(mask)[:, 0]
        out = alm_loss(logp, logp, al, student_row_example=ex, teacher_row_example=ex, merge_by_space_prob=False,
                       append_space=False, distance="abs")
        assert out.num_chunks == int(mask.sum()) and torch.all(out.chunk_tokens == 1)
        torch.testing.assert_close(out.student_logp, logp)


def test_space_closures_by_hand():
    """Student ``Ġa b Ġc <eos>``, teacher ``Ġa b Ġc <eos>`` (one group each): close before ``Ġc`` (both start with
    a space), after nothing else but the example's end — ``<eos>`` joins the chunk ``Ġc``."""

    class Masks:
        def __init__(self, space, special):
            import numpy as np

            self.space = np.array(space)
            self.special = np.array(special)
            self.boundary = self.space | self.special

    # vocabulary: 0 "Ġa", 1 "b", 2 "Ġc", 3 "<eos>"
    m = Masks([True, False, True, False], [False, False, False, True])
    ids = torch.tensor([0, 1, 2, 3])
    al = BatchAlignment(torch.arange(4), torch.arange(4), torch.arange(4), torch.arange(4), 4, torch.zeros(4).long())
    assert space_closures(al, ids, ids, m, m).tolist() == [False, True, False, True]
    # a special token in the middle closes the chunk after it
    ids2 = torch.tensor([0, 3, 1, 2])
    assert space_closures(al, ids2, ids2, m, m).tolist() == [False, True, True, True]
    # the teacher does not start a word where the student does: no boundary
    t_ids = torch.tensor([0, 1, 1, 3])
    assert space_closures(al, ids, t_ids, m, m).tolist() == [False, False, False, True]


@pytest.mark.parametrize("pair", [("bpe", "unigram"), ("unigram", "wordpiece")])
def test_space_chunks_are_unions_of_groups_on_real_renderings(tokenizers, pair):
    t_tok, s_tok = tokenizers[pair[0]], tokenizers[pair[1]]
    sb, s_targets, s_mask = batch(s_tok)
    tb, t_targets, t_mask = batch(t_tok)
    al = BatchAlignment.from_collated(sb, tb, s_mask, t_mask)
    close = space_closures(al, s_targets[s_mask], t_targets[t_mask], boundary_masks(s_tok), boundary_masks(t_tok))
    ids, n = ids_from_closures(close)
    assert 1 < n < al.num_groups and bool(close[last_of_example(al.group_example)].all())
    # every closure inside an example: both next tokens start with a space, or a special token ends the chunk
    sm, tm = boundary_masks(s_tok), boundary_masks(t_tok)
    sy, ty = s_targets[s_mask], t_targets[t_mask]
    s_first, s_last = al.first_last("student")
    t_first, t_last = al.first_last("teacher")
    inner = close & ~last_of_example(al.group_example)
    assert bool(inner.any())
    for g in torch.nonzero(inner).squeeze(-1).tolist():
        both_space = sm.space[int(sy[s_first[g + 1]])] and tm.space[int(ty[t_first[g + 1]])]
        special = sm.special[int(sy[s_last[g]])] or tm.special[int(ty[t_last[g]])]
        assert both_space or special, g
