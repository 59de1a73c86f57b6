"""Two CPU processes (DDP over gloo, and FSDP2 from recipes/accelerate/fsdp.yaml) and one process on the same global
batch give the same losses and the same saved student.

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
from pathlib import Path

import pytest
import yaml
from transformers import AutoModelForCausalLM

from crossdistill.config import load_config
from crossdistill.train.run import run_training


def step_losses(out_dir):
    history = json.load(open(out_dir / "trainer_state.json"))["log_history"]
    return [(h["loss_off_policy"], h["loss_kd"], h["target_tokens"]) for h in history if "loss_off_policy" in h]


ACCELERATE = os.path.join(os.path.dirname(sys.executable), "accelerate")
RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def cpu_copy_of_fsdp_recipe(path: Path) -> Path:
    """recipes/accelerate/fsdp.yaml (FSDP2, the student sharded), with only what a 2-process CPU run must change."""
    cfg = yaml.safe_load((RECIPES / "accelerate" / "fsdp.yaml").read_text())
    cfg.update(num_processes=2, mixed_precision="no", use_cpu=True)
    cfg["fsdp_config"]["fsdp_cpu_ram_efficient_loading"] = False  # a meta-device load needs a GPU-side broadcast
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.multiprocess
@pytest.mark.skipif(shutil.which("accelerate") is None and not os.path.exists(ACCELERATE),
                    reason="accelerate CLI not installed")
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, overrides, strategy):
    """Same global batch (2 x 2 vs 1 x 4), no clipping: the per-step losses and the saved student agree."""
    common = ["loss.name=forward_kl", "train.max_steps=3", "data.eval_fraction=0", "train.max_grad_norm=0"]
    single = load_config(None, overrides(tmp_path / "one" / "out", *common, "train.per_device_batch_size=4"))
    run_training(single)

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("train:\n  seed: 0\n")
    launch = [ACCELERATE if os.path.exists(ACCELERATE) else "accelerate", "launch"]
    if strategy == "ddp":
        launch += ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
                   "--dynamo_backend", "no"]
    else:
        launch += ["--config_file", str(cpu_copy_of_fsdp_recipe(tmp_path / "fsdp_cpu.yaml"))]
    cmd = [*launch, "-m", "crossdistill", "train", str(recipe),
           *overrides(tmp_path / "two" / "out", *common, "train.per_device_batch_size=2"), "student.device=cpu"]
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
    # the saved student (gathered from the shards under FSDP) is the single-process one
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "one" / "out").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "out").state_dict()
    assert a.keys() == b.keys()
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5
