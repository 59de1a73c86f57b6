"""The top-level Python API: ``from crossdistill import DistillConfig, distill, load_config``.

Run: python -m pytest tests/train/test_api.py -q
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
