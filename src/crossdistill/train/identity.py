"""What a run is: the fingerprint of every config field that changes the trained student, and the checks that keep
``train.output_dir`` from mixing two runs.

A checkpoint and a finished run each carry ``run_fingerprint.json``. ``--resume`` continues only a checkpoint of the
same fingerprint (otherwise it refuses with the fields that differ), answers "already complete" for a finished run
of the same fingerprint (no extra step, no second record), and a new run refuses a non-empty ``output_dir`` unless
the user asks for ``--resume`` or ``--overwrite``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crossdistill.config import ConfigError, DistillConfig
from crossdistill.io import write_json

FINGERPRINT_FILE = "run_fingerprint.json"
"""Written into every checkpoint (before the trainer state that marks it complete) and beside the final student."""
RECORD_FILE = "run_record.json"
"""The finished run's record, written after the student: its presence marks the run complete."""

NOT_IN_FINGERPRINT = frozenset({
    "train.output_dir",  # where, not what: a copied run directory resumes under its new path
    "train.logging_steps", "train.eval_steps", "train.save_steps", "train.save_total_limit", "train.report_to",
    "train.runs_file", "train.dataloader_workers", "train.progress_bar", "train.log_lines",
    "data.eval",  # a separate eval file does not change what is trained (eval_fraction does: it moves the split)
    "student.device", "teacher.device",  # the same run on another device
    # where and how patiently a served teacher is reached: a run resumes against a server restarted elsewhere
    "teacher.server.url", "teacher.server.timeout", "teacher.server.retries", "teacher.server.backoff",
    "teacher.server.concurrency", "teacher.server.api_key_env",
    "onpolicy.server.url", "onpolicy.server.timeout", "onpolicy.server.retries", "onpolicy.server.backoff",
    "onpolicy.server.concurrency", "onpolicy.server.api_key_env", "onpolicy.server.weights_dir",
    "loss.chunk_tokens",  # a memory bound: changes sums only at rounding level
    "method",  # a free label for records
    "generate", "cache_build",  # settings of other commands
    "chain",  # a chain's stages run (and are fingerprinted) one by one, each with chain=None
})
"""Dotted config fields (or whole sections) that do not change the trained student."""


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out or {prefix: {}}
    return {prefix: data}


def fingerprint(cfg: DistillConfig) -> dict[str, Any]:
    """``{dotted field: value}`` of every field that changes the result (see :data:`NOT_IN_FINGERPRINT`)."""
    flat = _flatten(cfg.to_dict())
    return {k: v for k, v in sorted(flat.items())
            if k not in NOT_IN_FINGERPRINT and k.split(".", 1)[0] not in NOT_IN_FINGERPRINT}


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``field: old -> new`` for every field that differs (missing on one side included)."""
    missing = object()
    keys = sorted(set(old) | set(new))
    return [f"{k}: {old.get(k, '(absent)')!r} -> {new.get(k, '(absent)')!r}" for k in keys
            if old.get(k, missing) != new.get(k, missing)]


def write_fingerprint(directory: str | Path, cfg: DistillConfig) -> None:
    write_json(Path(directory) / FINGERPRINT_FILE, fingerprint(cfg), sort_keys=True)


def read_fingerprint(directory: str | Path) -> dict[str, Any] | None:
    path = Path(directory) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class OutputPlan:
    """What to do with ``train.output_dir``, decided before any weights load."""

    resume_from: str | None = None
    """The checkpoint to continue, if any."""
    finished: dict[str, Any] | None = None
    """The record of a finished run of the same config (``--resume`` on it trains nothing)."""


def _describe(out: Path) -> str:
    names = sorted(p.name for p in out.iterdir())
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    return shown


def _refuse_foreign(out: Path, where: str, old: dict[str, Any] | None, cfg: DistillConfig) -> None:
    if old is None:
        raise ConfigError(f"--resume: {where} in train.output_dir={str(out)!r} has no {FINGERPRINT_FILE} (written by "
                          "an older crossdistill or by hand), so it cannot be checked against this config; start "
                          "over with --overwrite, or choose another train.output_dir")
    diff = differences(old, fingerprint(cfg))
    if diff:
        raise ConfigError(f"--resume: {where} in train.output_dir={str(out)!r} was made by a different config; it "
                          "would not continue the run you asked for. Fields that differ (checkpoint -> now): "
                          + "; ".join(diff) + ". Restore those settings to resume, or pass --overwrite to start "
                          "this config over (the old run is deleted), or choose another train.output_dir")


def plan_output(cfg: DistillConfig, resume: bool, overwrite: bool, last_checkpoint) -> OutputPlan:
    """Check ``train.output_dir`` against the flags (cheap: reads small JSON files only).

    ``last_checkpoint(dir) -> str | None`` finds the newest complete checkpoint.
    """
    out = Path(cfg.train.output_dir)
    if resume and overwrite:
        raise ConfigError("--resume and --overwrite contradict each other: --resume continues the run in "
                          "train.output_dir, --overwrite deletes it; pass one")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"train.output_dir={str(out)!r} is a file; give a directory path")
    if not out.exists() or not any(out.iterdir()) or overwrite:
        return OutputPlan()
    if not resume:
        raise ConfigError(f"train.output_dir={str(out)!r} is not empty ({_describe(out)}); pass --resume to continue "
                          "the run in it, --overwrite to replace it, or choose another train.output_dir")
    record_path = out / RECORD_FILE
    if record_path.is_file():
        _refuse_foreign(out, "the finished run", read_fingerprint(out), cfg)
        try:
            return OutputPlan(finished=json.loads(record_path.read_text()))
        except ValueError:
            pass  # a damaged record: fall through and resume from the last checkpoint
    ckpt = last_checkpoint(out)
    if ckpt is not None:
        _refuse_foreign(out, Path(ckpt).name, read_fingerprint(ckpt), cfg)
    return OutputPlan(resume_from=ckpt)


def clear_output(cfg: DistillConfig) -> None:
    """``--overwrite``: delete the previous run in ``train.output_dir`` (its contents, not the directory)."""
    out = Path(cfg.train.output_dir)
    if not out.is_dir():
        return
    for child in out.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()
