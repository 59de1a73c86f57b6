"""The bad-input table, files and I/O: data files, teacher caches, generated datasets, model and tokenizer paths, the
Hub without a network, a full disk, and ``--help``. Every case asserts that the message names the field or file and
the fix, and that nothing was written (no output directory, no partial file); the cache and training cases also
check that a rerun after the fault resumes to the same bytes.

Settings that are refused at config validation are in tests/test_bad_input.py.
Run: python -m pytest tests/test_bad_input_io.py -q
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crossdistill.cli import COMMANDS
from crossdistill.cli import main as cli
from crossdistill.config import ConfigError, ModelConfig, cache_build_from_dict, load_config
from crossdistill.data.load import DataError, load_examples, split_eval

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------------- helpers
def snapshot(path: Path) -> dict[str, str]:
    """``{relative name: sha256}`` of every file under ``path`` (``{}`` when it does not exist)."""
    if not path.exists():
        return {}
    if path.is_file():
        return {path.name: hashlib.sha256(path.read_bytes()).hexdigest()}
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def no_leftovers(parent: Path) -> bool:
    """No temporary sibling (``.NAME.*.tmp``) of a refused or failed write is left in ``parent``."""
    return not [p for p in parent.glob(".*.tmp")] if parent.exists() else True


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def no_weights(monkeypatch):
    """Fail the test if any model's weights are loaded."""
    from crossdistill import models

    def refuse(*args, **kwargs):
        raise AssertionError("weights were loaded although the input was refused before")

    monkeypatch.setattr(models, "load_model", refuse)


USER = {"role": "user", "content": "What is 2 plus 2?"}
ASSISTANT = {"role": "assistant", "content": "4"}

# ------------------------------------------------------------------------------------------------ 1. data inputs
# (id, records (or raw text), index of the bad example, regex: the field, then the fix)
DATA_CASES = [
    ("only-assistant-turn", [{"messages": [ASSISTANT]}], 0,
     r"'messages' holds only the assistant's turn, so there is no prompt; add the user turn before it, or write the "
     r"example as \{\"text\": \.\.\.\}"),
    ("assistant-content-number", [{"messages": [USER, {"role": "assistant", "content": 4}]}], 0,
     r"messages\[1\]\.content is a number \(4\), not a string; give the message's text as a string"),
    ("assistant-content-object", [{"messages": [USER, {"role": "assistant", "content": {"text": "4"}}]}], 0,
     r"messages\[1\]\.content is an object .*not a string; give the message's text as a string"),
    ("user-content-list", [{"messages": [USER, ASSISTANT]}, {"messages": [{"role": "user", "content": ["a", "b"]},
                                                                          ASSISTANT]}], 1,
     r"messages\[0\]\.content is a list \(\['a', 'b'\]\), not a string; .*join the parts into one string"),
    ("user-content-null", [{"messages": [{"role": "user", "content": None}, ASSISTANT]}], 0,
     r"messages\[0\]\.content is null; give the message's text as a string \(\"\" for an empty turn\) or remove"),
    ("assistant-content-null", [{"messages": [USER, {"role": "assistant", "content": None}]}], 0,
     r"messages\[1\]\.content is null"),
    ("content-text-parts", [{"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}, ASSISTANT]}],
     0, r"messages\[0\]\.content is a list .*join the parts"),
    ("prompt-messages-null-content", [{"prompt": [{"role": "user", "content": None}], "completion": "4"}], 0,
     r"prompt\[0\]\.content is null"),
    ("prompt-number", [{"prompt": 7, "completion": "4"}], 0,
     r"'prompt' is a number \(7\); give the prompt as a string or as a list of chat messages"),
    ("completion-null", [{"prompt": "2+2=", "completion": None}], 0,
     r"'completion' must be a string, got null \(None\); give the answer text as a string"),
    ("completion-list", [{"prompt": "2+2=", "completion": ["4"]}], 0, r"'completion' must be a string, got a list"),
    ("text-number", [{"text": 5}], 0, r"needs a string 'text', got a number \(5\); give the text as a string"),
    ("message-without-role", [{"messages": [{"content": "hi"}, ASSISTANT]}], 0,
     r"messages\[0\] needs 'role' and 'content'.*write each message as"),
    ("role-not-a-string", [{"messages": [{"role": 1, "content": "hi"}, ASSISTANT]}], 0,
     r"messages\[0\]\.role is 1; give a role name such as \"user\""),
    ("messages-empty", [{"messages": []}], 0, r"'messages' must be a non-empty list of .*messages"),
    ("messages-not-a-list", [{"messages": "hi"}], 0, r"'messages' must be a non-empty list"),
    ("last-turn-not-assistant", [{"messages": [USER]}], 0,
     r"the last message must be the assistant's .*messages\[0\]\.role='user'; end the conversation with the "
     r"assistant turn"),
    ("unknown-keys", [{"question": "x", "answer": "y"}], 0,
     r"cannot tell the format from keys \['answer', 'question'\]; an example needs 'messages'"),
    ("not-an-object", [[1, 2]], 0, r"is a list, not an object; write one JSON object per line"),
]


@pytest.mark.parametrize("rows, index, message", [c[1:] for c in DATA_CASES], ids=[c[0] for c in DATA_CASES])
def test_bad_example_names_file_example_field_and_fix(tmp_path, rows, index, message):
    path = write_jsonl(tmp_path / "data.jsonl", rows)
    with pytest.raises(DataError) as info:
        load_examples(path)
    text = str(info.value)
    assert f"{path}: example {index}" in text, text
    assert re.search(message, text), text


FILE_CASES = [
    ("invalid-json-line", '{"text": "a"}\n{"text": \n', r"line 2 is not valid JSON .*; fix or remove it"),
    ("empty-file", "", r"has no examples; give a file with at least one example"),
    ("not-utf8", b"\xff\xfe\x00garbage", r"cannot read data file .*It must be jsonl \(UTF-8\)"),
]


@pytest.mark.parametrize("content, message", [c[1:] for c in FILE_CASES], ids=[c[0] for c in FILE_CASES])
def test_bad_data_file_names_file_and_fix(tmp_path, content, message):
    path = tmp_path / "data.jsonl"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(DataError, match=message) as info:
        load_examples(path)
    assert str(path) in str(info.value)


def test_missing_and_unsupported_data_files(tmp_path):
    with pytest.raises(DataError, match=r"does not exist; fix data.train / data.eval"):
        load_examples(tmp_path / "nope.jsonl")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"unsupported extension '.csv'; use .jsonl, .parquet"):
        load_examples(tmp_path / "d.csv")


@pytest.mark.parametrize("case", ["only-assistant-turn", "assistant-content-number", "user-content-list",
                                  "user-content-null"])
def test_bad_data_stops_train_before_weights_and_writes_nothing(tmp_path, overrides, no_weights, capsys, case):
    from crossdistill.train.cli import main as train

    rows, _, message = next(c[1:] for c in DATA_CASES if c[0] == case)
    good = [{"messages": [USER, ASSISTANT]}] * 4
    data = write_jsonl(tmp_path / "bad.jsonl", good + rows)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: {max_steps: 2}\n")
    out = tmp_path / "run"
    assert train([str(recipe), *overrides(out), f"data.train={data}"]) == 2
    err = capsys.readouterr().err
    assert "crossdistill train: error:" in err and str(data) in err and re.search(message, err), err
    assert not out.exists() and no_leftovers(tmp_path)


def test_eval_keeps_answers_and_holds_out_the_training_split(tmp_path):
    rows = [{"prompt": f"q{i}", "completion": f"a{i}", "answer": i, "other": 1} for i in range(10)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert load_examples(path)[0] == {"prompt": "q0", "completion": "a0"}  # what fingerprints are computed over
    kept = load_examples(path, keep=("answer",))
    assert kept[3] == {"prompt": "q3", "completion": "a3", "answer": 3}
    train, held = split_eval(kept, 0.2)
    assert [r["answer"] for r in held] == [8, 9] and len(train) == 8


# ------------------------------------------------------------------------------------------------- 2. the cache
CACHE_SETTINGS = {"k": 4, "examples_per_shard": 8, "batch_size": 4, "max_length": 64}


def cache_overrides(model_paths, chat_data, out: Path, **extra) -> list[str]:
    settings = {"teacher": str(model_paths["teacher_bpe"]), "data": str(chat_data), "output": str(out),
                **CACHE_SETTINGS, **extra}
    return [f"{k}={v}" for k, v in settings.items()]


@pytest.fixture(scope="module")
def reference_cache(model_paths, chat_data, tmp_path_factory):
    """A complete 3-shard cache of the tiny teacher over the 24 chat examples (copy it before changing it)."""
    from crossdistill.teacher.writer import build_cache

    out = tmp_path_factory.mktemp("cache-ref") / "cache"
    build_cache(cache_build_from_dict({"teacher": str(model_paths["teacher_bpe"]), "data": str(chat_data),
                                       "output": str(out), **CACHE_SETTINGS}), progress=False)
    assert len(list(out.glob("shard-*.safetensors"))) == 3
    return out


@pytest.fixture
def cache_copy(reference_cache, tmp_path):
    out = tmp_path / "cache"
    shutil.copytree(reference_cache, out)
    return out


def corrupt(shard: Path, where: str) -> None:
    """Damage a shard in place: its safetensors header length (``header``), one payload byte (``payload``, same
    size), or cut it short (``truncate``)."""
    raw = bytearray(shard.read_bytes())
    if where == "header":
        raw[:8] = b"\xff" * 8
    elif where == "payload":
        raw[-3] ^= 0xFF
    elif where == "truncate":
        raw = raw[: len(raw) // 2]
    shard.write_bytes(bytes(raw))


@pytest.mark.parametrize("where, why", [("header", r"sha256 differs"), ("payload", r"sha256 differs"),
                                        ("truncate", r"\d+ bytes, the manifest records \d+"), ("missing", "missing")])
def test_cache_info_verify_reports_a_damaged_shard_and_the_repair(cache_copy, capsys, where, why):
    shard = cache_copy / "shard-00001.safetensors"
    shard.unlink() if where == "missing" else corrupt(shard, where)
    before = snapshot(cache_copy)
    assert cli(["cache-info", str(cache_copy), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert re.search(f"{re.escape(str(shard))}: {why}", err) and "1 of 3 shards" in err, err
    assert "crossdistill cache RECIPE" in err and "rebuilds only the damaged ones" in err, err
    assert snapshot(cache_copy) == before  # verifying writes nothing


def test_cache_info_without_verify_on_a_corrupted_header_names_the_shard(cache_copy, capsys):
    corrupt(cache_copy / "shard-00002.safetensors", "header")
    assert cli(["cache-info", str(cache_copy)]) == 1
    err = capsys.readouterr().err
    assert "shard-00002.safetensors cannot be read" in err and "crossdistill cache RECIPE" in err, err


def test_cache_info_on_an_unreadable_manifest(cache_copy, capsys):
    (cache_copy / "manifest.json").write_text("{not json")
    assert cli(["cache-info", str(cache_copy), "--verify"]) == 1
    err = capsys.readouterr().err
    assert "manifest.json cannot be read" in err and "--overwrite" in err, err


@pytest.mark.parametrize("where", ["header", "payload", "truncate", "missing"])
def test_cache_rerun_verifies_and_rebuilds_only_the_damaged_shard(cache_copy, reference_cache, model_paths,
                                                                  chat_data, capsys, where):
    shard = cache_copy / "shard-00001.safetensors"
    shard.unlink() if where == "missing" else corrupt(shard, where)
    untouched = (cache_copy / "shard-00000.safetensors").stat().st_mtime_ns
    assert cli(["cache", *cache_overrides(model_paths, chat_data, cache_copy), "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert f"{shard} failed verification" in captured.err and "rebuilding it" in captured.err
    assert "cache complete" in captured.out and "3 shards verified" in captured.out
    assert snapshot(cache_copy) == snapshot(reference_cache)  # the rebuilt shard is byte-identical
    assert (cache_copy / "shard-00000.safetensors").stat().st_mtime_ns == untouched  # good shards are kept
    assert cli(["cache-info", str(cache_copy), "--verify"]) == 0


def test_cache_rerun_on_an_intact_cache_loads_no_weights(cache_copy, reference_cache, model_paths, chat_data,
                                                          no_weights, capsys):
    assert cli(["cache", *cache_overrides(model_paths, chat_data, cache_copy), "--no-progress"]) == 0
    assert "3 shards verified" in capsys.readouterr().out
    assert snapshot(cache_copy) == snapshot(reference_cache)


def test_cache_repair_killed_midway_resumes_to_the_same_bytes(cache_copy, reference_cache, model_paths, chat_data,
                                                              monkeypatch):
    from crossdistill.teacher.writer import FAIL_ENV, InjectedFailure, build_cache

    corrupt(cache_copy / "shard-00000.safetensors", "payload")
    corrupt(cache_copy / "shard-00002.safetensors", "payload")
    cfg = cache_build_from_dict({"teacher": str(model_paths["teacher_bpe"]), "data": str(chat_data),
                                 "output": str(cache_copy), **CACHE_SETTINGS})
    monkeypatch.setenv(FAIL_ENV, "1")  # dies while rebuilding the second damaged shard
    with pytest.raises(InjectedFailure):
        build_cache(cfg, progress=False)
    assert not (cache_copy / "manifest.json").exists()  # never "complete" while a shard is damaged
    assert cli(["cache-info", str(cache_copy)]) == 1
    monkeypatch.delenv(FAIL_ENV)
    build_cache(cfg, progress=False)
    assert snapshot(cache_copy) == snapshot(reference_cache)


def test_cache_refuses_a_different_cache_without_overwrite(cache_copy, model_paths, chat_data, capsys):
    before = snapshot(cache_copy)
    assert cli(["cache", *cache_overrides(model_paths, chat_data, cache_copy, k=3), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert f"cache_build.output={str(cache_copy)!r} already holds a different cache (k: artifact has 4, expected 3" \
           in err and "pass --overwrite to replace it" in err, err
    assert snapshot(cache_copy) == before
    assert cli(["cache", *cache_overrides(model_paths, chat_data, cache_copy, k=3), "--no-progress",
                "--overwrite"]) == 0
    assert json.loads((cache_copy / "manifest.json").read_text())["k"] == 3


@pytest.mark.parametrize("kind", ["foreign-files", "generated-dataset", "a-file"])
def test_cache_never_overwrites_another_artifact(tmp_path, model_paths, chat_data, capsys, kind):
    out = tmp_path / "out"
    if kind == "a-file":
        out.write_text("precious")
    else:
        out.mkdir()
        (out / ("notes.txt" if kind == "foreign-files" else "examples.jsonl")).write_text("precious")
        if kind == "generated-dataset":
            (out / "manifest.json").write_text(json.dumps({"kind": "dataset", "format_version": 1}))
    before = snapshot(out)
    assert cli(["cache", *cache_overrides(model_paths, chat_data, out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    expected = {"foreign-files": r"holds files that are not part of a cache \(notes.txt\)",
                "generated-dataset": r"holds a 'dataset' artifact \(its manifest.json says so\), not a teacher cache",
                "a-file": r"is a file; give a directory for the cache"}[kind]
    assert f"cache_build.output={str(out)!r}" in err and re.search(expected, err), err
    assert snapshot(out) == before
    if kind != "a-file":
        assert cli(["cache", *cache_overrides(model_paths, chat_data, out), "--no-progress", "--overwrite"]) == 0
        assert not (out / "notes.txt").exists() and (out / "manifest.json").is_file()


def test_disk_full_while_caching_names_the_path_and_free_space_then_resumes(tmp_path, reference_cache, model_paths,
                                                                          chat_data, monkeypatch, capsys):
    from crossdistill.teacher import writer

    out = tmp_path / "cache"
    real, calls = writer.write_bytes, []

    def full_after_one(path, data):
        calls.append(path)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real(path, data)

    monkeypatch.setattr(writer, "write_bytes", full_after_one)
    assert cli(["cache", *cache_overrides(model_paths, chat_data, out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "disk full: no space left on the device while writing" in err and "shard-00001.safetensors" in err, err
    assert re.search(r"\(\d+(\.\d)? [KMGT]?i?B free on /", err) and "rerun the same command" in err, err
    assert not (out / "manifest.json").exists() and no_leftovers(out)
    monkeypatch.setattr(writer, "write_bytes", real)
    assert cli(["cache", *cache_overrides(model_paths, chat_data, out), "--no-progress"]) == 0
    assert snapshot(out) == snapshot(reference_cache)


def cache_training(overrides, out: Path, cache: Path, *extra: str) -> list[str]:
    return [*overrides(out, f"teacher.cache={cache}", "loss.name=forward_kl", "loss.weights={kd: 1.0, ce: 0.0}",
                       "onpolicy.lmbda=0", "data.max_length=64", "train.eval_steps=null", "train.save_steps=1",
                       "train.max_steps=2"), *extra]


def test_corrupted_shard_met_mid_training_names_shard_and_repair_then_resumes(tmp_path, cache_copy, model_paths,
                                                                              chat_data, overrides, capsys):
    from crossdistill.train.cli import main as train

    for shard in cache_copy.glob("shard-*.safetensors"):  # same size: only the checksum, met when read, finds it
        corrupt(shard, "payload")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: {max_steps: 2}\n")
    out = tmp_path / "run"
    assert train([str(recipe), *cache_training(overrides, out, cache_copy)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "crossdistill train: error: shard" in err and "is corrupted" in err, err
    assert re.search(r"shard-0000\d\.safetensors", err) and "crossdistill cache RECIPE" in err, err
    assert "crossdistill train RECIPE --resume" in err, err
    assert not (out / "model.safetensors").exists()  # no student was published from a damaged teacher
    assert cli(["cache", *cache_overrides(model_paths, chat_data, cache_copy), "--no-progress"]) == 0
    capsys.readouterr()
    assert train([str(recipe), *cache_training(overrides, out, cache_copy), "--resume"]) == 0
    assert (out / "model.safetensors").is_file()


def test_disk_full_during_training_says_so_then_resume_finishes(tmp_path, overrides, monkeypatch, capsys):
    import transformers

    from crossdistill.train.cli import main as train

    recipe = tmp_path / "r.yaml"
    recipe.write_text("train: {max_steps: 2}\n")
    out = tmp_path / "run"
    args = [str(recipe), *overrides(out, "loss.name=forward_kl", "onpolicy.lmbda=0", "train.save_steps=1",
                                    "train.max_steps=2", "train.eval_steps=null")]
    real = transformers.Trainer._save_checkpoint

    def full(self, model, trial):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(out / "checkpoint-1" / "model.safetensors"))

    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", full)
    assert train(args) == 1
    err = capsys.readouterr().err
    assert f"disk full: no space left on the device while writing {out / 'checkpoint-1' / 'model.safetensors'}" \
           in err and " free on " in err and "--resume" in err, err
    monkeypatch.setattr(transformers.Trainer, "_save_checkpoint", real)
    assert train([*args, "--resume"]) == 0
    assert (out / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------------- 3. generate
@pytest.fixture
def gen_args(tmp_path, overrides):
    recipe = tmp_path / "gen.yaml"
    recipe.write_text("generate: {max_new_tokens: 3, temperature: 0.0}\n")

    def make(out: Path, *extra: str) -> list[str]:
        return [str(recipe), *overrides(tmp_path / "unused"), f"generate.output={out}", "data.max_examples=4", *extra]

    return make


def generate(args: list[str]) -> int:
    from crossdistill.generation import main

    return main(args)


def test_generate_refuses_to_replace_another_dataset_and_reruns_as_a_no_op(tmp_path, gen_args, capsys, monkeypatch):
    out = tmp_path / "gen"
    assert generate(gen_args(out)) == 0
    assert len((out / "examples.jsonl").read_text().splitlines()) == 4
    first = snapshot(out)
    capsys.readouterr()
    # the same config again: nothing to do, no weights load, nothing written
    from crossdistill import models

    monkeypatch.setattr(models, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded")))
    assert generate(gen_args(out)) == 0
    assert "already holds this config's dataset (4 examples); nothing to do" in capsys.readouterr().err
    assert snapshot(out) == first
    # another config (64 examples would become 2): refused, naming what differs and the fix
    assert generate(gen_args(out, "data.max_examples=2", "generate.max_new_tokens=2")) == 2
    err = capsys.readouterr().err
    assert f"generate.output={str(out)!r} already holds a different dataset" in err and "max_new_tokens" in err, err
    assert "dataset_fingerprint" in err and "pass --overwrite to replace it" in err, err
    assert snapshot(out) == first
    monkeypatch.undo()
    assert generate(gen_args(out, "data.max_examples=2", "generate.max_new_tokens=2", "--overwrite")) == 0
    assert len((out / "examples.jsonl").read_text().splitlines()) == 2 and no_leftovers(tmp_path)


@pytest.mark.parametrize("kind", ["foreign-files", "a-file", "damaged-manifest"])
def test_generate_never_overwrites_something_else(tmp_path, gen_args, no_weights, capsys, kind):
    out = tmp_path / "gen"
    if kind == "a-file":
        out.write_text("precious")
    else:
        out.mkdir()
        (out / ("notes.txt" if kind == "foreign-files" else "manifest.json")).write_text("precious")
    before = snapshot(out)
    assert generate(gen_args(out)) == 2
    err = capsys.readouterr().err
    expected = {"foreign-files": r"is not empty \(notes.txt\) and holds no generated dataset; choose another "
                                 r"generate.output, or pass --overwrite",
                "a-file": r"is a file; give a directory",
                "damaged-manifest": r"already holds a different dataset \(its manifest.json is unreadable"}[kind]
    assert f"generate.output={str(out)!r}" in err and re.search(expected, err), err
    assert snapshot(out) == before


GENERATE_RANGES = [
    ("generate.temperature=-1", r"generate.temperature=-1.0 must be a finite number >= 0 \(0 decodes greedily"),
    ("generate.top_p=0", r"generate.top_p=0.0 must be in \(0, 1\]"),
    ("generate.top_p=1.5", r"generate.top_p=1.5 must be in \(0, 1\]"),
    ("generate.max_new_tokens=0", r"generate.max_new_tokens=0 must be >= 1 \(tokens generated per prompt\)"),
    ("generate.batch_size=0", r"generate.batch_size=0 must be >= 1"),
]


@pytest.mark.parametrize("override, message", GENERATE_RANGES, ids=[c[0] for c in GENERATE_RANGES])
def test_generate_ranges_refused_before_anything_loads(tmp_path, gen_args, overrides, no_weights, capsys, override,
                                                       message):
    with pytest.raises(ConfigError, match=message):  # any recipe: training recipes carry the section too
        load_config(None, [*overrides(tmp_path / "run"), override])
    out = tmp_path / "gen"
    assert generate(gen_args(out, override)) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not out.exists() and not (tmp_path / "unused").exists()


def test_generate_needs_prompts_and_an_output(tmp_path, gen_args, no_weights, capsys):
    text = write_jsonl(tmp_path / "text.jsonl", [{"text": "plain"}])
    out = tmp_path / "gen"
    assert generate(gen_args(out, f"data.train={text}")) == 2
    assert re.search(r"data.train=.*text.jsonl' example 0 is plain text: generation needs prompts",
                     capsys.readouterr().err)
    assert generate(gen_args(out, "generate.output=")) == 2
    assert "generate.output is empty; give the directory" in capsys.readouterr().err
    assert not out.exists()


def test_disk_full_while_generating_names_path_and_free_space_and_leaves_nothing(tmp_path, gen_args, monkeypatch,
                                                                               capsys):
    from crossdistill.manifest import Manifest

    def full(self, directory):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(directory) / "manifest.json"))

    monkeypatch.setattr(Manifest, "write", full)
    out = tmp_path / "gen"
    assert generate(gen_args(out)) == 1
    err = capsys.readouterr().err
    assert "crossdistill generate: error: disk full: no space left on the device while writing" in err, err
    assert "manifest.json" in err and " free on " in err, err
    assert not out.exists() and no_leftovers(tmp_path)


def test_generate_interrupted_while_replacing_keeps_the_old_dataset(tmp_path, gen_args, monkeypatch):
    from crossdistill.manifest import Manifest

    out = tmp_path / "gen"
    assert generate(gen_args(out)) == 0
    before = snapshot(out)

    def interrupted(self, directory):
        raise KeyboardInterrupt

    monkeypatch.setattr(Manifest, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate(gen_args(out, "generate.max_new_tokens=2", "--overwrite"))
    assert snapshot(out) == before and no_leftovers(tmp_path)


# --------------------------------------------------------------------------------- 4. paths, the Hub, I/O faults
def test_describe_os_error_names_path_free_space_and_fix(tmp_path):
    from crossdistill.io import describe_os_error, os_error_in, os_error_message

    target = tmp_path / "out" / "model.safetensors"
    text = describe_os_error(OSError(errno.ENOSPC, "No space left on device"), target)
    assert text.startswith(f"disk full: no space left on the device while writing {target} (")
    assert re.search(r"\d+(\.\d)? [KMGT]?i?B free on /", text) and "free some space or write to another disk" in text
    assert "permission denied" in describe_os_error(PermissionError(errno.EACCES, "denied", str(target)))
    assert "read-only file system" in describe_os_error(OSError(errno.EROFS, "ro"), target)
    wrapped = RuntimeError("save failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device")
    assert os_error_in(wrapped).errno == errno.ENOSPC
    assert os_error_in(RuntimeError("safetensors: No space left on device (os error 28)")).errno == errno.ENOSPC
    torch_style = os_error_message(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"),
                                   target)
    assert "write failed" in torch_style and " free on " in torch_style
    assert os_error_message(ValueError("not an I/O error")) is None


REF_CASES = [
    ("/no/such/model", r"does not exist; fix the path"),
    ("./missing-dir", r"does not exist; fix the path"),
    ("~/no/such/dir", r"does not exist; fix the path"),
    ("a/b/c", r"does not exist; fix the path"),
    ("missing.gguf", r"does not exist; give the path of a .gguf file"),
    ("bad..id", r"is neither an existing path nor a Hub id"),
]


@pytest.mark.parametrize("ref, message", REF_CASES, ids=[c[0] for c in REF_CASES])
def test_a_model_path_that_does_not_exist_is_refused_at_once(ref, message):
    from crossdistill import models

    for load in (models.load_tokenizer, models.load_model):
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=f"student.model={re.escape(repr(ref))} {message}"):
            load(ModelConfig(model=ref), "student")
        assert time.perf_counter() - start < 0.5


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """An empty Hugging Face cache; ``hub(offline=..., reachable=...)`` sets the network situation."""
    from huggingface_hub import constants

    from crossdistill import models

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    models._reachable.cache_clear()

    def set_state(offline: bool, endpoint: str = "http://127.0.0.1:9"):  # port 9: nothing listens, refused at once
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
        monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        for var in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(var, raising=False)
        return Path(constants.HF_HUB_CACHE)

    yield set_state
    models._reachable.cache_clear()


@pytest.mark.parametrize("offline, why", [(True, "HF_HUB_OFFLINE is set"),
                                          (False, r"the Hub \(http://127.0.0.1:9\) is not reachable from here")])
def test_a_hub_id_without_network_fails_in_well_under_a_second(hub, offline, why):
    from crossdistill import models

    hub(offline)
    for load in (models.load_tokenizer, models.load_model):
        start = time.perf_counter()
        with pytest.raises(ConfigError, match=r"teacher.model='org/not-cached' is neither a local path .* nor in "
                                              rf"the local Hugging Face cache .*, and {why} .*`hf download "
                                              r"org/not-cached`"):
            load(ModelConfig(model="org/not-cached"), "teacher")
        assert time.perf_counter() - start < 0.5


def test_a_cached_hub_id_loads_from_the_cache_without_network(hub, model_paths):
    from crossdistill import models

    cache = hub(offline=False)  # and unreachable
    snapshot_dir = cache / "models--org--tiny" / "snapshots" / "0123abcd"
    shutil.copytree(model_paths["teacher_bpe"], snapshot_dir)
    (cache / "models--org--tiny" / "refs").mkdir()
    (cache / "models--org--tiny" / "refs" / "main").write_text("0123abcd")
    assert models.resolve_ref("org/tiny", None, "teacher.model") == str(snapshot_dir)
    start = time.perf_counter()
    tok = models.load_tokenizer(ModelConfig(model="org/tiny"), "teacher")
    assert len(tok) > 100 and time.perf_counter() - start < 5


def test_load_model_refuses_a_directory_that_is_not_a_saved_model(tmp_path, model_paths):
    from crossdistill import models

    only_tokenizer = tmp_path / "tok"
    shutil.copytree(model_paths["teacher_bpe"], only_tokenizer,
                    ignore=shutil.ignore_patterns("config.json", "model.safetensors"))
    with pytest.raises(ConfigError, match=r"student.model=.* has no config.json, so it is not a saved model; give the "
                                          "directory written by save_pretrained"):
        models.load_model(ModelConfig(model=str(only_tokenizer)), "student")


def tokenizer_variants(tmp_path: Path, model_paths, kind: str) -> Path:
    """A model directory whose tokenizer is missing or broken in one way."""
    src = model_paths["teacher_bpe"]
    d = tmp_path / kind
    d.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(src / name, d / name)
    if kind == "config-only":
        shutil.copy(src / "tokenizer_config.json", d / "tokenizer_config.json")
    elif kind == "empty-config":  # a save that was killed
        shutil.copy(src / "tokenizer.json", d / "tokenizer.json")
        (d / "tokenizer_config.json").write_text("")
    elif kind == "one-token":
        from tokenizers import Tokenizer, models, pre_tokenizers
        from transformers import PreTrainedTokenizerFast

        backend = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
        backend.pre_tokenizer = pre_tokenizers.Whitespace()
        PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(d)
    return d


TOKENIZER_CASES = [
    ("no-tokenizer", r"has no tokenizer files \(tokenizer.json, tokenizer_config.json \.\.\.\); set teacher.tokenizer"),
    ("config-only", r"has no vocabulary file \(tokenizer.json, .*\), only tokenizer_config.json: the tokenizer was not "
                    r"saved completely; set teacher.tokenizer"),
    ("empty-config", r"tokenizer_config.json is empty or not valid JSON \(a save that was interrupted\?\); save the "
                     r"tokenizer again"),
    ("one-token", r"loads as a tokenizer with 1 token\(s\) that encodes plain text as special tokens only .*no usable "
                  r"vocabulary; set teacher.tokenizer"),
]


@pytest.mark.parametrize("kind, message", TOKENIZER_CASES, ids=[c[0] for c in TOKENIZER_CASES])
def test_align_report_refuses_a_model_directory_without_a_usable_tokenizer(tmp_path, model_paths, capsys, kind,
                                                                           message):
    from crossdistill.alignment_report import main as align_report

    d = tokenizer_variants(tmp_path, model_paths, kind)
    with pytest.raises(SystemExit) as info:
        align_report([str(d), str(model_paths["student_bpe"]), "--no-coverage"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"teacher.model={str(d)!r}" in err and re.search(message, err), err


ALIGN_PATH_CASES = [
    (["/nonexistent/teacher", "STUDENT"], r"TEACHER '/nonexistent/teacher' does not exist; give a tokenizer or model "
                                          r"directory, a .gguf file, an alias \(smollm2, gemma3, minilm\) or a Hub id"),
    (["TEACHER", "./missing/student"], r"STUDENT './missing/student' does not exist"),
    (["TEACHER", "STUDENT", "--text", "/no/such/texts.txt"], r"--text '/no/such/texts.txt' does not exist; give a text "
                                                             r"file of completions"),
    (["TEACHER", "STUDENT", "--teacher-model", "/no/model"], r"--teacher-model '/no/model' does not exist"),
]


@pytest.mark.parametrize("argv, message", ALIGN_PATH_CASES, ids=["teacher", "student", "text", "teacher-model"])
def test_align_report_checks_paths_first(model_paths, capsys, argv, message):
    from crossdistill.alignment_report import main as align_report

    argv = [str(model_paths["teacher_bpe"]) if a == "TEACHER" else str(model_paths["student_bpe"]) if a == "STUDENT"
            else a for a in argv]
    start = time.perf_counter()
    with pytest.raises(SystemExit) as info:
        align_report(argv)
    assert info.value.code == 2 and time.perf_counter() - start < 0.5
    assert re.search(message, capsys.readouterr().err)


def test_align_report_hub_id_offline_fails_fast(hub, model_paths, capsys):
    from crossdistill.alignment_report import main as align_report

    hub(offline=True)
    start = time.perf_counter()
    with pytest.raises(SystemExit):
        align_report(["org/not-cached", str(model_paths["student_bpe"]), "--no-coverage"])
    assert time.perf_counter() - start < 1.0
    assert "nor in the local Hugging Face cache" in capsys.readouterr().err


@pytest.fixture
def eval_recipe(tmp_path, model_paths, chat_data):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"student: {{model: {model_paths['student_bpe']}}}\n"
                      f"teacher: {{model: {model_paths['teacher_bpe']}}}\n"
                      f"data: {{train: {chat_data}, eval_fraction: 0.125, max_length: 64}}\n"
                      f"train: {{output_dir: {tmp_path / 'not-trained'}}}\n")
    return recipe


def test_eval_recipe_with_eval_fraction_scores_the_held_out_split(eval_recipe, chat_data, capsys):
    from crossdistill.evaluation import main as evaluate

    assert evaluate([str(eval_recipe), "--no-generate", "--quiet"]) == 0
    captured = capsys.readouterr()
    held = split_eval(load_examples(chat_data), 0.125)[1]
    assert len(held) == 3
    assert f"held-out examples: 3 from data.train={chat_data} (its last 3 of 24, held out by " \
           "data.eval_fraction=0.125 as in training)" in captured.out, captured.out
    assert "holds no trained student yet; evaluating student.model=" in captured.err


def test_eval_recipe_without_any_eval_data(eval_recipe):
    from crossdistill.evaluation import main as evaluate

    with pytest.raises(SystemExit, match=r"the recipe has neither data.eval nor data.eval_fraction; pass --data"):
        evaluate([str(eval_recipe), "data.eval_fraction=0", "--quiet"])


EVAL_CASES = [
    (["--model", "/no/such/student", "--data", "DATA"], r"--model '/no/such/student' does not exist; give a model "
                                                        r"directory"),
    (["--model", "STUDENT", "--teacher", "./no/teacher", "--data", "DATA"], r"--teacher './no/teacher' does not exist"),
    (["--model", "STUDENT", "--data", "/no/such.jsonl"], r"--data '/no/such.jsonl' does not exist; give a jsonl"),
    (["--data", "DATA"], r"give a RECIPE or --model DIR"),
]


@pytest.mark.parametrize("argv, message", EVAL_CASES, ids=["model", "teacher", "data", "no-model"])
def test_eval_checks_paths_first(model_paths, chat_data, no_weights, argv, message):
    from crossdistill.evaluation import main as evaluate

    argv = [str(model_paths["student_bpe"]) if a == "STUDENT" else str(chat_data) if a == "DATA" else a
            for a in argv]
    with pytest.raises(SystemExit, match=message):
        evaluate(argv)


@pytest.mark.parametrize("case", ["user-content-list", "completion-null", "only-assistant-turn"])
def test_eval_on_malformed_data_names_file_example_and_field(tmp_path, model_paths, no_weights, capsys, case):
    from crossdistill.evaluation import main as evaluate

    rows, index, message = next(c[1:] for c in DATA_CASES if c[0] == case)
    data = write_jsonl(tmp_path / "held.jsonl", rows)
    assert evaluate(["--model", str(model_paths["student_bpe"]), "--data", str(data), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert f"crossdistill eval: error: {data}: example {index}" in err and re.search(message, err), err


def test_eval_hub_id_offline_fails_fast(hub, chat_data, capsys):
    from crossdistill.evaluation import main as evaluate

    hub(offline=True)
    start = time.perf_counter()
    assert evaluate(["--model", "org/not-cached", "--data", str(chat_data), "--quiet"]) == 2
    assert time.perf_counter() - start < 1.0
    assert "student.model='org/not-cached' is neither a local path" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------- 5. --help
def help_commands() -> list[list[str]]:
    from crossdistill.scaling.cli import build_parser

    subcommands = next(a for a in build_parser()._actions if a.__class__.__name__ == "_SubParsersAction").choices
    return [[]] + [[name] for name in COMMANDS] + [["scaling", sub] for sub in subcommands]


MARKUP = re.compile(r"``|:(func|class|mod|meth|data|attr|ref):`")


@pytest.mark.parametrize("command", help_commands(), ids=lambda c: " ".join(c) or "crossdistill")
def test_help_is_fast_and_plain_text(command):
    """From a warm start (one call first, so the OS caches the files), the fastest of 3 ``--help`` runs takes under
    a second even on a loaded machine: nothing heavy (torch, transformers, numpy, scipy) is imported before the
    arguments are parsed."""
    argv = [sys.executable, "-m", "crossdistill", *command, "--help"]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run(argv, capture_output=True, env=env, cwd=ROOT, check=True)
    times, text = [], ""
    for _ in range(3):
        start = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=ROOT)
        times.append(time.perf_counter() - start)
        assert done.returncode == 0, done.stderr
        text = done.stdout
    assert min(times) < 1.0, f"{' '.join(command)} --help took {min(times):.2f} s at best"
    assert "usage: crossdistill" in text
    assert not MARKUP.search(text), f"reStructuredText markup in the help text: {MARKUP.search(text).group(0)}"
