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
