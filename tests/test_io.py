"""Atomic writes, directory publishing, the run-record append and the file hash. Run:
python -m pytest tests/test_io.py -q"""

from __future__ import annotations

import hashlib
import json
import os
import threading

import pytest

from crossdistill import io


def boom(*_):
    raise OSError("disk full")


def test_write_atomic_replaces_whole_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "f.bin"
    io.write_bytes(path, b"old")
    assert path.read_bytes() == b"old" and io.sha256_file(path) == hashlib.sha256(b"old").hexdigest()

    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        io.write_bytes(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in path.parent.iterdir()] == ["f.bin"]


def test_failure_while_streaming_keeps_old_file_and_no_temp(tmp_path):
    path = tmp_path / "records.jsonl"
    io.write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="mid-write"):
        with io.atomic_file(path, "w") as handle:
            handle.write("half of the new content")
            raise RuntimeError("mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]


def test_text_json_and_permissions(tmp_path):
    text = io.write_text(tmp_path / "a.txt", "héllo")
    assert text.read_bytes() == "héllo".encode()
    data = io.write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]}, sort_keys=True)
    assert data.read_text() == '{"a": [1, 2], "b": 1}\n' and json.loads(data.read_text()) == {"a": [1, 2], "b": 1}
    for p in (text, data):
        assert os.stat(p).st_mode & 0o777 == io.FILE_MODE  # not mkstemp's 0600


def test_atomic_path_for_writers_by_name(tmp_path):
    path = tmp_path / "plot.png"
    with io.atomic_path(path) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".plot.png.") and tmp.name.endswith(io.TEMP_SUFFIX)
        tmp.write_bytes(b"png")
        assert not path.exists()  # nothing visible before the block ends
    assert path.read_bytes() == b"png" and [p.name for p in tmp_path.iterdir()] == ["plot.png"]


def test_save_safetensors_round_trip_and_failure(tmp_path, monkeypatch):
    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = tmp_path / "p.safetensors"
    io.save_safetensors(path, {"w": torch.arange(6.0).reshape(2, 3)}, metadata={"dim": "3"})
    assert torch.equal(load_file(path)["w"], torch.arange(6.0).reshape(2, 3))
    with safe_open(str(path), framework="pt") as f:
        assert f.metadata() == {"dim": "3"}
    before = path.read_bytes()
    monkeypatch.setattr("os.replace", boom)
    with pytest.raises(OSError, match="disk full"):
        io.save_safetensors(path, {"w": torch.zeros(1)})
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["p.safetensors"]


def test_publish_dir_creates_and_replaces(tmp_path):
    target = tmp_path / "model"
    with io.publish_dir(target) as tmp:
        assert tmp.parent == tmp_path and not target.exists()
        (tmp / "weights").write_text("v1")
    assert (target / "weights").read_text() == "v1"
    assert os.stat(target).st_mode & 0o777 == io.DIR_MODE  # not mkdtemp's 0700
    with io.publish_dir(target) as tmp:
        (tmp / "weights").write_text("v2")
        assert (target / "weights").read_text() == "v1"  # the old copy stays readable while the new one is written
    assert [p.name for p in target.iterdir()] == ["weights"] and (target / "weights").read_text() == "v2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_publish_dir_keep_existing_and_failure(tmp_path):
    target = tmp_path / "tok"
    with io.publish_dir(target) as tmp:
        (tmp / "a").write_text("first")
    with io.publish_dir(target, if_exists="keep") as tmp:
        (tmp / "a").write_text("second")
    assert (target / "a").read_text() == "first"  # another process won: keep its copy
    with pytest.raises(RuntimeError, match="crash"):
        with io.publish_dir(target) as tmp:
            (tmp / "a").write_text("partial")
            raise RuntimeError("crash")
    assert (target / "a").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]


def test_publish_dir_restores_old_copy_when_the_swap_fails(tmp_path, monkeypatch):
    target = tmp_path / "out"
    with io.publish_dir(target) as tmp:
        (tmp / "a").write_text("old")
    real_replace, calls = os.replace, []

    def second_rename_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:  # 1: old copy moved aside, 2: new copy into place
            raise OSError("disk full")
        real_replace(src, dst)

    monkeypatch.setattr("os.replace", second_rename_fails)
    with pytest.raises(OSError, match="disk full"):
        with io.publish_dir(target) as tmp:
            (tmp / "a").write_text("new")
    assert (target / "a").read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["out"]


def test_append_line_whole_records_from_threads(tmp_path):
    path = tmp_path / "runs" / "runs.jsonl"

    def append(i: int) -> None:
        for j in range(20):
            io.append_line(path, json.dumps({"i": i, "j": j, "pad": "x" * 500}))

    threads = [threading.Thread(target=append, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 80 and {(r["i"], r["j"]) for r in records} == {(i, j) for i in range(4) for j in range(20)}
    io.append_line(path, "last\n")  # a trailing newline is not doubled
    assert path.read_text().endswith("}\nlast\n")


def test_sha256_file_equals_hashlib(tmp_path):
    for size in (0, 1, (1 << 20) + 7):
        blob = os.urandom(size)
        path = io.write_bytes(tmp_path / f"f{size}", blob)
        assert io.sha256_file(path) == hashlib.sha256(blob).hexdigest()
