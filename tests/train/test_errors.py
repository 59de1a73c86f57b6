"""Bad configs and inputs: each gets its own error naming the field, the value and the fix, before any weights load."""

from __future__ import annotations

import json
import shutil

import pytest

from crossdistill.config import ConfigError, load_config
from crossdistill.data.load import DataError
from crossdistill.train.cli import main as train_main
from crossdistill.train.run import prepare


def cfg_of(overrides, tmp_path, *extra, **kw):
    return load_config(None, overrides(tmp_path / "out", *extra, **kw))


@pytest.mark.parametrize("extra, match", [
    (["loss.temprature=2"], r"unknown config key 'loss.temprature'; did you mean 'loss.temperature'"),
    (["train.max_steps=ten"], r"train.max_steps='ten' has the wrong type: expected an integer"),
    (["onpolicy.lmbda=1.5", "loss.name=forward_kl", "onpolicy.max_new_tokens=8"],
     r"onpolicy.lmbda=1.5 is outside \[0, 1\]"),
    (["onpolicy.lmbda=-0.1", "loss.name=forward_kl", "onpolicy.max_new_tokens=8"],
     r"onpolicy.lmbda=-0.1 is outside \[0, 1\]"),
    (["onpolicy.lmbda=0.5", "loss.name=forward_kl"], r"needs a generation length: set onpolicy.max_new_tokens"),
    (["student.model=/no/such/model"], r"student.model='/no/such/model' does not exist"),
    (["teacher.model=./missing-teacher"], r"teacher.model='/.*/missing-teacher' does not exist"),  # made absolute
    (["loss.name=kl_forward"], r"loss.name='kl_forward' is not a registered method; choose one of"),
    (["loss.name=jsd", "loss.params={betta: 0.3}"], r"loss.params has unknown keys \['betta'\].*accepts \['beta'\]"),
    (["loss.weights={kd: 1, xyz: 2}", "loss.name=jsd"], r"loss.weights has unknown terms \['xyz'\]"),
    (["loss.temperature=0"], r"loss.temperature=0.0 must be > 0"),
    (["data.train=/no/data.jsonl"], r"data.train='/no/data.jsonl' does not exist"),
    (["data.format=csv"], r"data.format='csv' is not allowed: choose one of"),
])
def test_config_errors(tmp_path, overrides, extra, match):
    with pytest.raises(ConfigError, match=match):
        cfg_of(overrides, tmp_path, *extra)


def test_kd_loss_without_teacher(tmp_path, overrides):
    with pytest.raises(ConfigError, match=r"loss.name='forward_kl' needs a teacher, but the config has none"):
        cfg_of(overrides, tmp_path, "loss.name=forward_kl", teacher=None)


def test_incompatible_loss_and_tokenizers(tmp_path, overrides):
    cfg = cfg_of(overrides, tmp_path, "loss.name=forward_kl", student="student_unigram")
    with pytest.raises(ConfigError, match=r"loss.name='forward_kl' compares the two vocabularies id by id.*"
                                          r"use a cross-tokenizer objective"):
        prepare(cfg, progress=False)


def refused_then_fixed(overrides, tmp_path, args: list[str], match: str, fix: str):
    """``prepare`` refuses the config with ``match``; adding the fix the message names makes it pass."""
    with pytest.raises(ConfigError, match=match):
        prepare(cfg_of(overrides, tmp_path, *args), progress=False)
    return prepare(cfg_of(overrides, tmp_path, *args, fix), progress=False)


def test_missing_teacher_tokenizer(tmp_path, overrides, model_paths):
    bare = tmp_path / "teacher-no-tokenizer"
    bare.mkdir()
    for f in model_paths["teacher_bpe"].iterdir():
        if f.name in ("config.json", "model.safetensors", "generation_config.json"):
            shutil.copy(f, bare / f.name)
    fixed = refused_then_fixed(overrides, tmp_path, ["loss.name=forward_kl", f"teacher.model={bare}"],
                               r"teacher.model='.*teacher-no-tokenizer' has no tokenizer files.*set teacher.tokenizer",
                               f"teacher.tokenizer={model_paths['teacher_bpe']}")
    assert fixed.teacher_tok is not None


def test_tokenizer_that_drops_text_is_refused(tmp_path, overrides, model_paths, tokenizer_paths):
    """A Unigram vocabulary saved under a Qwen2 config: transformers 5 loads it as a byte-level Qwen2Tokenizer that
    silently drops every character it cannot byte-encode. Refused before any weights load, with the fix named."""
    qwen = tmp_path / "student-qwen2-unigram"
    shutil.copytree(model_paths["student_unigram"], qwen)
    config = json.loads((qwen / "config.json").read_text())
    config.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    (qwen / "config.json").write_text(json.dumps(config))
    fixed = refused_then_fixed(overrides, tmp_path, ["loss.name=uld", f"student.model={qwen}"],
                               r"student.model='.*student-qwen2-unigram' loads as Qwen2Tokenizer, which drops "
                               r"characters of plain text.*set student.tokenizer",
                               f"student.tokenizer={tokenizer_paths['unigram']}")
    assert type(fixed.student_tok).__name__ == "TokenizersBackend"


def _data(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_empty_dataset(tmp_path, overrides):
    path = tmp_path / "empty.jsonl"
    path.write_text("")
    with pytest.raises(DataError, match=r"has no examples; give a file with at least one example"):
        prepare(cfg_of(overrides, tmp_path, f"data.train={path}", teacher=None), progress=False)


def test_example_without_completion_tokens(tmp_path, overrides):
    path = _data(tmp_path, [{"prompt": "Hi", "completion": "Hello."}, {"prompt": "Q", "completion": ""}])
    with pytest.raises(DataError, match=r"example 1 has an empty completion: no completion tokens"):
        prepare(cfg_of(overrides, tmp_path, f"data.train={path}", "data.eval_fraction=0", teacher=None),
                progress=False)


def test_prompt_longer_than_max_length(tmp_path, overrides):
    path = _data(tmp_path, [{"prompt": "word " * 200, "completion": "ok"}])
    with pytest.raises(DataError, match=r"prompt alone is longer than data.max_length=16"):
        prepare(cfg_of(overrides, tmp_path, f"data.train={path}", "data.max_length=16", "data.eval_fraction=0",
                       teacher=None), progress=False)


def test_long_sequence_is_truncated_with_a_warning(tmp_path, overrides):
    path = _data(tmp_path, [{"prompt": "Q: ", "completion": "The answer is " * 40}, {"prompt": "Q", "completion": "A"}])
    cfg = cfg_of(overrides, tmp_path, f"data.train={path}", "data.max_length=24", "data.eval_fraction=0",
                 teacher=None)
    with pytest.warns(UserWarning, match=r"1 of 2 data.train examples are longer than data.max_length=24 tokens and "
                                         r"were truncated"):
        p = prepare(cfg, progress=False)
    assert len(p.train.items[0].student.input_ids) == 24 and "truncated" in p.train.items[0].student.flags


@pytest.mark.parametrize("name, content, match", [
    ("bad.jsonl", b'{"prompt": "a", "completion": "b"}\n{not json\n', r"line 2 is not valid JSON"),
    ("bad.jsonl", b"\xff\xfe\x00garbage", r"cannot read data file .*UnicodeDecodeError"),
    ("bad.parquet", b"this is not parquet", r"cannot read data file .*bad.parquet"),
    ("bad.csv", b"a,b\n", r"unsupported extension '.csv'"),
    ("keys.jsonl", b'{"question": "a", "answer": "b"}\n', r"cannot tell the format from keys \['answer', 'question'\]"),
])
def test_unreadable_data(tmp_path, overrides, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        prepare(cfg_of(overrides, tmp_path, f"data.train={path}", teacher=None), progress=False)


def test_cli_reports_errors_with_exit_code_2(tmp_path, overrides, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("loss:\n  name: forward_kl\n")
    assert train_main([str(recipe), *overrides(tmp_path / "out", teacher=None)]) == 2
    assert "needs a teacher" in capsys.readouterr().err
    assert train_main([str(tmp_path / "nope.yaml")]) == 2
    assert "recipe" in capsys.readouterr().err
