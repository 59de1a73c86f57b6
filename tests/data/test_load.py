"""Reading examples: jsonl, json, parquet, datasets directories; format detection and normalization."""

from __future__ import annotations

import json

import pytest

from crossdistill.data.load import DataError, load_examples, prompt_messages

ROWS = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "id": 1},
        {"prompt": "2+2=", "completion": "4"},
        {"text": "plain text"}]


def test_jsonl_mixed_formats(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in ROWS) + "\n")
    ex = load_examples(p)
    assert ex[0] == {"messages": ROWS[0]["messages"]}  # extra keys dropped
    assert prompt_messages(ex[0]) == ([{"role": "user", "content": "hi"}], "hello")
    assert prompt_messages(ex[1]) == ("2+2=", "4")
    assert prompt_messages(ex[2]) == (None, "plain text")


def test_parquet_and_datasets_dir_and_json_array(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    rows = [{"prompt": f"q{i}", "completion": f"a{i}"} for i in range(3)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    (tmp_path / "d.json").write_text(json.dumps(rows))
    for path in (tmp_path / "d.parquet", tmp_path / "ds", tmp_path / "d.json"):
        assert load_examples(path) == rows
    assert load_examples(tmp_path / "ds", limit=2) == rows[:2]


def test_forced_format_and_errors(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n")
    with pytest.raises(DataError, match="the last message must be the assistant's"):
        load_examples(p)
    p.write_text(json.dumps({"prompt": "x", "completion": 3}) + "\n")
    with pytest.raises(DataError, match="'completion' must be a string"):
        load_examples(p)
    p.write_text(json.dumps({"text": "x"}) + "\n")
    with pytest.raises(DataError, match="needs 'prompt' and 'completion'"):
        load_examples(p, fmt="prompt_completion")
    p.write_text("[1, 2]\n")
    with pytest.raises(DataError, match="example 0 is a list, not an object"):
        load_examples(p)
