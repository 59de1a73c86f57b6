"""Vocabulary maps between tokenizer families. Run: python -m pytest tests/align/test_vocab_map.py -q"""

from __future__ import annotations

import numpy as np

from crossdistill.align.vocab_map import build_vocab_map, token_keys, tokenizer_family, tokenizer_hash


def test_families(tokenizers):
    assert tokenizer_family(tokenizers["bpe"]) == "bytelevel"
    assert tokenizer_family(tokenizers["unigram"]) == "metaspace"
    assert tokenizer_family(tokenizers["wordpiece"]) == "wordpiece"


def test_identity_for_same_tokenizer(tokenizers, tmp_path):
    for tok in tokenizers.values():
        m = build_vocab_map(tok, tok, cache_dir=tmp_path)
        assert np.array_equal(m.teacher_to_student, np.arange(len(tok)))


def test_cross_family_matches_by_bytes(tokenizers, tmp_path):
    bpe, uni, wp = tokenizers["bpe"], tokenizers["unigram"], tokenizers["wordpiece"]
    m = build_vocab_map(bpe, uni, cache_dir=tmp_path)
    kb, ku = token_keys(bpe), token_keys(uni)
    matched = m.matched_teacher
    assert len(matched) > 50
    for t in matched:
        assert kb[t] == ku[m.teacher_to_student[t]] or bpe.convert_ids_to_tokens(int(t)) == uni.convert_ids_to_tokens(
            int(m.teacher_to_student[t]))
    # byte-level "Ġthe" is " the", SentencePiece "▁the" is " the"
    g = bpe.convert_tokens_to_ids("Ġthe")
    if g is not None and "\u2581the" in uni.get_vocab():
        assert m.teacher_to_student[g] == uni.convert_tokens_to_ids("\u2581the")
    # injective: no student id used twice
    s = m.matched_student
    assert len(np.unique(s)) == len(s)
    # specials only match specials of the same text
    eos = bpe.convert_tokens_to_ids("<|im_end|>")
    assert m.teacher_to_student[eos] == uni.convert_tokens_to_ids("<|im_end|>")
    assert build_vocab_map(wp, bpe, cache_dir=tmp_path).num_matched > 10


def test_cache_keyed_by_hashes_and_atomic(tokenizers, tmp_path):
    a, b = tokenizers["bpe"], tokenizers["wordpiece"]
    m1 = build_vocab_map(a, b, cache_dir=tmp_path)
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and tokenizer_hash(a)[:24] in files[0].name and tokenizer_hash(b)[:24] in files[0].name
    assert not list(tmp_path.glob("*.tmp"))
    # a cached map is read back (tamper with it to prove the file is used)
    arr = np.load(files[0])
    arr[0] = -7
    np.save(files[0], arr)
    assert build_vocab_map(a, b, cache_dir=tmp_path).teacher_to_student[0] == -7
    assert np.array_equal(build_vocab_map(a, b, use_cache=False).teacher_to_student, m1.teacher_to_student)
    # a corrupt file is rebuilt
    files[0].write_bytes(b"garbage")
    assert np.array_equal(build_vocab_map(a, b, cache_dir=tmp_path).teacher_to_student, m1.teacher_to_student)


def test_prefers_emitted_pieces_over_byte_fallback(tokenizers, tmp_path):
    # The unigram fixture has both `<0x20>` (byte fallback, lower id) and `▁`; only `▁` is ever emitted for a space,
    # so the byte-level teacher's `Ġ` must map onto `▁`.
    bpe, uni = tokenizers["bpe"], tokenizers["unigram"]
    space, byte_space = uni.convert_tokens_to_ids("\u2581"), uni.convert_tokens_to_ids("<0x20>")
    assert space != uni.unk_token_id and byte_space != uni.unk_token_id and byte_space < space
    assert uni(" a b", add_special_tokens=False).input_ids.count(byte_space) == 0
    m = build_vocab_map(bpe, uni, use_cache=False)
    assert m.teacher_to_student[bpe.convert_tokens_to_ids("Ġ")] == space
