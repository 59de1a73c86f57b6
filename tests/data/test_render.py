"""Rendering and completion spans for the three tokenizer families.

Run: python -m pytest tests/data/test_render.py -q
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossdistill.data.render import FLAGS, collate_rendered, partition_spans, render, render_batch

KINDS = ("bpe", "unigram", "wordpiece")
MESSAGES = [{"role": "user", "content": "What is 12 plus 30?"}]
TRICKY = " Héllo 🚀👍🏽 日本語 e\u0301  x\t\n"
ALPHABET = list("ab cdeXYZ 0123.,!?\n\t") + ["  ", "é", "e\u0301", "日", "本", "語", "中", "🙂", "🚀", "👍🏽", "한",
                                             "\u0308", "ß", "Ω"]


def check_partition(r):
    n = len(r.spans)
    assert n == r.num_completion_tokens
    prev = 0
    for s, e in r.spans:
        assert s == prev and e >= s
        prev = e
    assert prev == r.covered


@pytest.mark.parametrize("kind", KINDS)
def test_labels_prompt_masked_and_eos_zero_width(tokenizers, kind):
    tok = tokenizers[kind]
    r = render(tok, MESSAGES, TRICKY)
    assert r.flags == frozenset()
    assert r.labels[: r.completion_start] == [-100] * r.completion_start
    assert r.labels[r.completion_start:] == r.input_ids[r.completion_start:]
    assert r.input_ids[-1] == tok.eos_token_id and r.spans[-1] == (len(TRICKY), len(TRICKY))
    assert r.covered == len(TRICKY)
    check_partition(r)
    # The prompt is the tokenizer's OWN template.
    assert r.prompt_text == tok.apply_chat_template(MESSAGES, add_generation_prompt=True, tokenize=False)


def test_bytelevel_split_character_goes_to_completing_token(tokenizers):
    tok = tokenizers["bpe"]
    r = render(tok, MESSAGES, "🚀")
    ids = r.input_ids[r.completion_start:-1]
    assert len(ids) >= 2  # the tiny BPE splits the 4-byte emoji over several tokens
    assert r.spans[:-1] == [(0, 0)] * (len(ids) - 1) + [(0, 1)]
    # Concatenated token bytes decode to the completion: the ids are the real tokenization.
    assert tok.decode(ids) == "🚀"


def test_wordpiece_gaps_belong_to_next_token_and_lowercase_offsets_point_to_original(tokenizers):
    tok = tokenizers["wordpiece"]
    text = "Hello  World"
    r = render(tok, "Q:", text)
    spans = r.spans[:-1]
    assert text[spans[0][0]:spans[0][1]].lower().startswith("h")
    # The whitespace run before "World" belongs to the first piece of "World".
    starts = [text[s:e] for s, e in spans]
    assert any(piece.startswith("  W") for piece in starts)


def test_unigram_no_dummy_prefix_on_completion(tokenizers):
    tok = tokenizers["unigram"]
    joint = render(tok, MESSAGES, "hi")
    alone = tok("hi", add_special_tokens=False)["input_ids"]
    comp = joint.input_ids[joint.completion_start:-1]
    assert tok.convert_ids_to_tokens(alone)[0] == "\u2581"  # tokenized alone it would get "▁"
    assert tok.convert_ids_to_tokens(comp)[0] != "\u2581"
    assert "boundary_merge" not in joint.flags


def test_no_duplicate_bos_when_template_has_it(tokenizers):
    tok = tokenizers["unigram"]  # TURN_TEMPLATE writes {{ bos_token }}
    r = render(tok, MESSAGES, "ok")
    assert r.input_ids[0] == tok.bos_token_id and r.input_ids[1] != tok.bos_token_id


def test_no_chat_template_falls_back_and_flags(tokenizer_paths):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_paths["bpe"])
    tok.chat_template = None
    r = render(tok, MESSAGES, "42")
    assert "no_chat_template" in r.flags and r.prompt_text == "What is 12 plus 30?\n"
    assert set(r.flags) <= set(FLAGS)


@pytest.mark.parametrize("kind", KINDS)
def test_truncation(tokenizers, kind):
    tok = tokenizers[kind]
    full = render(tok, MESSAGES, TRICKY)
    r = render(tok, MESSAGES, TRICKY, max_length=full.completion_start + 3)
    assert r.flags == {"truncated"} and len(r.input_ids) == full.completion_start + 3
    assert tok.eos_token_id not in r.input_ids[r.completion_start:]
    assert r.spans == full.spans[:3] and r.covered == full.spans[2][1]
    check_partition(r)
    p = render(tok, MESSAGES, TRICKY, max_length=2)
    assert "prompt_truncated" in p.flags and p.num_completion_tokens == 0 and len(p.input_ids) == 2


def test_empty_completion_and_plain_prompt(tokenizers):
    for tok in tokenizers.values():
        r = render(tok, "plain prompt", "")
        assert r.spans == [(0, 0)] and r.input_ids[-1] == tok.eos_token_id


def test_bad_input_errors(tokenizers):
    tok = tokenizers["bpe"]
    with pytest.raises(ValueError, match="role"):
        render(tok, [{"content": "x"}], "y")
    with pytest.raises(ValueError, match="max_length"):
        render(tok, "x", "y", max_length=0)
    with pytest.raises(ValueError, match="eos_token"):
        render(tok, "x", "y", eos_token="<not-a-token>")


def test_partition_spans_rule():
    # overlap (byte pieces), gap (dropped whitespace), trailing uncovered text
    assert partition_spans([(0, 1), (1, 2), (1, 2), (4, 5)], 7) == [(0, 1), (1, 1), (1, 2), (2, 7)]


def test_collate(tokenizers):
    tok = tokenizers["bpe"]
    items = render_batch(tok, [MESSAGES, "plain"], [TRICKY, "x"])
    batch = collate_rendered(items, pad_id=tok.pad_token_id)
    B, T = batch["input_ids"].shape
    assert B == 2 and T == max(len(r.input_ids) for r in items)
    assert batch["spans"].shape[1] == max(len(r.spans) for r in items)
    assert int(batch["num_completion"][1]) == len(items[1].spans)
    assert torch.equal(batch["labels"][1, len(items[1].labels):], torch.full((T - len(items[1].labels),), -100))


@pytest.mark.parametrize("kind", KINDS)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from(ALPHABET), max_size=30).map("".join))
def test_spans_partition_random_text(tokenizers, kind, text):
    r = render(tokenizers[kind], MESSAGES, text)
    check_partition(r)
    assert r.covered == len(text)
    if kind == "bpe" and text:
        assert tokenizers[kind].decode(r.input_ids[r.completion_start:-1]) == text


def test_lost_characters_finds_text_no_token_covers():
    from crossdistill.data.render import lost_characters

    text = "ab 日本\u200d x\u0301!"
    # every visible character covered (a gap over the space, ZWJ and combining mark is fine)
    assert lost_characters(text, [(0, 2), (3, 4), (4, 5), (7, 8), (9, 10)]) == []
    # "本" and "!" dropped; zero-width and negative offsets cover nothing
    assert lost_characters(text, [(0, 2), (3, 4), (4, 4), (7, 8)]) == ["本", "!"]
    assert lost_characters("xyz", []) == ["x", "y", "z"]
    # spans past the end are clipped, reversed ones cover nothing
    assert lost_characters("ab!", [(0, 9)]) == [] and lost_characters("ab", [(2, 1), (1, 2)]) == ["a"]


@pytest.mark.parametrize("family", ["bpe", "unigram", "wordpiece"])
def test_every_tiny_tokenizer_keeps_the_probe_text(tokenizer_paths, family):
    from transformers import AutoTokenizer

    from crossdistill.data.render import PROBE_TEXT, lost_characters

    tok = AutoTokenizer.from_pretrained(tokenizer_paths[family])
    enc = tok(PROBE_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    assert lost_characters(PROBE_TEXT, [tuple(o) for o in enc["offset_mapping"]]) == []
