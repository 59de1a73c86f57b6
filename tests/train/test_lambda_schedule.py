"""λ schedules (``onpolicy.lmbda`` as a constant, a linear or cosine ramp, or the adaptive rule): their shapes, the
adaptive rule's response, reproducibility, validation, and the schedule in a real (tiny) run and its resume."""

from __future__ import annotations

import json
import math

import pytest

from crossdistill.config import ConfigError, LambdaSchedule, load_config
from crossdistill.train.onpolicy import LambdaController, adaptive_lmbda, ramp_lmbda, step_is_on_policy


def values(schedule, total):
    c = LambdaController(schedule)
    return [c.value(s, total) for s in range(total)]


def test_constant_is_the_float_and_the_schedule():
    assert values(0.3, 5) == [0.3] * 5
    assert values(LambdaSchedule(kind="constant", start=0.3), 5) == [0.3] * 5


def test_linear_ramp_shape():
    v = values(LambdaSchedule(kind="linear", start=0.0, end=1.0), 11)
    assert v == pytest.approx([i / 10 for i in range(11)])
    # a ramp over the middle half: flat before and after, linear in between
    v = values(LambdaSchedule(kind="linear", start=0.2, end=0.6, ramp_start=0.25, ramp_end=0.75), 101)
    assert v[:26] == pytest.approx([0.2] * 26)
    assert v[75:] == pytest.approx([0.6] * 26)
    assert v[50] == pytest.approx(0.4)
    diffs = [b - a for a, b in zip(v[25:75], v[26:76])]
    assert diffs == pytest.approx([diffs[0]] * len(diffs))  # constant slope
    # decreasing ramps work the same way
    assert values(LambdaSchedule(kind="linear", start=1.0, end=0.0), 3) == pytest.approx([1.0, 0.5, 0.0])


def test_cosine_ramp_shape():
    s = LambdaSchedule(kind="cosine", start=0.0, end=1.0)
    v = values(s, 101)
    assert v[0] == 0.0 and v[-1] == pytest.approx(1.0) and v[50] == pytest.approx(0.5)
    assert all(b >= a for a, b in zip(v, v[1:]))  # monotone
    assert v[10] < 0.1 < 0.9 < v[90]  # flat at both ends: below the linear ramp early, above it late
    for i in (5, 25, 80):
        assert v[i] == pytest.approx(0.5 * (1 - math.cos(math.pi * i / 100)))
    assert ramp_lmbda(s, 0, 1) == 0.0  # a one-step run is at its start


def test_adaptive_rule_response():
    s = LambdaSchedule(kind="adaptive", start=0.5, lower=0.1, upper=0.9, sensitivity=2.0)
    assert adaptive_lmbda(s, None, 1.0) == 0.5 and adaptive_lmbda(s, 1.0, None) == 0.5  # not measured yet
    assert adaptive_lmbda(s, 1.0, 1.0) == pytest.approx(0.1)  # no gap: the floor
    assert adaptive_lmbda(s, 0.8, 1.0) == pytest.approx(0.1)  # student samples easier than data: the floor
    gaps = [1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 10.0]
    lam = [adaptive_lmbda(s, g, 1.0) for g in gaps]
    assert all(b > a for a, b in zip(lam, lam[1:]))  # rises with the gap
    assert lam[-1] == pytest.approx(0.9, abs=1e-6)  # saturates at the ceiling
    assert lam[3] == pytest.approx(0.1 + 0.8 * (1 - math.exp(-1.0)))
    assert adaptive_lmbda(s, 2.0, 1.0) == adaptive_lmbda(s, 4.0, 2.0)  # a ratio: the losses' scale does not matter


def test_adaptive_controller_follows_the_measured_gap_and_round_trips(tmp_path):
    s = LambdaSchedule(kind="adaptive", start=0.5, lower=0.05, upper=1.0, ema=0.5)
    c = LambdaController(s)
    assert c.adaptive and c.value(0, 10) == 0.5
    c.observe(False, 1.0)
    assert c.value(1, 10) == 0.5  # only one kind measured
    c.observe(True, 2.0)  # student samples twice as hard for the teacher: λ goes up
    high = c.value(2, 10)
    assert high > 0.5
    for _ in range(6):  # the gap closes: λ falls back towards the floor
        c.observe(True, 1.0)
    assert c.value(3, 10) < 0.1
    c.observe(True, float("nan"))  # a non-finite loss is ignored, not folded in
    assert math.isfinite(c.ema["on_policy"])
    c.save(tmp_path)
    d = LambdaController(s)
    d.load(tmp_path)
    assert d.state_dict() == c.state_dict() and d.value(3, 10) == c.value(3, 10)


def test_decisions_reproducible_from_the_seed():
    s = LambdaSchedule(kind="cosine", start=0.1, end=0.9)
    c = LambdaController(s)
    first = [step_is_on_policy(3, t, c.value(t, 400)) for t in range(400)]
    again = [step_is_on_policy(3, t, LambdaController(s).value(t, 400)) for t in range(400)]
    assert first == again
    assert first != [step_is_on_policy(4, t, c.value(t, 400)) for t in range(400)]
    assert sum(first[:100]) < sum(first[-100:])  # the realised fraction follows the ramp
    assert 0.3 < sum(first) / 400 < 0.7


BAD = [
    ({"kind": "linear", "start": 0.0}, r"onpolicy.lmbda.kind='linear' needs onpolicy.lmbda.end"),
    ({"kind": "linear", "end": 1.5}, r"onpolicy.lmbda.end=1.5 is outside \[0, 1\]"),
    ({"kind": "cosine", "end": 1.0, "ramp_start": 0.6, "ramp_end": 0.4}, r"0 <= ramp_start < ramp_end <= 1"),
    ({"kind": "constant", "start": 0.2, "end": 0.8}, r"only linear and cosine ramps use end"),
    ({"kind": "adaptive", "start": 0.5, "lower": 0.0}, r"needs 0 < lower <= upper"),
    ({"kind": "adaptive"}, r"onpolicy.lmbda.start=0.0 is outside \[lower, upper\]"),
    ({"kind": "adaptive", "start": 0.5, "ema": 1.0}, r"onpolicy.lmbda.ema=1.0 must be in \[0, 1\)"),
    ({"kind": "adaptive", "start": 0.5, "sensitivity": 0}, r"sensitivity=0.0 must be > 0"),
    ({"kind": "ramp"}, r"onpolicy.lmbda.kind='ramp' is not allowed"),
    ({"kind": "linear", "ned": 1.0}, r"unknown config key 'onpolicy.lmbda.ned'; did you mean 'onpolicy.lmbda.end'"),
]


@pytest.mark.parametrize(("schedule", "match"), BAD)
def test_validation_names_field_value_and_fix(schedule, match):
    flow = json.dumps(schedule)
    with pytest.raises(ConfigError, match=match):
        load_config(None, ["student.model=org/s", "teacher.model=org/t", "loss.name=forward_kl", "data.train=x",
                           "onpolicy.max_new_tokens=4", f"onpolicy.lmbda={flow}"], validate_paths=False)


def test_a_schedule_needs_what_a_constant_needs():
    base = ["student.model=org/s", "data.train=x", "onpolicy.lmbda={kind: linear, start: 0, end: 0.5}"]
    with pytest.raises(ConfigError, match=r"needs a generation length"):
        load_config(None, [*base, "teacher.model=org/t", "loss.name=forward_kl"], validate_paths=False)
    with pytest.raises(ConfigError, match=r"on-policy steps need a teacher objective"):
        load_config(None, [*base, "onpolicy.max_new_tokens=4"], validate_paths=False)
    cfg = load_config(None, [*base, "teacher.model=org/t", "loss.name=forward_kl", "onpolicy.max_new_tokens=4"],
                      validate_paths=False)
    assert isinstance(cfg.onpolicy.lmbda, LambdaSchedule) and cfg.mode == "on_policy"
    cfg = load_config(None, [*base[:2], "teacher.model=org/t", "loss.name=forward_kl", "onpolicy.max_new_tokens=4",
                             "onpolicy.lmbda=0.25"], validate_paths=False)
    assert cfg.onpolicy.lmbda == 0.25 and isinstance(cfg.onpolicy.lmbda, float)


def step_logs(out_dir):
    history = json.load(open(out_dir / "trainer_state.json"))["log_history"]
    return [h for h in history if "on_policy_fraction" in h]


def test_linear_schedule_in_a_run_logs_lambda_and_the_realised_fraction(tmp_path, overrides):
    cfg = load_config(None, overrides(tmp_path / "run" / "out", "loss.name=forward_kl", "onpolicy.max_new_tokens=4",
                                      "onpolicy.lmbda={kind: linear, start: 0, end: 1}", "train.max_steps=5",
                                      "train.per_device_batch_size=2", "data.eval_fraction=0"))
    from crossdistill.train.run import run_training

    run_training(cfg)
    logs = step_logs(tmp_path / "run" / "out")
    assert [h["lmbda"] for h in logs] == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    on = [h["on_policy_fraction"] for h in logs]
    assert on[0] == 0.0 and on[-1] == 1.0  # λ = 0 and λ = 1 are certain
    assert on == [float(step_is_on_policy(0, t, t / 4)) for t in range(5)]  # the seeded coin at the scheduled λ
    manifest = json.load(open(tmp_path / "run" / "out" / "manifest.json"))
    assert manifest["extra"]["lmbda"]["kind"] == "linear"  # the schedule is recorded with the student


def test_adaptive_schedule_resumes_exactly(tmp_path, overrides):
    """Kill after a checkpoint and resume: the adaptive rule's moving averages come back from the checkpoint, so
    λ, the decisions and the weights equal the uninterrupted run's."""
    from safetensors.torch import load_file

    from crossdistill.testing.faults import Crash, CrashAt
    from crossdistill.train.run import run_training

    common = ["loss.name=forward_kl", "onpolicy.max_new_tokens=4", "train.max_steps=6", "train.save_steps=2",
              "train.per_device_batch_size=2", "data.eval_fraction=0",
              "onpolicy.lmbda={kind: adaptive, start: 0.5, lower: 0.1, upper: 0.9, ema: 0.5, sensitivity: 8}"]
    run_training(load_config(None, overrides(tmp_path / "full" / "out", *common)))
    cfg = load_config(None, overrides(tmp_path / "cut" / "out", *common))
    with pytest.raises(Crash):
        run_training(cfg, callbacks=[CrashAt(5)])  # checkpoint-4 holds the rule's state after step 4
    saved = json.load(open(tmp_path / "cut" / "out" / "checkpoint-4" / LambdaController.FILE))
    assert saved["observed"]["on_policy"] + saved["observed"]["off_policy"] == 4
    run_training(cfg, resume=True)

    full, cut = step_logs(tmp_path / "full" / "out"), step_logs(tmp_path / "cut" / "out")
    lam = [h["lmbda"] for h in full]
    assert lam[0] == 0.5 and len(set(lam)) > 1  # the rule moved λ away from its start
    assert [h["lmbda"] for h in cut] == pytest.approx(lam, abs=1e-9)
    assert [h["on_policy_fraction"] for h in cut] == [h["on_policy_fraction"] for h in full]
    a, b = load_file(tmp_path / "full" / "out" / "model.safetensors"), load_file(tmp_path / "cut" / "out" /
                                                                                   "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-6


RANK_SCRIPT = '''
import json, os, sys
from transformers import TrainerCallback
from crossdistill.config import load_config
from crossdistill.train.run import run_training


class Record(TrainerCallback):
    rows = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "on_policy_fraction" in logs:
            self.rows.append([state.global_step, logs["lmbda"], logs["on_policy_fraction"]])


run_training(load_config(None, sys.argv[2:]), callbacks=[Record()])
with open(os.path.join(sys.argv[1], "decisions-%s.json" % os.environ.get("RANK", "0")), "w") as f:
    json.dump(Record.rows, f)
'''


@pytest.mark.multiprocess
@pytest.mark.parametrize("schedule", ["{kind: cosine, start: 0.1, end: 0.9}",
                                      "{kind: adaptive, start: 0.5, lower: 0.1, upper: 0.9, ema: 0.5, sensitivity: 8}"])
def test_schedule_identical_on_two_processes(tmp_path, overrides, schedule):
    """Two DDP processes on CPU: every process logs the same λ and the same decision at every step. For the adaptive
    rule each process sees a different local loss, so this holds only because the signal is summed over processes
    before it is folded in."""
    import os
    import shutil
    import subprocess
    import sys

    accelerate = os.path.join(os.path.dirname(sys.executable), "accelerate")
    if not os.path.exists(accelerate) and shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    script = tmp_path / "ranks.py"
    script.write_text(RANK_SCRIPT)
    args = overrides(tmp_path / "run" / "out", "loss.name=forward_kl", "onpolicy.max_new_tokens=4",
                     f"onpolicy.lmbda={schedule}", "train.max_steps=6", "train.per_device_batch_size=2",
                     "data.eval_fraction=0", "student.device=cpu")
    cmd = [accelerate if os.path.exists(accelerate) else "accelerate", "launch", "--multi_gpu", "--num_processes",
           "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(script),
           str(tmp_path), *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r0 = json.load(open(tmp_path / "decisions-0.json"))
    r1 = json.load(open(tmp_path / "decisions-1.json"))
    assert len(r0) == 6 and r0 == r1  # same λ and the same decision, step by step, bit for bit
    lam = [row[1] for row in r0]
    assert len(set(lam)) > 1  # the schedule moved
    if "cosine" in schedule:
        assert lam[0] == pytest.approx(0.1) and lam[-1] == pytest.approx(0.9)
        assert [row[2] for row in r0] == [float(step_is_on_policy(0, t, lam[t])) for t in range(6)]
