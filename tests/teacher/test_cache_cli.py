"""``crossdistill cache`` / ``cache-info`` and the ``cache_build:`` recipe section.
Run: python -m pytest tests/teacher/test_cache_cli.py -q"""

from __future__ import annotations

import json

import pytest

from crossdistill.cli import main
from crossdistill.config import (
    CacheBuildConfig,
    ConfigError,
    load_cache_build_config,
    load_config,
    validate_cache_build,
)


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
                      f"cache_build: {{output: {tmp_path / 'c'}, k: 4, examples_per_shard: 5}}\n")
    assert main(["cache", str(recipe), "k=5", "--no-progress"]) == 0
    assert "cache complete" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["k"] == 5 and manifest["extra"]["max_length"] == 64 and len(manifest["files"]) == 2


def test_bad_settings_fail_before_any_work(capsys, tmp_path):
    assert main(["cache", "teacher=t", "data=d.jsonl", f"output={tmp_path}", "k=0"]) == 2
    assert "cache_build.k=0 must be >= 1" in capsys.readouterr().err
    assert main(["cache", "teacher=t", "data=d.jsonl", f"output={tmp_path}", "kk=3"]) == 2
    assert "unknown config key 'cache_build.kk'; did you mean 'cache_build.k'?" in capsys.readouterr().err
    assert main(["cache", "teacher=t"]) == 2
    assert "cache_build is missing ['data', 'output']" in capsys.readouterr().err
    assert main(["cache", "teacher=t", "data=d.jsonl", f"output={tmp_path}", "cache.k=3"]) == 2
    assert "config key 'cache' was renamed to 'cache_build'" in capsys.readouterr().err


@pytest.mark.parametrize("field, value, message", [
    ("support", "dense", "choose one of ['topk', 'sampled']"), ("temperature", 0.0, "must be > 0"),
    ("value_dtype", "int8", "choose one of"), ("teacher_dtype", "fp8", "choose one of"), ("batch_size", 0, "positive"),
    ("limit", 0, "positive integer, or null"), ("k", 300, "k <= 255"),
])
def test_config_errors_name_field_value_and_fix(field, value, message):
    settings = ["teacher=t", "data=d", "output=o", f"{field}={value}"] + (["support=sampled"] if field == "k" else [])
    with pytest.raises(ConfigError, match=f"cache_build.{field}={value!r}.*{message}".replace("(", r"\(")
                       .replace(")", r"\)").replace("[", r"\[").replace("]", r"\]")):
        load_cache_build_config(None, settings)


def test_hand_built_settings_are_checked_too():
    validate_cache_build(CacheBuildConfig(teacher="t", data="d", output="o", max_length=64))
    with pytest.raises(ConfigError, match="cache_build.workers=0 must be >= 1"):
        validate_cache_build(CacheBuildConfig(teacher="t", data="d", output="o", max_length=64, workers=0))
    with pytest.raises(ConfigError, match="max_length=None was not filled in from data.max_length"):
        validate_cache_build(CacheBuildConfig(teacher="t", data="d", output="o"))


def test_dedicated_recipe_and_overrides(tmp_path):
    recipe = tmp_path / "cache.yaml"
    recipe.write_text("cache_build: {teacher: t, data: d.jsonl, output: out, k: 16}\n")
    cfg = load_cache_build_config(recipe, ["cache_build.k=64", "limit=null", "support=sampled"])
    assert (cfg.k, cfg.limit, cfg.support, cfg.teacher) == (64, None, "sampled", "t")
    assert cfg.max_length == 512  # data.max_length's default: the cache renders as a default training run would


def test_training_recipe_fills_teacher_data_and_max_length(tmp_path):
    recipe = tmp_path / "train.yaml"
    recipe.write_text("teacher: {model: t}\ndata: {train: d.jsonl, max_length: 64}\ncache_build: {output: out}\n")
    cfg = load_cache_build_config(recipe)
    # paths in a recipe are relative to the recipe file; "t" is a Hub-id-like model name and stays as written
    assert (cfg.teacher, cfg.data, cfg.max_length, cfg.output) == ("t", str(tmp_path / "d.jsonl"), 64,
                                                                   str(tmp_path / "out"))
    own = load_cache_build_config(recipe, ["teacher=other", "max_length=32", "data.max_length=128"])
    assert (own.teacher, own.max_length) == ("other", 32)  # the section's own values win


def test_old_cache_section_is_refused_with_the_new_name(tmp_path):
    recipe = tmp_path / "old.yaml"
    recipe.write_text("teacher: {model: t}\ndata: {train: d.jsonl}\ncache: {output: out, k: 8}\n")
    for load in (load_cache_build_config, lambda r: load_config(r, validate_paths=False)):
        with pytest.raises(ConfigError, match=r"config key 'cache' was renamed to 'cache_build' \(so it cannot be "
                           r"confused with teacher.cache.*got cache=\{'output': 'out', 'k': 8\}: rename the recipe's "
                           r"cache: section to cache_build:"):
            load(recipe)


def test_cache_into_a_foreign_output_exits_1(topk_cache, capsys):
    cfg, _ = topk_cache
    assert main(["cache", f"teacher={cfg.teacher}", f"data={cfg.data}", f"output={cfg.output}", "k=3",
                 "examples_per_shard=3", "batch_size=2", "--no-progress"]) == 1
    assert "already holds a different cache (k: artifact has 8, expected 3" in capsys.readouterr().err
