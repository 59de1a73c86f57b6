"""A run knows what it is: ``--resume`` continues only the same config's checkpoint, a finished run is not
retrained, a non-empty output directory is never reused silently, and a kill during the final save leaves nothing
that looks complete."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from crossdistill.config import ConfigError, load_config
from crossdistill.evaluation import load_pretrained
from crossdistill.testing.faults import Crash, CrashAt
from crossdistill.train import identity
from crossdistill.train import run as run_mod
from crossdistill.train.run import run_training

COMMON = ["loss.name=forward_kl", "train.max_steps=3", "train.save_steps=1", "train.per_device_batch_size=3",
          "data.eval_fraction=0"]


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def test_fingerprint_ignores_where_and_how_often_but_not_what(overrides, tmp_path):
    a = load_config(None, overrides(tmp_path / "a", *COMMON))
    b = load_config(None, overrides(tmp_path / "b", *COMMON, "train.logging_steps=7", "train.save_steps=5",
                                    "train.report_to=[]", "loss.chunk_tokens=64"))
    c = load_config(None, overrides(tmp_path / "c", *COMMON, "train.learning_rate=1e-3"))
    assert identity.fingerprint(a) == identity.fingerprint(b)
    assert identity.differences(identity.fingerprint(a), identity.fingerprint(c)) == [
        "train.learning_rate: 0.005 -> 0.001"]


def test_resume_refuses_a_checkpoint_of_another_config(overrides, tmp_path):
    out = tmp_path / "run" / "out"
    with pytest.raises(Crash):
        run_training(load_config(None, overrides(out, *COMMON)), callbacks=[CrashAt(2)])
    other = load_config(None, overrides(out, *COMMON, "train.learning_rate=1e-3"))
    with pytest.raises(ConfigError, match=r"checkpoint-1 in train.output_dir=.* was made by a different config.*"
                                          r"train.learning_rate: 0.005 -> 0.001.*--overwrite"):
        run_training(other, resume=True)
    assert not (tmp_path / "run" / "runs.jsonl").exists()


def test_a_new_run_refuses_a_non_empty_output_dir_and_overwrite_replaces_it(overrides, tmp_path):
    out = tmp_path / "run" / "out"
    cfg = load_config(None, overrides(out, *COMMON))
    run_training(cfg)
    with pytest.raises(ConfigError, match=r"train.output_dir=.* is not empty .*pass --resume .* --overwrite"):
        run_training(cfg)
    with pytest.raises(ConfigError, match="contradict"):
        run_training(cfg, resume=True, overwrite=True)
    (out / "stale.txt").write_text("from before")
    record = run_training(cfg, overwrite=True)
    assert record["steps"] == 3 and not (out / "stale.txt").exists()
    assert len(records(tmp_path / "run" / "runs.jsonl")) == 2


def test_resume_on_a_finished_run_trains_nothing_and_adds_no_record(overrides, tmp_path):
    out = tmp_path / "run" / "out"
    cfg = load_config(None, overrides(out, *COMMON))
    first = run_training(cfg)
    before = load_file(str(out / "model.safetensors"))
    checkpoints = sorted(p.name for p in out.glob("checkpoint-*"))
    again = run_training(cfg, resume=True)
    assert again == json.loads(json.dumps(first, default=str)) and again["steps"] == 3
    assert len(records(tmp_path / "run" / "runs.jsonl")) == 1
    assert sorted(p.name for p in out.glob("checkpoint-*")) == checkpoints
    after = load_file(str(out / "model.safetensors"))
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed = load_config(None, overrides(out, *COMMON, "train.max_steps=4"))
    with pytest.raises(ConfigError, match=r"the finished run .* train.max_steps: 3 -> 4"):
        run_training(changed, resume=True)


def test_a_kill_during_the_final_save_leaves_no_complete_looking_student(overrides, tmp_path, monkeypatch):
    """Killed after the weights and tokenizer were written but before the manifest: nothing of the student is in
    the output directory yet, eval says the run is unfinished, and --resume ends with the uninterrupted weights."""
    full = load_config(None, overrides(tmp_path / "full" / "out", *COMMON))
    run_training(full)
    out = tmp_path / "cut" / "out"
    cfg = load_config(None, overrides(out, *COMMON))

    def killed(*args, **kwargs):
        raise Crash("simulated kill during the final save")

    with monkeypatch.context() as m:
        m.setattr(run_mod.identity, "write_fingerprint", killed)
        with pytest.raises(Crash):
            run_training(cfg)
    assert not (out / "manifest.json").exists() and not (out / "model.safetensors").exists()
    assert not (out / "tokenizer_config.json").exists()
    with pytest.raises(ConfigError, match="has not finished .*--resume"):
        load_pretrained(str(out))
    assert not (tmp_path / "cut" / "runs.jsonl").exists()
    run_training(cfg, resume=True)
    a, b = load_file(str(tmp_path / "full" / "out" / "model.safetensors")), load_file(str(out / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    assert not (out / run_mod.STUDENT_PARTIAL).exists()
    assert len(records(tmp_path / "cut" / "runs.jsonl")) == 1
