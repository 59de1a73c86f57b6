"""The public Python API (``crossdistill.api``, re-exported by ``import crossdistill``): the CLI's commands as
functions, and the method registry.

Run: python -m pytest tests/test_api.py -q
"""

from __future__ import annotations

import json

import pytest
from transformers import AutoModelForCausalLM

import crossdistill
from crossdistill import DistillConfig, distill, load_config


def test_distill_from_overrides_trains_and_records(tmp_path, overrides):
    out = tmp_path / "run" / "out"
    record = distill(None, overrides(out, "train.max_steps=1", teacher=None))
    assert record["steps"] == 1 and record["mode"] == "sft"
    AutoModelForCausalLM.from_pretrained(out)
    lines = (tmp_path / "run" / "runs.jsonl").read_text().splitlines()
    assert [json.loads(line)["output_dir"] for line in lines] == [str(out)]


def test_distill_refuses_overrides_with_a_config_object(tmp_path, overrides):
    cfg = load_config(None, overrides(tmp_path / "out", teacher=None))
    assert isinstance(cfg, DistillConfig)
    with pytest.raises(ValueError, match="overrides"):
        distill(cfg, ["train.max_steps=2"])


def test_unknown_attribute():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        crossdistill.nope  # noqa: B018


def test_the_api_functions_are_not_shadowed_by_command_modules():
    """Importing every command module must leave ``crossdistill.generate`` etc. the API functions."""
    import crossdistill.alignment_report  # noqa: F401
    import crossdistill.evaluation  # noqa: F401
    import crossdistill.generation  # noqa: F401

    for name in crossdistill.__all__:
        assert getattr(crossdistill, name) is not None
    assert all(callable(getattr(crossdistill, n)) for n in ("generate", "evaluate", "align_report", "build_cache",
                                                             "distill", "list_methods", "register", "get_method"))


def test_generate_build_cache_evaluate_and_align_report(tmp_path, overrides, model_paths, tokenizer_paths, chat_data):
    gen = crossdistill.generate(None, overrides(tmp_path / "unused", f"generate.output={tmp_path / 'gen'}",
                                                "generate.max_new_tokens=4", "data.max_examples=4"))
    assert (gen / "manifest.json").is_file()
    manifest = crossdistill.build_cache({"teacher": str(model_paths["teacher_bpe"]), "data": str(chat_data),
                                         "output": str(tmp_path / "cache"), "k": 4, "max_length": 64},
                                        progress=False)
    assert manifest.kind == "cache" and manifest.k == 4
    results = crossdistill.evaluate({"student": str(model_paths["student_bpe"])}, chat_data, generate=False,
                                    max_length=64)
    assert results["student"].bpb > 0
    report = crossdistill.align_report(str(tokenizer_paths["bpe"]), str(tokenizer_paths["unigram"]))
    assert report["teacher"]["name"] == str(tokenizer_paths["bpe"]) and 0 < report["frac_student_tokens_1to1"] <= 1
    assert "uld" in crossdistill.list_methods() and crossdistill.get_method("uld").cross_tokenizer
