"""X-Token's projection W: hand-built tokenizers with known re-tokenizations, the tiny families, the cache.

Run: python -m pytest tests/align/test_projection.py -q
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from crossdistill.align.projection import Projection, build_projection, compute_projection, piece_weights
from crossdistill.align.vocab_map import build_vocab_map


def bpe(merges: list[tuple[str, str]], eos: str = "<eos>") -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer: the 256 byte characters, then one token per merge, then ``eos``."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {c: i for i, c in enumerate(alphabet)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=list(merges)))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos)
    return fast


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))


def row(proj: Projection, student, teacher, token: str) -> dict[str, float]:
    s = student.convert_tokens_to_ids(token)
    return {teacher.convert_ids_to_tokens(int(t)): float(w) for t, w in zip(proj.indices[s], proj.weights[s]) if t >= 0}


def test_piece_weights_decay_by_ten():
    assert piece_weights(1) == [1.0]
    w2 = piece_weights(2)
    assert w2 == pytest.approx([0.9 / 0.99, 0.09 / 0.99])
    w3 = piece_weights(3)
    assert w3 == pytest.approx([0.9 / 0.999, 0.09 / 0.999, 0.009 / 0.999])
    assert sum(piece_weights(4)) == pytest.approx(1.0)


def test_multi_digit_student_token_projects_onto_the_teachers_digits():
    """The paper's case: the student has ``201`` as one token, the teacher splits digits."""
    student = bpe([("2", "0"), ("20", "1")])
    teacher = bpe([])
    proj = compute_projection(teacher, student, reverse=False)
    assert row(proj, student, teacher, "201") == pytest.approx({"2": 0.9 / 0.999, "0": 0.09 / 0.999,
                                                                "1": 0.009 / 0.999})
    assert row(proj, student, teacher, "20") == pytest.approx({"2": 0.9 / 0.99, "0": 0.09 / 0.99})
    assert row(proj, student, teacher, "2") == {"2": 1.0}  # exact match: one-hot
    assert proj.stats["exact"] == 257 and proj.stats["multi_token"] == 2
    assert proj.covered_teacher().all() and proj.mapped_student().all()
    dense = proj.to_dense()
    assert torch.allclose(dense.sum(1), torch.ones(len(student), dtype=torch.float64))


def test_reverse_pass_and_normalization_by_hand():
    """Student ``ab`` (teacher spells it ``a b``) also receives the teacher's ``abc`` (student spells it ``ab c``):
    row ``ab`` = {a: 0.909, b: 0.0909, abc: 0.909} / 1.909."""
    student = bpe([("a", "b")])
    teacher = bpe([("b", "c"), ("a", "bc")])  # teacher: "abc" via b+c, a+bc; no "ab"
    proj = compute_projection(teacher, student, reverse=True)
    w = [0.9 / 0.99, 0.09 / 0.99]
    total = w[0] + w[1] + w[0]
    assert row(proj, student, teacher, "ab") == pytest.approx({"a": w[0] / total, "abc": w[0] / total,
                                                               "b": w[1] / total})
    off = compute_projection(teacher, student, reverse=False)
    assert row(off, student, teacher, "ab") == pytest.approx({"a": w[0], "b": w[1]})
    # teacher "bc" is spelled "b" "c" by the student: exact student rows are never changed by the reverse pass
    assert row(proj, student, teacher, "b") == {"b": 1.0}
    assert proj.covered_teacher()[teacher.convert_tokens_to_ids("abc")]
    assert not proj.covered_teacher()[teacher.convert_tokens_to_ids("bc")]


def test_top_k_cut_renormalizes():
    student = bpe([("1", "2"), ("12", "3"), ("123", "4")])
    teacher = bpe([])
    proj = compute_projection(teacher, student, top_k=2, reverse=False)
    w = piece_weights(4)
    assert row(proj, student, teacher, "1234") == pytest.approx({"1": w[0] / (w[0] + w[1]), "2": w[1] / (w[0] + w[1])})
    short = compute_projection(teacher, student, max_pieces=2, reverse=False)
    assert row(short, student, teacher, "1234") == pytest.approx(dict(zip("12", piece_weights(2))))


def test_eos_maps_onto_eos():
    student, teacher = bpe([], eos="<|im_end|>"), bpe([], eos="</s>")
    proj = compute_projection(teacher, student)
    assert row(proj, student, teacher, "<|im_end|>") == {"</s>": 1.0}
    assert proj.stats["eos"] == 1
    same = compute_projection(bpe([], eos="</s>"), bpe([], eos="</s>"))
    assert same.stats["eos"] == 0


def test_relaxed_map_for_hkl():
    """``abcd`` (student) -> ``abc`` ``d`` (teacher): top weight 0.909 >= 0.6, so teacher ``abc`` matches it; teacher
    tokens an exact match owns keep it (``ab`` -> ``a`` 0.909 loses to ``a`` -> ``a`` 1.0)."""
    student = bpe([("c", "d"), ("a", "b"), ("ab", "cd")])  # "ab", "cd", "abcd"; no "abc"
    teacher = bpe([("b", "c"), ("a", "bc")])  # "bc", "abc"
    proj = compute_projection(teacher, student, reverse=False)
    m = proj.relaxed_map()
    exact = build_vocab_map(teacher, student).teacher_to_student
    t_abc = teacher.convert_tokens_to_ids("abc")
    assert exact[t_abc] < 0 and m[t_abc] == student.convert_tokens_to_ids("abcd")
    t_a = teacher.convert_tokens_to_ids("a")
    assert m[t_a] == student.convert_tokens_to_ids("a")
    assert len(np.unique(m[m >= 0])) == int((m >= 0).sum())  # injective
    assert (proj.relaxed_map(1.0) >= 0).sum() == (exact >= 0).sum()


@pytest.mark.parametrize("kind", ["bpe", "unigram", "wordpiece"])
def test_identical_tokenizers_give_the_identity(tokenizers, kind):
    tok = tokenizers[kind]
    proj = compute_projection(tok, tok)
    n = len(tok)
    assert np.array_equal(proj.indices[:, 0], np.arange(n)) and (proj.indices[:, 1:] < 0).all()
    assert np.all(proj.weights[:, 0] == 1.0) and proj.covered_teacher().all()
    assert np.array_equal(proj.relaxed_map(), np.arange(n))


@pytest.mark.parametrize("pair", [("bpe", "unigram"), ("unigram", "bpe"), ("bpe", "wordpiece"),
                                  ("wordpiece", "unigram")])
def test_cross_family_rows_are_distributions(tokenizers, pair):
    teacher, student = tokenizers[pair[0]], tokenizers[pair[1]]
    proj = compute_projection(teacher, student)
    w = proj.weights.astype(np.float64)
    sums = w.sum(1)
    mapped = proj.mapped_student()
    assert np.allclose(sums[mapped], 1.0, atol=1e-6) and np.all(sums[~mapped] == 0)
    assert np.all((proj.indices >= 0) == (proj.weights > 0))
    assert np.all(np.diff(w, axis=1) <= 1e-7)  # sorted by weight
    vm = build_vocab_map(teacher, student).teacher_to_student
    for t, s in enumerate(vm.tolist()):
        if s >= 0 and s != student.eos_token_id:  # the EOS row points at the teacher's EOS (rule 4)
            assert proj.indices[s, 0] == t and proj.weights[s, 0] == 1.0
    if student.eos_token != teacher.eos_token:
        assert proj.indices[student.eos_token_id, 0] == teacher.eos_token_id
    # a lowercasing WordPiece teacher cannot spell capitals; the tiny Unigram's byte pieces are special tokens
    assert mapped.mean() > (0.3 if pair[0] == "wordpiece" else 0.8)


def test_byte_pieces_reach_the_byte_level_side(tokenizers):
    """A metaspace student's CJK character is spelled by the byte-level teacher in byte pieces (first piece first)."""
    teacher, student = tokenizers["bpe"], tokenizers["unigram"]
    proj = compute_projection(teacher, student, reverse=False)
    sid = student.convert_tokens_to_ids("文")
    assert sid != student.unk_token_id
    pieces = teacher("文", add_special_tokens=False)["input_ids"]
    got = [int(t) for t in proj.indices[sid] if t >= 0]
    assert got == pieces[: len(got)] and len(pieces) > 1


def test_matrices_are_w_and_its_transpose(tokenizers):
    teacher, student = tokenizers["bpe"], tokenizers["unigram"]
    proj = compute_projection(teacher, student)
    w, wt = proj.matrices("cpu", torch.float64)
    dense = proj.to_dense()
    x = torch.randn(5, len(student), dtype=torch.float64)
    torch.testing.assert_close(torch.sparse.mm(wt, x.T).T, x @ dense)
    y = torch.randn(len(teacher), 3, dtype=torch.float64)
    torch.testing.assert_close(torch.sparse.mm(w, y), dense @ y)
    assert proj.matrices("cpu", torch.float64)[0] is w  # built once


def test_cache_round_trip(tokenizers, tmp_path):
    teacher, student = tokenizers["bpe"], tokenizers["unigram"]
    d = tmp_path / "proj"
    a = build_projection(teacher, student, cache_dir=d)
    files = list(d.glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith("v1-") and "-k4-p4-r1" in files[0].name
    b = build_projection(teacher, student, cache_dir=d)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.weights, b.weights) and b.stats == a.stats
    build_projection(teacher, student, top_k=2, cache_dir=d)
    assert len(list(d.glob("*.npz"))) == 2  # settings are part of the key
    files[0].write_bytes(b"not an npz")
    c = build_projection(teacher, student, cache_dir=d)
    assert np.array_equal(a.indices, c.indices)
    none = tmp_path / "none"
    build_projection(teacher, student, cache_dir=none, use_cache=False)
    assert not none.exists()


def test_dense_w_is_refused_for_real_sizes():
    big = Projection(np.zeros((50_000, 1), np.int64), np.ones((50_000, 1), np.float32), 150_000)
    with pytest.raises(ValueError, match="never build a dense W"):
        big.to_dense()
