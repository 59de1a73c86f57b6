"""Checks of the ``train:`` section, the student/teacher devices and the run's output paths — everything that
``transformers.TrainingArguments`` or the Trainer would otherwise refuse (or quietly accept) only after the
weights have loaded. Each error names the field, the value and the fix."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from crossdistill.config.schema import DistillConfig, ModelConfig, TrainConfig
from crossdistill.errors import ConfigError

SEED_LIMIT = 2**32
"""numpy's seeding accepts [0, 2**32); transformers seeds numpy with ``train.seed``."""


def _choices(field: str, value: str, allowed: list[str], what: str) -> None:
    if value not in allowed:
        import difflib

        close = difflib.get_close_matches(value, allowed, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{field}={value!r} is not a {what}; {hint}choose one of {sorted(allowed)}")


def scheduler_names() -> list[str]:
    from transformers.trainer_utils import SchedulerType

    return [s.value for s in SchedulerType]


def optimizer_names() -> list[str]:
    from transformers.training_args import OptimizerNames

    return [o.value for o in OptimizerNames]


def integration_names() -> list[str]:
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    return sorted(INTEGRATION_TO_CALLBACK)


def _check_integrations(report_to: list[str]) -> None:
    from transformers.integrations import get_available_reporting_integrations

    known = integration_names()
    available = set(get_available_reporting_integrations())
    for name in report_to:
        if name in ("none", "all"):
            raise ConfigError(f"train.report_to contains {name!r}; list integrations by name (e.g. [tensorboard]) "
                              "or give [] for none")
        _choices("train.report_to", name, known, "logging integration")
        if name not in available:
            raise ConfigError(f"train.report_to={report_to!r}: {name!r} is not installed in this environment; "
                              f"install it, or remove it (installed: {sorted(available) or 'none'})")


def check_train(t: TrainConfig) -> None:
    """Ranges and names of the ``train:`` section."""
    for name in ("per_device_batch_size", "grad_accum", "logging_steps"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name}={getattr(t, name)} must be >= 1")
    if t.max_steps == 0 or t.max_steps < -1:
        raise ConfigError(f"train.max_steps={t.max_steps} must be -1 (use num_epochs) or >= 1")
    if t.max_steps == -1 and not t.num_epochs > 0:
        raise ConfigError(f"train.num_epochs={t.num_epochs} must be > 0 when train.max_steps=-1 (it would train 0 "
                          "steps); set train.num_epochs (e.g. 1) or train.max_steps")
    if not t.learning_rate > 0:
        raise ConfigError(f"train.learning_rate={t.learning_rate} must be > 0 (a run at 0 trains nothing; e.g. 5e-5)")
    if t.weight_decay < 0:
        raise ConfigError(f"train.weight_decay={t.weight_decay} must be >= 0")
    if not 0 <= t.warmup_ratio < 1:
        raise ConfigError(f"train.warmup_ratio={t.warmup_ratio} must be in [0, 1) (a fraction of the steps)")
    if t.max_grad_norm < 0:
        raise ConfigError(f"train.max_grad_norm={t.max_grad_norm} must be >= 0 (0 disables clipping)")
    for name in ("eval_steps", "save_steps", "save_total_limit"):
        value = getattr(t, name)
        if value is not None and value < 1:
            raise ConfigError(f"train.{name}={value} must be >= 1, or null ("
                              + {"eval_steps": "evaluate only at the end", "save_steps": "no intermediate checkpoints",
                                 "save_total_limit": "keep every checkpoint"}[name] + ")")
    if t.dataloader_workers < 0:
        raise ConfigError(f"train.dataloader_workers={t.dataloader_workers} must be >= 0")
    if not 0 <= t.seed < SEED_LIMIT:
        raise ConfigError(f"train.seed={t.seed} must be in [0, 2**32) (numpy's seed range); e.g. 0")
    _choices("train.lr_scheduler", t.lr_scheduler, scheduler_names(), "transformers scheduler")
    _choices("train.optim", t.optim, optimizer_names(), "transformers optimizer")
    _check_integrations(list(t.report_to))


def check_device(mc: ModelConfig, where: str) -> None:
    """``cpu``, ``cuda[:N]``, ``mps`` or ``xpu[:N]`` that this machine has."""
    if mc.device is None:
        return
    import torch

    kind, _, index = mc.device.partition(":")
    if kind not in ("cpu", "cuda", "mps", "xpu") or (index and not index.isdigit()) or (kind == "cpu" and index):
        raise ConfigError(f"{where}.device={mc.device!r} is not a device name; use cpu, cuda, cuda:N, mps or xpu, or "
                          "leave it unset (accelerate chooses)")
    if kind == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (index and int(index) >= count):
            raise ConfigError(f"{where}.device={mc.device!r}, but this machine has {count} CUDA device(s); use cpu, "
                              "or leave it unset")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where}.device='mps', but MPS is not available here; use cpu, or leave it unset")
    if kind == "xpu" and not (hasattr(torch, "xpu") and torch.xpu.is_available()):
        raise ConfigError(f"{where}.device={mc.device!r}, but no XPU is available here; use cpu, or leave it unset")


def _writable_dir(path: Path, field: str) -> None:
    """``path`` (created if absent, with its parents) takes a file: checked by writing one and removing it."""
    probe = path
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{field}={str(path)!r}: {str(probe)!r} is a file, not a directory; choose another path")
    created = []
    try:
        for p in reversed([path, *path.parents]):
            if not p.exists():
                p.mkdir()
                created.append(p)
        fd, name = tempfile.mkstemp(dir=path, prefix=".write-check-")
        os.close(fd)
        os.unlink(name)
    except OSError as err:
        raise ConfigError(f"{field}={str(path)!r} is not writable ({err.strerror}); choose a directory you can "
                          "write to") from None
    finally:
        for p in reversed(created):  # leave nothing behind: the run creates them when it starts
            try:
                p.rmdir()
            except OSError:
                pass


def check_output_paths(cfg: DistillConfig) -> None:
    """``train.output_dir`` and the directory of the run records are writable (before any weights load, so a run
    never trains for hours to lose its student or record)."""
    out = Path(cfg.train.output_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.output_dir={str(out)!r} is a file; give a directory path")
    _writable_dir(out, "train.output_dir")
    runs = Path(cfg.train.runs_file) if cfg.train.runs_file else out.parent / "runs.jsonl"
    if runs.exists() and runs.is_dir():
        raise ConfigError(f"train.runs_file={str(runs)!r} is a directory; give a file path (e.g. runs.jsonl)")
    if runs.exists() and not os.access(runs, os.W_OK):
        raise ConfigError(f"train.runs_file={str(runs)!r} is not writable; fix its permissions or choose another "
                          "train.runs_file")
    _writable_dir(runs.parent, "train.runs_file" if cfg.train.runs_file else "train.output_dir (runs.jsonl beside "
                  "it)")
