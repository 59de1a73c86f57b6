"""Typed config: YAML + dotted overrides, type checks, validation messages, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from crossdistill.config import ConfigError, DistillConfig, apply_override, build, load_config


def base(**kw):
    return ["student.model=org/student", "data.train=org-data-is-checked-later"] if not kw else []


def load(*extra, validate_paths=False):
    return load_config(None, ["student.model=org/student", *extra], validate_paths=validate_paths)


def test_overrides_parse_yaml_values():
    cfg = load("loss.name=jsd", "loss.params={beta: 0.3}", "loss.weights={kd: 1, ce: 0.5}", "train.max_steps=7",
               "train.learning_rate=1e-3", "train.report_to=[]", "teacher.model=org/teacher", "teacher.dtype=bfloat16")
    assert cfg.loss.params == {"beta": 0.3} and cfg.loss.weights == {"kd": 1.0, "ce": 0.5}
    assert cfg.train.max_steps == 7 and cfg.train.learning_rate == 1e-3 and cfg.train.report_to == []
    assert cfg.teacher.dtype == "bfloat16" and cfg.teacher.lora.enabled is False


def test_recipe_then_overrides(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("student: {model: org/s}\nloss: {name: forward_kl, temperature: 2}\nteacher: {model: org/t}\n")
    cfg = load_config(recipe, ["loss.temperature=3"], validate_paths=False)
    assert cfg.loss.temperature == 3.0 and cfg.loss.name == "forward_kl" and cfg.mode == "soft"


def test_yaml_round_trip(tmp_path):
    cfg = load("teacher.model=org/t", "loss.name=jsd", "onpolicy.lmbda=0.5", "onpolicy.max_new_tokens=4")
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path, validate_paths=False).to_dict() == cfg.to_dict()
    assert cfg.mode == "on_policy"


def test_every_field_has_a_docstring():
    import ast
    import inspect

    import crossdistill.config.schema as mod

    tree = ast.parse(inspect.getsource(mod))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name.endswith("Config") and node.name != "ConfigError":
            body = node.body
            for i, stmt in enumerate(body):
                if isinstance(stmt, ast.AnnAssign):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), \
                        f"{node.name}.{stmt.target.id} has no docstring"


@pytest.mark.parametrize("extra, match", [
    (["train.progress_bar=yes please"], r"train.progress_bar='yes please' has the wrong type: expected true or false"),
    (["train.seed=1.5"], r"train.seed=1.5 has the wrong type: expected an integer"),
    (["student=3"], r"student=3 has the wrong type: expected a mapping of ModelConfig fields"),
    (["studnt.model=x"], r"unknown config key 'studnt'; did you mean 'student'"),
    (["loss.name"], r"override 'loss.name' must look like key=value"),
    (["train.grad_accum=0"], r"train.grad_accum=0 must be >= 1"),
    (["onpolicy.top_p=0"], r"onpolicy.top_p=0.0 must be in \(0, 1\]"),
    (["teacher.model=org/t", "teacher.lora.enabled=true", "loss.name=forward_kl"], r"the teacher is frozen"),
    (["onpolicy.lmbda=0.5", "onpolicy.max_new_tokens=4"], r"on-policy steps need a teacher objective"),
    (["onpolicy.seq_kd=true", "onpolicy.max_new_tokens=4"], r"onpolicy.seq_kd=true needs a teacher"),
    (["data.max_length=1"], r"data.max_length=1 must be >= 2"),
    (["cache.k=8"], r"config key 'cache' was renamed to 'cache_build' .*got cache=\{'k': 8\}: rename"),
    (["cache_build.output=o", "cache_build.teacher=t", "cache_build.data=d", "cache_build.k=0"],
     r"cache_build.k=0 must be >= 1"),
    (["cache_build.support=dense"], r"cache_build.support='dense' is not allowed: choose one of \['topk', 'sampled'\]"),
])
def test_validation_messages(extra, match):
    with pytest.raises(ConfigError, match=match):
        load(*extra)


def test_cache_build_section_resolves_from_the_recipe_and_round_trips(tmp_path):
    cfg = load("teacher.model=org/t", "data.train=d.jsonl", "data.max_length=64", "cache_build.output=c",
               "cache_build.k=8")
    assert cfg.cache_build.teacher == "" and cfg.cache_build.max_length is None  # as written in the recipe
    resolved = cfg.resolved_cache_build()
    # paths are absolute once loaded (relative ones against the current directory); a Hub id stays as written
    expected = ("org/t", str(Path("d.jsonl").resolve()), 64, 8)
    assert (resolved.teacher, resolved.data, resolved.max_length, resolved.k) == expected
    path = tmp_path / "resolved.yaml"
    path.write_text(cfg.to_yaml())
    assert load_config(path, validate_paths=False).to_dict() == cfg.to_dict()
    assert load().cache_build is None  # a recipe without the section builds no cache
    # Training does not run the section, so it may lack what only `crossdistill cache` needs (here: a teacher).
    assert load("cache_build.k=8").resolved_cache_build().teacher == ""


def test_non_mapping_recipe(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(p)


def test_apply_override_creates_sections():
    data = {}
    apply_override(data, "teacher.model=org/t")
    assert data == {"teacher": {"model": "org/t"}}
    cfg = build(DistillConfig, {**data, "student": {"model": "s"}})
    assert cfg.teacher.model == "org/t"
