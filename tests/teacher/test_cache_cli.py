"""``crossdistill cache`` / ``cache-info`` and the cache recipe. Run: python -m pytest tests/teacher/test_cache_cli.py -q
"""

from __future__ import annotations

import json

import pytest

from crossdistill.cli import main
from crossdistill.teacher.config import CacheConfig, load_cache_config


def test_cache_info_reports_size_k_teacher_coverage_tail(topk_cache, capsys):
    cfg, manifest = topk_cache
    assert main(["cache-info", cfg.output, "--verify"]) == 0
    out = capsys.readouterr().out
    for word in ("bytes/token", "k=8", cfg.teacher, "coverage", "100.0%", "mean tail mass", "all 3 shards OK"):
        assert word in out
    assert main(["cache-info", cfg.output, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["tokens"] == sum(f["tokens"] for f in manifest.files) > 0
    assert 0 < stats["mean_tail_mass"] < 1 and stats["k"] == 8
    assert stats["bytes_per_token"] == pytest.approx(stats["bytes"] / stats["tokens"])


def test_cache_info_on_a_broken_cache_exits_1(tmp_path, capsys):
    assert main(["cache-info", str(tmp_path)]) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_cache_command_end_to_end(model_paths, cache_dataset, tmp_path, capsys):
    recipe = tmp_path / "train.yaml"
    recipe.write_text(f"teacher: {{model: {model_paths['teacher_bpe']}}}\n"
                      f"data: {{train: {cache_dataset}, max_length: 64}}\n"
                      f"cache: {{output: {tmp_path / 'c'}, k: 4, examples_per_shard: 5}}\n")
    assert main(["cache", str(recipe), "k=5", "--no-progress"]) == 0
    assert "cache complete" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["k"] == 5 and manifest["extra"]["max_length"] == 64 and len(manifest["files"]) == 2


def test_bad_settings_fail_before_any_work(capsys, tmp_path):
    assert main(["cache", "teacher=t", "data=d.jsonl", f"output={tmp_path}", "k=0"]) == 2
    assert "cache.k = 0 is invalid" in capsys.readouterr().err
    assert main(["cache", "teacher=t", "data=d.jsonl", f"output={tmp_path}", "kk=3"]) == 2
    assert "unknown cache setting(s) ['kk']" in capsys.readouterr().err
    assert main(["cache", "teacher=t"]) == 2
    assert "missing ['data', 'output']" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, message", [
    ("support", "dense", "use one of ('topk', 'sampled')"), ("temperature", 0.0, "positive number"),
    ("value_dtype", "int8", "use one of"), ("teacher_dtype", "fp8", "use one of"), ("batch_size", 0, "positive"),
    ("limit", 0, "positive integer or null"),
])
def test_config_errors_name_field_value_and_fix(field, value, message):
    with pytest.raises(ValueError, match=f"cache.{field} = {value!r} is invalid.*{message}".replace("(", r"\(")
                       .replace(")", r"\)")):
        CacheConfig(teacher="t", data="d", output="o", **{field: value})


def test_dedicated_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "cache.yaml"
    recipe.write_text("teacher: t\ndata: d.jsonl\noutput: out\nk: 16\n")
    cfg = load_cache_config(recipe, ["cache.k=64", "limit=null", "support=sampled"])
    assert (cfg.k, cfg.limit, cfg.support, cfg.teacher) == (64, None, "sampled", "t")


def test_cache_into_a_foreign_output_exits_1(topk_cache, capsys):
    cfg, _ = topk_cache
    assert main(["cache", f"teacher={cfg.teacher}", f"data={cfg.data}", f"output={cfg.output}", "k=3",
                 "examples_per_shard=3", "batch_size=2", "--no-progress"]) == 1
    assert "already holds a different cache (k: artifact has 8, expected 3" in capsys.readouterr().err
