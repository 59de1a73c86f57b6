"""Kill-and-resume: a run interrupted after a checkpoint and resumed ends with the uninterrupted run's weights."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from crossdistill.config import load_config
from crossdistill.testing.faults import Crash, CrashAt
from crossdistill.train.run import last_complete_checkpoint, run_training


def weights(path):
    return load_file(str(path / "model.safetensors"))


def test_kill_and_resume_matches_uninterrupted(tmp_path, overrides):
    """λ = 0.5 mixes off-policy and on-policy steps (seed 0: steps 1, 3, 5 on-policy): data order, the λ decisions,
    the student's samples, optimizer and scheduler state must all continue exactly."""
    extra = ("loss.name=forward_kl", "onpolicy.lmbda=0.5", "onpolicy.max_new_tokens=4")
    teacher = "teacher_bpe"
    common = ["train.max_steps=5", "train.save_steps=2", "train.per_device_batch_size=3", *extra]
    full = load_config(None, overrides(tmp_path / "full" / "out", *common, teacher=teacher))
    run_training(full)

    cfg = load_config(None, overrides(tmp_path / "cut" / "out", *common, teacher=teacher))
    with pytest.raises(Crash):
        run_training(cfg, callbacks=[CrashAt(3)])  # checkpoint-2 exists, step 3 is lost
    assert last_complete_checkpoint(cfg.train.output_dir).endswith("checkpoint-2")
    assert not (tmp_path / "cut" / "runs.jsonl").exists()  # no record for a run that did not finish
    # an incomplete checkpoint (no trainer state) is never picked
    (tmp_path / "cut" / "out" / "checkpoint-9").mkdir()
    record = run_training(cfg, resume=True)

    a, b = weights(tmp_path / "full" / "out"), weights(tmp_path / "cut" / "out")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    runs = [json.loads(line) for line in open(tmp_path / "cut" / "runs.jsonl")]
    ref = [json.loads(line) for line in open(tmp_path / "full" / "runs.jsonl")]
    assert len(runs) == 1 and runs[0]["steps"] == 5
    assert runs[0]["student_tokens"] == ref[0]["student_tokens"] == record["student_tokens"]
    assert runs[0]["student_loss"] == pytest.approx(ref[0]["student_loss"], abs=1e-6)
