"""The bad-input table: every setting that cannot work is refused before any weights load, with a message that
names the field (or file), the value and the fix — and nothing is written (no output directory, no record).

Cases of files and I/O faults (data files, caches, generation output, disk full, ``--help``) are in
tests/test_bad_input_io.py; resume and output-directory cases in tests/train/test_identity.py.
Run: python -m pytest tests/test_bad_input.py -q
"""

from __future__ import annotations

import pytest

from crossdistill.config import ConfigError, load_config

# (overrides, regex the message must match: the field and value, then the fix)
CASES = [
    # --- train: names transformers would refuse only after the weights load
    (["train.lr_scheduler=cosinus"], r"train.lr_scheduler='cosinus' is not a transformers scheduler; did you mean "
                                     r"'cosine'\? choose one of"),
    (["train.optim=adam_w"], r"train.optim='adam_w' is not a transformers optimizer; .*choose one of"),
    (["train.report_to=[tensorbord]"], r"train.report_to='tensorbord' is not a logging integration; did you mean "
                                       r"'tensorboard'"),
    (["train.report_to=[wandb]"], r"'wandb' is not installed in this environment; install it, or remove it"),
    (["train.report_to=[none]"], r"train.report_to contains 'none'; .*give \[\] for none"),
    # --- train: ranges that were accepted silently
    (["train.max_steps=-1", "train.num_epochs=-1"],
     r"train.num_epochs=-1.0 must be > 0 when train.max_steps=-1 .*set train.num_epochs"),
    (["train.max_steps=-1", "train.num_epochs=0"], r"train.num_epochs=0.0 must be > 0"),
    (["train.learning_rate=0"], r"train.learning_rate=0.0 must be > 0 .*e.g. 5e-5"),
    (["train.learning_rate=-1e-3"], r"train.learning_rate=-0.001 must be > 0"),
    (["train.learning_rate=.nan"], r"train.learning_rate=nan is not a finite number"),
    (["train.learning_rate=.inf"], r"train.learning_rate=inf is not a finite number"),
    (["train.warmup_ratio=5"], r"train.warmup_ratio=5.0 must be in \[0, 1\)"),
    (["train.warmup_ratio=-0.1"], r"train.warmup_ratio=-0.1 must be in \[0, 1\)"),
    (["train.max_grad_norm=-1"], r"train.max_grad_norm=-1.0 must be >= 0 \(0 disables clipping\)"),
    (["train.save_steps=0"], r"train.save_steps=0 must be >= 1, or null \(no intermediate checkpoints\)"),
    (["train.eval_steps=0"], r"train.eval_steps=0 must be >= 1, or null \(evaluate only at the end\)"),
    (["train.save_total_limit=0"], r"train.save_total_limit=0 must be >= 1, or null"),
    (["train.weight_decay=-0.1"], r"train.weight_decay=-0.1 must be >= 0"),
    (["train.seed=-1"], r"train.seed=-1 must be in \[0, 2\*\*32\)"),
    (["train.seed=4294967296"], r"train.seed=4294967296 must be in \[0, 2\*\*32\)"),
    (["train.max_steps=0"], r"train.max_steps=0 must be -1 \(use num_epochs\) or >= 1"),
    (["train.max_steps=-5"], r"train.max_steps=-5 must be -1"),
    (["train.per_device_batch_size=0"], r"train.per_device_batch_size=0 must be >= 1"),
    (["train.grad_accum=0"], r"train.grad_accum=0 must be >= 1"),
    (["train.logging_steps=0"], r"train.logging_steps=0 must be >= 1"),
    (["train.dataloader_workers=-1"], r"train.dataloader_workers=-1 must be >= 0"),
    (["train.max_steps=1.5"], r"train.max_steps=1.5 has the wrong type: expected an integer"),
    (["train.progress_bar=yes please"], r"train.progress_bar='yes please' has the wrong type: expected true or false"),
    # --- devices that do not exist here
    (["student.device=cuda"], r"student.device='cuda', but this machine has 0 CUDA device\(s\); use cpu"),
    (["student.device=cuda:3"], r"student.device='cuda:3', but this machine has 0 CUDA"),
    (["student.device=gpu"], r"student.device='gpu' is not a device name; use cpu, cuda, cuda:N"),
    (["student.device=cpu:1"], r"student.device='cpu:1' is not a device name"),
    (["teacher.device=mps"], r"teacher.device='mps', but MPS is not available here"),
    # --- loss and method parameters: types, ranges, NaN
    (["loss.name=jsd", "loss.params={beta: 2}"], r"loss.params.beta=2.0 must be in \[0, 1\]"),
    (["loss.name=jsd", "loss.params={beta: .nan}"], r"loss.params.beta=nan is not a finite number"),
    (["loss.name=jsd", "loss.params={beta: high}"], r"loss.params.beta='high' has the wrong type"),
    (["loss.name=skew_kl", "loss.params={alpha: -0.5}", "loss.weights={kd: 1}"],
     r"loss.params.alpha=-0.5 must be in \[0, 1\]"),
    (["loss.name=forward_kl", "loss.params={beta: 0.5}"],
     r"loss.params has unknown keys \['beta'\] for loss.name='forward_kl'; it takes no parameters: remove them"),
    (["loss.temperature=.nan"], r"loss.temperature=nan is not a finite number"),
    (["loss.temperature=-1"], r"loss.temperature=-1.0 must be > 0"),
    (["loss.chunk_tokens=0"], r"loss.chunk_tokens=0 must be >= 1"),
    (["loss.name=forward_kl", "loss.weights={kd: 0, ce: 0}"],
     r"every term of loss.name='forward_kl' has weight 0, so nothing would be trained; give at least one"),
    (["loss.name=forward_kl", "loss.weights={kd: -1}"], r"loss.weights.kd=-1.0 is negative"),
    (["loss.name=uld", "loss.params={top_k: 0}"], r"loss.params.top_k=0 must be >= 1 or null"),
    (["loss.name=uld", "loss.params={variant: sorted}"], r"loss.params.variant='sorted' is not allowed: choose one of"),
    (["loss.name=uld", "loss.params={merge: mean}"], r"loss.params.merge='mean' is not allowed"),
    (["loss.name=uld", "loss.params={student_temperature: 0}"], r"loss.params.student_temperature=0.0 must be > 0"),
    (["loss.name=gold_hybrid", "loss.params={matched_weight: -1}"], r"loss.params.matched_weight=-1.0 must be >= 0"),
    (["loss.name=cdm", "loss.params={threshold: 1.5}"], r"loss.params.threshold=1.5 must be in \(0, 1\]"),
    (["loss.name=cdm", "loss.params={top_k: 0}"], r"loss.params.top_k=0 must be >= 1"),
    (["loss.name=multilevel_ot", "loss.params={top_k: 0}"], r"loss.params for loss.name='multilevel_ot': .*top_k"),
    (["loss.name=dskd", "loss.params={kd_divergence: kl2}"], r"loss.params.kd_divergence='kl2' is not a divergence"),
    (["loss.name=dskd", "loss.params={projector_lr: 0}"], r"loss.params.projector_lr=0.0 must be > 0 or null"),
    (["loss.name=dskd_eta", "loss.params={topk_vocab: 0}"], r"loss.params.topk_vocab=0 must be >= 1 or null"),
    # --- on-policy and generation
    (["onpolicy.temperature=0", "loss.name=forward_kl", "onpolicy.lmbda=0.5", "onpolicy.max_new_tokens=4"],
     r"onpolicy.temperature=0.0 must be > 0 for sampling"),
    (["onpolicy.top_p=0", "loss.name=forward_kl"], r"onpolicy.top_p=0.0 must be in \(0, 1\]"),
    (["onpolicy.max_new_tokens=0"], r"onpolicy.max_new_tokens=0 must be >= 1"),
    (["onpolicy.lmbda=0.5", "onpolicy.max_new_tokens=4"],
     r"onpolicy.lmbda=0.5 with loss.name='ce': on-policy steps need a teacher objective"),
    # --- data
    (["data.max_length=1"], r"data.max_length=1 must be >= 2"),
    (["data.eval_fraction=1"], r"data.eval_fraction=1.0 must be in \[0, 1\)"),
    (["data.format=xml"], r"data.format='xml' is not allowed: choose one of"),
    # --- structure
    (["trian.max_steps=3"], r"unknown config key 'trian'; did you mean 'train'"),
    (["train.max_step=3"], r"unknown config key 'train.max_step'; did you mean 'train.max_steps'"),
    (["loss=forward_kl"], r"loss"),
    (["student.lora.enabled=true", "student.lora.r=0"], r"student.lora.r=0 must be >= 1"),
    (["teacher.lora.enabled=true"], r"teacher.lora.enabled=true: the teacher is frozen; LoRA applies to the student"),
]


@pytest.mark.parametrize("extra, match", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_refused_before_any_weights_load_and_nothing_written(tmp_path, overrides, extra, match):
    out = tmp_path / "run" / "out"
    with pytest.raises(ConfigError, match=match) as info:
        load_config(None, overrides(out, *extra))
    sections = {e.split("=", 1)[0].split(".")[0] for e in extra}
    assert any(s in str(info.value) for s in sections), info.value  # the message names the field
    assert not out.exists() and not (tmp_path / "run").exists(), "a refused config wrote something"


@pytest.mark.parametrize("target, match", [
    ("file", r"train.output_dir='.*' is a file; give a directory path"),
    ("under_file", r"train.output_dir='.*': '.*' is a file, not a directory; choose another path"),
    ("proc", r"train.output_dir='/proc/.*' is not writable .*choose a directory you can write to"),
])
def test_output_paths_are_checked_by_writing(tmp_path, overrides, target, match):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = {"file": blocker, "under_file": blocker / "out", "proc": "/proc/crossdistill-out"}[target]
    with pytest.raises(ConfigError, match=match):
        load_config(None, overrides(out))


def test_a_runs_file_that_cannot_be_written_is_refused_before_training(tmp_path, overrides):
    (tmp_path / "runs-dir").mkdir()
    with pytest.raises(ConfigError, match=r"train.runs_file='.*runs-dir' is a directory; give a file path"):
        load_config(None, overrides(tmp_path / "out", f"train.runs_file={tmp_path / 'runs-dir'}"))
    with pytest.raises(ConfigError, match=r"train.runs_file.* is not writable"):
        load_config(None, overrides(tmp_path / "out", "train.runs_file=/proc/runs.jsonl"))
