"""``train.bf16``: the step under bf16 autocast (fp32 parameters and optimizer) trains to the same place as fp32,
loosely, for a same-vocabulary and a cross-tokenizer objective. Run: python -m pytest tests/train/test_bf16.py -q"""

from __future__ import annotations

import json

import pytest

from crossdistill.config import load_config
from crossdistill.train.run import run_training


def _history(out):
    rows = json.load(open(out / "trainer_state.json"))["log_history"]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.parametrize("method,student", [("forward_kl", "student_bpe"), ("uld", "student_unigram")])
def test_bf16_autocast_trains_like_fp32(tmp_path, overrides, monkeypatch, method, student):
    monkeypatch.setenv("CROSSDISTILL_CACHE", str(tmp_path / "cache"))
    losses = {}
    for bf16 in (False, True):
        out = tmp_path / f"bf16-{bf16}"
        cfg = load_config(None, overrides(out, f"loss.name={method}", f"train.bf16={str(bf16).lower()}",
                                          "data.eval_fraction=0", "train.logging_steps=1", student=student))
        run_training(cfg, overwrite=True)
        losses[bf16] = _history(out)
    fp32, bf16 = losses[False], losses[True]
    assert len(fp32) == len(bf16) == 3
    assert all(abs(a - b) <= 0.05 * abs(a) + 1e-3 for a, b in zip(fp32, bf16)), (fp32, bf16)
    assert fp32 != bf16  # autocast really ran: bf16 rounding moves the numbers
