"""Training with ``teacher: {cache: PATH}`` (recipes/tiny_cache.yaml): the cache is checked before training, the
teacher model never loads, the first-step loss equals the online teacher's restricted to the same top-k, and the
student saves in HF format. Bad combinations are refused at config validation.

Run: python -m pytest tests/train/test_cache_train.py -q
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from crossdistill import models
from crossdistill.config import ConfigError, load_cache_build_config, load_config
from crossdistill.losses.signal import TeacherSignal
from crossdistill.manifest import ManifestMismatchError
from crossdistill.teacher.writer import build_cache
from crossdistill.train import trainer as trainer_mod
from crossdistill.train.run import run_training
from crossdistill.train.tiny_assets import build

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "tiny_cache.yaml"
K = 8  # the recipe's cache_build.k


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny assets + the recipe's cache built by the `crossdistill cache` machinery from the recipe itself."""
    root = tmp_path_factory.mktemp("tiny-cache")
    paths = build(root / "tiny", n_examples=16)
    cache = root / "cache-top8"
    cache_cfg = load_cache_build_config(RECIPE, [f"teacher={paths['teacher']}", f"data={paths['data']}",
                                                 f"output={cache}", "examples_per_shard=5"])
    assert cache_cfg.k == K and cache_cfg.max_length == 64  # taken from the recipe's cache_build: and data: sections
    build_cache(cache_cfg, progress=False)
    # Another dataset (one completion changed) and its own, otherwise identical, cache.
    rows = paths["data"].read_text().splitlines()
    other_rows = [*rows[:-1], rows[-1].replace("The answer is", "The result is")]
    other_data = root / "other.jsonl"
    other_data.write_text("\n".join(other_rows) + "\n")
    other_cache = root / "cache-other"
    build_cache(load_cache_build_config(RECIPE, [f"teacher={paths['teacher']}", f"data={other_data}",
                                                 f"output={other_cache}"]), progress=False)
    return {**paths, "root": root, "cache": cache, "other_cache": other_cache}


def recipe_overrides(tiny, out: Path, *extra: str) -> list[str]:
    return [f"student.model={tiny['student']}", f"teacher.model={tiny['teacher']}", f"teacher.cache={tiny['cache']}",
            f"data.train={tiny['data']}", f"train.output_dir={out}", "train.max_steps=2",
            "train.per_device_batch_size=4", "train.logging_steps=1", "train.report_to=[]",
            "train.progress_bar=false", "train.eval_steps=null", "train.save_steps=null", *extra]


def step_log(out: Path, step: int = 1) -> dict:
    """The trainer's log of optimizer step ``step`` (logging_steps=1: that step's own, unrounded loss terms)."""
    history = json.load(open(out / "trainer_state.json"))["log_history"]
    return next(h for h in history if h.get("step") == step and "loss" in h)


def train_without_teacher_model(cfg, monkeypatch) -> dict:
    """``run_training(cfg)``, failing if anything loads the teacher model (a cache must replace it)."""
    real_load = models.load_model

    def no_teacher(mc, role, *args, **kwargs):
        assert role != "teacher", "training from a cache loaded the teacher model"
        return real_load(mc, role, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(models, "load_model", no_teacher)
        return run_training(cfg)


def online_top_k_context(k: int, policy: str):
    """``MethodRunner.context`` of the online teacher with its distribution cut to its top-k (exact tail)."""
    original = trainer_mod.MethodRunner.context

    def context(self, model, inputs, hidden=None):
        ctx = original(self, model, inputs, hidden)
        assert self.cached is None and ctx.teacher_hidden is not None  # the online path
        z = (ctx.teacher_hidden[ctx.mask] @ ctx.teacher_lm_head_weight.T).float() * ctx.teacher_logit_scale
        ctx.teacher_signal = TeacherSignal.top_k(z[:, : ctx.teacher_vocab_size], k, policy=policy)
        return ctx

    return context


@pytest.mark.parametrize("policy", ["renormalize", "tail_bucket"])
def test_train_from_cache_matches_online_top_k(tiny, tmp_path, monkeypatch, policy):
    common = ["loss.name=forward_kl", "loss.weights={kd: 0.7, ce: 0.3}", f"teacher.missing_mass={policy}"]
    # From the cache, with no teacher model at all in the config: nothing may load one.
    cache_out = tmp_path / "cache" / "out"
    cfg = load_config(RECIPE, recipe_overrides(tiny, cache_out, *common, "teacher.model="))
    assert cfg.teacher.model == "" and cfg.teacher.cache == str(tiny["cache"])
    record = train_without_teacher_model(cfg, monkeypatch)
    assert record["steps"] == 2 and record["teacher_loss"] is None  # teacher eval loss: skipped from a cache
    from_cache = step_log(cache_out)

    # The same run from the online teacher, restricted to the same top-k.
    online_out = tmp_path / "online" / "out"
    online_cfg = load_config(RECIPE, recipe_overrides(tiny, online_out, *common, "teacher.cache=null"))
    with monkeypatch.context() as m:
        m.setattr(trainer_mod.MethodRunner, "context", online_top_k_context(K, policy))
        run_training(online_cfg)
    online = step_log(online_out)

    for key in ("loss", "loss_kd", "loss_ce"):
        assert abs(from_cache[key] - online[key]) <= 1e-4, (key, from_cache, online)
    # loss_kd is small under tail_bucket (the tiny teacher leaves ~96% of its mass outside its top 8, and so does the
    # student): also hold it to 1% relatively (top-4 instead of top-8 moves it by ~40%).
    assert from_cache["loss_kd"] > 0
    assert abs(from_cache["loss_kd"] - online["loss_kd"]) <= 1e-2 * online["loss_kd"], (from_cache, online)
    # Same gradients -> the same second step too.
    assert abs(step_log(cache_out, 2)["loss"] - step_log(online_out, 2)["loss"]) <= 1e-4

    # (b) the student saves and reloads in HF format, and records where its teacher signal came from
    student = AutoModelForCausalLM.from_pretrained(cache_out)
    assert sum(p.numel() for p in student.parameters()) > 0
    assert json.load(open(cache_out / "manifest.json"))["teacher"] == str(tiny["cache"])
    assert not torch.equal(next(student.parameters()),
                           next(AutoModelForCausalLM.from_pretrained(tiny["student"]).parameters()))


def online_cross_tokenizer_top_k_context(k: int, policy: str):
    """The online cross-tokenizer context with the teacher's logits replaced by their top-k signal (exact tail and
    the exact log-prob of each actual teacher token — what a cache stores)."""
    original = trainer_mod.MethodRunner.context

    def context(self, model, inputs, hidden=None):
        ctx = original(self, model, inputs, hidden)
        assert self.cached is None and ctx.teacher_target_logits is not None  # the online cross-tokenizer path
        z = ctx.teacher_target_logits
        y = ctx.teacher_targets[ctx.teacher_mask]
        exact = z.log_softmax(-1).gather(-1, y[:, None]).squeeze(-1)
        ctx.teacher_signal = replace(TeacherSignal.top_k(z, k, policy=policy), target_logprobs=exact)
        ctx.teacher_target_logits = None
        return ctx

    return context


@pytest.mark.parametrize("loss, terms", [("uld", ("loss", "loss_uld", "loss_ce")),
                                         ("gold_hybrid", ("loss", "loss_gold", "loss_ce"))])
def test_cross_tokenizer_student_from_cache_matches_online_top_k(tiny, tmp_path, monkeypatch, loss, terms):
    """A Unigram student distilled from the byte-level-BPE teacher's cache: the cache's character spans align it, and
    the first two steps equal the online cross-tokenizer run restricted to the same top-k."""
    common = [f"student.model={tiny['student_unigram']}", f"loss.name={loss}", "loss.weights={}",
              f"loss.params={{top_k: {K}}}", "teacher.missing_mass=tail_bucket"]
    cache_out = tmp_path / "cache" / "out"
    # uld needs no teacher tokenizer at all; gold_hybrid's vocabulary map needs one (teacher.tokenizer, no model).
    teacher = ["teacher.model="] + ([f"teacher.tokenizer={tiny['teacher']}"] if loss == "gold_hybrid" else [])
    cfg = load_config(RECIPE, recipe_overrides(tiny, cache_out, *common, *teacher))
    record = train_without_teacher_model(cfg, monkeypatch)
    assert record["steps"] == 2
    from_cache = step_log(cache_out)

    online_out = tmp_path / "online" / "out"
    with monkeypatch.context() as m:
        m.setattr(trainer_mod.MethodRunner, "context", online_cross_tokenizer_top_k_context(K, "tail_bucket"))
        run_training(load_config(RECIPE, recipe_overrides(tiny, online_out, *common, "teacher.cache=null")))
    online = step_log(online_out)
    for key in terms:
        assert from_cache[key] > 0
        assert abs(from_cache[key] - online[key]) <= 1e-4 * max(1.0, abs(online[key])), (key, from_cache, online)
    assert abs(step_log(cache_out, 2)["loss"] - step_log(online_out, 2)["loss"]) <= 1e-4 * max(1.0, online["loss"])
    AutoModelForCausalLM.from_pretrained(cache_out)


def test_cache_of_another_dataset_is_refused_before_training(tiny, tmp_path):
    out = tmp_path / "out"
    cfg = load_config(RECIPE, recipe_overrides(tiny, out, f"teacher.cache={tiny['other_cache']}"))
    with pytest.raises(ManifestMismatchError, match="dataset_fingerprint"):
        run_training(cfg)
    assert not out.exists()  # refused before anything was written or loaded


def test_cache_of_another_teacher_tokenizer_is_refused(tiny, tmp_path):
    # The Unigram student's tokenizer named as the teacher: not the tokenizer the cache was made with.
    cfg = load_config(RECIPE, recipe_overrides(tiny, tmp_path / "out", f"teacher.model={tiny['student_unigram']}",
                                               f"student.model={tiny['student_unigram']}"))
    with pytest.raises(ManifestMismatchError, match=r"tokenizer_hashes\['teacher'\]"):
        run_training(cfg)
    # Cache only (no teacher.model): a student without the teacher's vocabulary is refused by vocabulary hash.
    cfg = load_config(RECIPE, recipe_overrides(tiny, tmp_path / "out", "teacher.model=",
                                               f"student.model={tiny['student_unigram']}"))
    with pytest.raises(ManifestMismatchError, match=r"teacher_vocab.*use a cross-tokenizer objective"):
        run_training(cfg)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, message", [
    (["onpolicy.lmbda=0.5", "onpolicy.max_new_tokens=8"], r"onpolicy.lmbda=0.5: on-policy steps need the teacher"),
    (["onpolicy.seq_kd=true", "onpolicy.max_new_tokens=8"], r"onpolicy.seq_kd=true: SeqKD samples completions"),
    (["loss.name=cdm", "loss.weights={}"], r"training from a cache supports the methods \[.adaptive_kl."),
    (["loss.name=uld", "loss.weights={}", "loss.params={variant: positional}"], r"positional ULD needs the teacher"),
    (["loss.name=gold_hybrid", "loss.weights={}", "teacher.model="], r"vocabulary map needs the teacher's tokenizer"),
    (["loss.name=dskd", "loss.weights={}"], r"loss.name='dskd': training from a cache supports"),
    (["loss.name=ce", "loss.weights={}"], r"uses no teacher"),
])
def test_unsupported_uses_are_refused_at_validation(tiny, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        load_config(RECIPE, recipe_overrides(tiny, tmp_path / "out", *extra))


def test_bad_cache_paths_are_refused(tiny, tmp_path):
    with pytest.raises(ConfigError, match=r"teacher.cache='.*nope' does not exist; give the output directory"):
        load_config(RECIPE, recipe_overrides(tiny, tmp_path / "out", f"teacher.cache={tmp_path / 'nope'}"))
    with pytest.raises(ConfigError, match=r"is not a usable teacher cache: .* has no manifest.json"):
        load_config(RECIPE, recipe_overrides(tiny, tmp_path / "out", f"teacher.cache={tmp_path}"))
    with pytest.raises(ConfigError, match=r"is not a usable teacher cache: .*holds a 'student'"):
        fake = tmp_path / "student-dir"
        fake.mkdir()
        (fake / "manifest.json").write_text(json.dumps({"kind": "student", "format_version": 1}))
        load_config(RECIPE, recipe_overrides(tiny, tmp_path / "out", f"teacher.cache={fake}"))
    with pytest.raises(ConfigError, match=r"teacher.model is empty; .* or set teacher.cache"):
        load_config(RECIPE, recipe_overrides(tiny, tmp_path / "out", "teacher.model=", "teacher.cache=null"))


def test_recipe_cache_build_section_is_ignored_by_training():
    cfg = load_config(RECIPE, validate_paths=False)
    written = yaml.safe_load(RECIPE.read_text())["cache_build"]["output"]  # relative to the recipe file
    assert cfg.teacher.cache == str((RECIPE.parent / written).resolve())
    assert cfg.cache_build.k == K  # parsed and checked, not run
    assert cfg.teacher.missing_mass == "tail_bucket" and cfg.mode == "soft"
