"""Checks of ``teachers:`` (several teachers at once) that need neither models nor tokenizers.

What several teachers support today: online teacher models (no ``cache`` / ``server`` per teacher), off-policy
training (no on-policy λ, no SeqKD: a rollout would have to be re-rendered for every teacher), and methods whose
per-run state has neither trained parameters nor a file (ULD, GOLD's vocabulary map, every same-vocabulary
divergence; not DSKD's projectors). Each is refused here, naming the field and the fix.
"""

from __future__ import annotations

import re

from crossdistill.config.schema import DistillConfig
from crossdistill.errors import ConfigError

TEACHER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def teacher_names(cfg: DistillConfig) -> list[str]:
    """``teachers[i].name`` or ``teacher<i>`` (1-based), checked distinct."""
    names = [t.name or f"teacher{i + 1}" for i, t in enumerate(cfg.teachers or [])]
    for i, name in enumerate(names):
        if not TEACHER_NAME.fullmatch(name):
            raise ConfigError(f"teachers[{i}].name={name!r} is not a usable name (it labels log keys such as "
                              "loss_kd@NAME): use letters, digits, '-', '_' or '.'")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"teachers: names {dup} occur more than once; give every teacher its own name")
    return names


def check_teachers(cfg: DistillConfig, method, model_ref_check) -> None:
    """Raise :class:`ConfigError` for what several teachers cannot do (see the module docstring).

    ``method``: the run's registered method; ``model_ref_check(ref, where)``: the path check of ``teacher.model``,
    or ``None`` to skip paths.
    """
    ts = cfg.teachers or []
    if len(ts) < 2:
        raise ConfigError(f"teachers has {len(ts)} entr{'y' if len(ts) == 1 else 'ies'}; several teachers need at "
                          "least two (for one teacher use teacher: instead)")
    if cfg.teacher is not None and cfg.teacher != cfg.with_first_teacher().teacher:
        raise ConfigError("teacher: and teachers: are both set; give the teachers as a list under teachers: and "
                          "remove teacher: (the first of teachers is the one evaluated and recorded)")
    names = teacher_names(cfg)
    for i, (t, name) in enumerate(zip(ts, names)):
        where = f"teachers[{i}] ({name})"
        if t.weight < 0:
            raise ConfigError(f"{where}.weight={t.weight} is negative; weights must be >= 0")
        if t.cache is not None or t.server is not None:
            what = "cache" if t.cache is not None else "server"
            raise ConfigError(f"{where}.{what} is set: several teachers are online teacher models only for now; "
                              f"give {where}.model and remove {what}, or train from one teacher (teacher:)")
        if t.lora.enabled:
            raise ConfigError(f"{where}.lora.enabled=true: teachers are frozen; LoRA applies to the student only")
        if not t.model:
            raise ConfigError(f"{where}.model is empty; give a Hub id, a local model directory or a .gguf file")
        if model_ref_check is not None:
            model_ref_check(t.model, f"{where}.model")
            if t.tokenizer:
                model_ref_check(t.tokenizer, f"{where}.tokenizer")
    if sum(t.weight for t in ts) <= 0:
        raise ConfigError(f"teachers: every weight is 0 ({[t.weight for t in ts]}); give at least one teacher a "
                          "positive weight")
    if not method.needs_teacher:
        raise ConfigError(f"teachers: with loss.name={cfg.loss.name!r}, which uses no teacher; choose a "
                          "distillation objective (e.g. forward_kl, uld, gold_hybrid) or remove teachers:")
    if cfg.onpolicy.highest_lmbda > 0 or cfg.onpolicy.seq_kd:
        what = "onpolicy.lmbda > 0" if cfg.onpolicy.highest_lmbda > 0 else "onpolicy.seq_kd=true"
        raise ConfigError(f"teachers: with {what}: several teachers train off-policy only for now (a sampled "
                          "completion would have to be re-rendered for every teacher); set onpolicy.lmbda=0 and "
                          "onpolicy.seq_kd=false, or train from one teacher")
