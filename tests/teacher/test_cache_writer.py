"""Writing a cache: atomic shards, resume after a crash, per-rank writing — always the same bytes.

Run: python -m pytest tests/teacher/test_cache_writer.py -q
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from crossdistill.teacher.format import shard_name
from crossdistill.teacher.reader import CacheIncompleteError, CacheReader
from crossdistill.teacher.writer import (
    FAIL_ENV,
    PLAN_NAME,
    InjectedFailure,
    build_cache,
    done_name,
    load_cache_examples,
    merge,
    plan_manifest,
    prepare_output,
    write_shards,
)


def tree(path) -> dict[str, bytes]:
    """Every file of a directory (hidden ones included) -> bytes."""
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir())}


@pytest.mark.parametrize("fail_after", [0, 1, 2])
def test_crash_then_rerun_gives_identical_cache(topk_cache, tmp_path, monkeypatch, fail_after):
    ref_cfg, _ = topk_cache
    cfg = replace(ref_cfg, output=str(tmp_path / "cache"))
    monkeypatch.setenv(FAIL_ENV, str(fail_after))
    with pytest.raises(InjectedFailure):
        build_cache(cfg, progress=False)
    files = tree(cfg.output)
    assert "manifest.json" not in files and PLAN_NAME in files
    assert sum(name.endswith(".killed.tmp") for name in files) == 1  # the half-written shard never got its name
    assert sorted(n for n in files if n.endswith(".safetensors")) == [shard_name(i) for i in range(fail_after)]
    with pytest.raises(CacheIncompleteError, match="rerun `crossdistill cache`"):
        CacheReader(cfg.output)
    monkeypatch.delenv(FAIL_ENV)
    build_cache(cfg, progress=False)
    assert tree(cfg.output) == tree(ref_cfg.output)  # byte-identical, scaffolding removed


def test_damaged_finished_shard_is_redone_on_resume(topk_cache, tmp_path, monkeypatch):
    ref_cfg, _ = topk_cache
    cfg = replace(ref_cfg, output=str(tmp_path / "cache"))
    monkeypatch.setenv(FAIL_ENV, "2")
    with pytest.raises(InjectedFailure):
        build_cache(cfg, progress=False)
    shard = Path(cfg.output) / shard_name(1)
    shard.write_bytes(shard.read_bytes()[:100])  # e.g. a disk that lost the tail of a file after the rename
    monkeypatch.delenv(FAIL_ENV)
    build_cache(cfg, progress=False)
    assert tree(cfg.output) == tree(ref_cfg.output)


def test_ranks_write_disjoint_shards_and_merge_to_the_same_bytes(topk_cache, tmp_path):
    """What accelerate ranks / --workers processes do, run here one rank after the other."""
    ref_cfg, _ = topk_cache
    cfg = replace(ref_cfg, output=str(tmp_path / "cache"))
    examples = load_cache_examples(cfg)
    from crossdistill.teacher.forward import load_tokenizer

    plan = plan_manifest(cfg, load_tokenizer(cfg.teacher), examples)
    assert prepare_output(cfg, plan) is False
    assert write_shards(cfg, examples, rank=1, world=2, progress=False) == 1  # shard 1 of 0..2
    assert sorted(p.name for p in Path(cfg.output).glob("shard-*.safetensors")) == [shard_name(1)]
    assert write_shards(cfg, examples, rank=0, world=2, progress=False) == 2  # shards 0 and 2
    assert write_shards(cfg, examples, rank=0, world=2, progress=False) == 0  # nothing left: no model load
    merge(cfg, plan)
    assert tree(cfg.output) == tree(ref_cfg.output)


def test_complete_cache_is_left_alone(topk_cache):
    cfg, manifest = topk_cache
    before = {p.name: p.stat().st_mtime_ns for p in Path(cfg.output).iterdir()}
    assert build_cache(cfg, progress=False) == manifest
    assert {p.name: p.stat().st_mtime_ns for p in Path(cfg.output).iterdir()} == before


def test_output_with_another_config_is_refused(topk_cache, tmp_path, monkeypatch):
    ref_cfg, _ = topk_cache
    with pytest.raises(FileExistsError, match=r"already holds a different cache \(k: artifact has 8, expected 4"):
        build_cache(replace(ref_cfg, k=4), progress=False)
    cfg = replace(ref_cfg, output=str(tmp_path / "partial"))
    monkeypatch.setenv(FAIL_ENV, "1")
    with pytest.raises(InjectedFailure):
        build_cache(cfg, progress=False)
    monkeypatch.delenv(FAIL_ENV)
    with pytest.raises(FileExistsError, match="partial cache of a different config.*value_dtype"):
        build_cache(replace(cfg, value_dtype="bf16"), progress=False)


def test_files_are_written_atomically_with_readable_permissions(topk_cache):
    cfg, manifest = topk_cache
    for record in manifest.files:
        mode = os.stat(Path(cfg.output) / record["name"]).st_mode & 0o777
        assert mode == 0o644
    assert not list(Path(cfg.output).glob(".*")) and not list(Path(cfg.output).glob("*.done.json"))
    assert done_name(3) == "shard-00003.done.json"


def test_sigkilled_subprocess_then_rerun_gives_identical_cache(topk_cache, tmp_path):
    """A real kill: `crossdistill cache` in a subprocess SIGKILLed after its first shard, then rerun."""
    import signal
    import subprocess
    import sys

    ref_cfg, _ = topk_cache
    out = tmp_path / "cache"
    cmd = [sys.executable, "-m", "crossdistill", "cache", f"teacher={ref_cfg.teacher}", f"data={ref_cfg.data}",
           f"output={out}", f"k={ref_cfg.k}", f"examples_per_shard={ref_cfg.examples_per_shard}",
           f"batch_size={ref_cfg.batch_size}", "--no-progress"]
    proc = subprocess.run(cmd, env={**os.environ, FAIL_ENV: "1:kill"}, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert (out / shard_name(0)).exists() and not (out / "manifest.json").exists()
    build_cache(replace(ref_cfg, output=str(out)), progress=False)
    assert tree(out) == tree(ref_cfg.output)
