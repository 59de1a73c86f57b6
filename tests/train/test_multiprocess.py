"""Two CPU processes (DDP over gloo) and one process on the same global batch give the same losses.

accelerate 1.15's ``launch --cpu --num_processes 2`` starts ONE process unless an MPI hostfile is given (its simple
launcher); ``--multi_gpu --num_processes 2`` with ``student.device=cpu`` runs torchrun with two CPU processes
(``DistributedType.MULTI_CPU``), which is what this test needs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from crossdistill.config import load_config
from crossdistill.train.run import run_training


def step_losses(out_dir):
    history = json.load(open(out_dir / "trainer_state.json"))["log_history"]
    return [(h["loss_off_policy"], h["loss_kd"], h["target_tokens"]) for h in history if "loss_off_policy" in h]


@pytest.mark.multiprocess
@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(
    os.path.join(os.path.dirname(sys.executable), "accelerate")), reason="accelerate CLI not installed")
def test_two_processes_match_one(tmp_path, overrides):
    common = ["loss.name=forward_kl", "train.max_steps=3", "data.eval_fraction=0", "train.max_grad_norm=0"]
    single = load_config(None, overrides(tmp_path / "one" / "out", *common, "train.per_device_batch_size=4"))
    run_training(single)

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  seed: 0\n")
    launcher = os.path.join(os.path.dirname(sys.executable), "accelerate")
    cmd = [launcher if os.path.exists(launcher) else "accelerate", "launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "crossdistill", "train",
           str(recipe), *overrides(tmp_path / "two" / "out", *common, "train.per_device_batch_size=2"),
           "student.device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "ACCELERATE_USE_CPU": "true"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]

    one, two = step_losses(tmp_path / "one" / "out"), step_losses(tmp_path / "two" / "out")
    assert len(one) == len(two) == 3
    for (l1, kd1, n1), (l2, kd2, n2) in zip(one, two):
        assert n1 == n2  # same global target count: the same examples were used
        assert l1 == pytest.approx(l2, abs=1e-5)
        assert kd1 == pytest.approx(kd2, abs=1e-5)
    runs = [json.loads(x) for x in open(tmp_path / "two" / "runs.jsonl")]
    assert len(runs) == 1  # written once, by the main process
    assert runs[0]["student_tokens"] == sum(n for *_, n in one[-1:])
