"""DSKDv2 exact token alignment on hand-made cases. Run: python -m pytest tests/align/test_eta.py -q"""

from __future__ import annotations

import random

from crossdistill.align.eta import eta_align, eta_token_strings


def ref_two_pointer(T, S, t_eos=None, s_eos=None):
    """The ETA two-pointer walk written out plainly (strings already normalized)."""
    i = j = 0
    hist_t = hist_s = ""
    pairs = []
    while i < len(T) and j < len(S):
        if hist_t == hist_s and (T[i] == S[j] or (t_eos is not None and T[i] == t_eos and S[j] == s_eos)):
            hist_t += T[i]
            hist_s += S[j]
            pairs.append((i, j))
            i += 1
            j += 1
        elif len(hist_t) > len(hist_s):
            hist_s += S[j]
            j += 1
        elif len(hist_t) < len(hist_s):
            hist_t += T[i]
            i += 1
        else:
            hist_t += T[i]
            hist_s += S[j]
            i += 1
            j += 1
    return pairs


def test_identical_tokenizations_pair_everything():
    toks = ["Ġthe", "Ġcat", "Ġsat", "."]
    assert eta_align(toks, toks) == [(0, 0), (1, 1), (2, 2), (3, 3)]


def test_markers_are_stripped_across_families():
    teacher = ["Ġthe", "Ġcat", "Ġsat"]          # byte-level BPE
    student = ["▁the", "▁cat", "▁sat"]           # SentencePiece
    assert eta_align(teacher, student) == [(0, 0), (1, 1), (2, 2)]


def test_split_token_is_skipped_and_walk_resynchronizes():
    # "unbelievable" is one teacher token and three student tokens: nothing pairs inside, "Ġis" pairs after.
    teacher = ["Ġit", "Ġunbelievable", "Ġis"]
    student = ["▁it", "▁un", "bel", "ievable", "▁is"]
    assert eta_align(teacher, student) == [(0, 0), (2, 4)]


def test_same_offset_but_different_token_does_not_pair():
    # Both sides start a token at offset 0 but the strings differ ("ab" vs "a"): no pair until text re-syncs.
    teacher = ["ab", "c", "d"]
    student = ["a", "bc", "d"]
    assert eta_align(teacher, student) == [(2, 2)]


def test_same_string_at_different_offset_does_not_pair():
    # "b" appears on both sides but at different character offsets.
    teacher = ["a", "b", "cb"]
    student = ["ab", "c", "b"]
    assert eta_align(teacher, student, strip=False) == []


def test_eos_pairs_with_eos():
    teacher = ["Ġhi", "<|im_end|>"]
    student = ["▁hi", "</s>"]
    assert eta_align(teacher, student) == [(0, 0)]
    assert eta_align(teacher, student, teacher_eos="<|im_end|>", student_eos="</s>") == [(0, 0), (1, 1)]


def test_matches_reference_on_random_segmentations():
    rng = random.Random(0)
    for _ in range(300):
        text = "".join(rng.choice("abc") for _ in range(rng.randint(1, 20)))

        def segment(s):
            out, k = [], 0
            while k < len(s):
                step = rng.randint(1, 3)
                out.append(s[k:k + step])
                k += step
            return out

        t, s = segment(text), segment(text)
        if rng.random() < 0.3:                      # perturb: texts that do not coincide must not crash
            s = segment("".join(rng.choice("abc") for _ in range(rng.randint(1, 20))))
        assert eta_align(t, s, strip=False) == ref_two_pointer(t, s)


def test_token_strings_use_bytes_across_families(tokenizers):
    text = "café déjà vu"
    bpe, uni = tokenizers["bpe"], tokenizers["unigram"]
    t_ids = bpe(text, add_special_tokens=False)["input_ids"]
    s_ids = uni(text, add_special_tokens=False)["input_ids"]
    t = eta_token_strings(bpe, t_ids)
    s = eta_token_strings(uni, s_ids)
    assert "".join(t) == "".join(s) == "cafédéjàvu".encode().decode("latin-1")
    pairs = eta_align(t, s, strip=False)
    for i, j in pairs:
        assert t[i] == s[j]
