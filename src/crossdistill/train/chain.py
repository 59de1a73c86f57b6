"""Run a teacher-assistant chain: every stage of a recipe's ``chain:`` as a full training run, in order.

Stage i trains its student from its teacher (stage 1: the recipe's teacher; stage i > 1: the student of stage i - 1,
loaded from its output directory) with its own tokenizers, method and settings, through the ordinary
:func:`~crossdistill.train.run.run_training`: its own output directory, checkpoints, manifest, ``run_record.json`` and
line in ``runs.jsonl``. The stage configs are built and validated first (:func:`crossdistill.config.chain_stages`),
so a bad stage fails before any stage trains.

``resume=True`` skips every finished stage — one whose output directory has the student's manifest, written last
when its student is saved — after checking it was trained by the same stage config, and resumes the first
unfinished one from its last complete checkpoint; the stages after it then run from scratch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crossdistill.config import ConfigError, DistillConfig
from crossdistill.config.chain import chain_stages, stage_names
from crossdistill.manifest import MANIFEST_NAME
from crossdistill.train import identity
from crossdistill.train.run import run_training


def stage_finished(stage: DistillConfig) -> bool:
    """The stage's student is saved: its output directory has the student's manifest."""
    return (Path(stage.train.output_dir) / MANIFEST_NAME).is_file()


def _finished_record(stage: DistillConfig, name: str) -> dict[str, Any]:
    """The record of a finished stage, after checking that this stage config trained it."""
    out = Path(stage.train.output_dir)
    old = identity.read_fingerprint(out)
    diff = identity.differences(old, identity.fingerprint(stage)) if old is not None else []
    if diff:
        raise ConfigError(f"--resume: chain stage {name!r} in {str(out)!r} was trained by a different config, so the "
                          "stages after it would not continue this chain. Fields that differ (trained -> now): "
                          + "; ".join(diff) + ". Restore them, or rerun the chain with --overwrite")
    path = out / identity.RECORD_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):  # killed between the manifest and the record: the student itself is complete
        return {"output_dir": str(out), "student": stage.student.model, "finished": True}


def run_chain(cfg: DistillConfig, resume: bool = False, overwrite: bool = False,
              callbacks: Mapping[str, list] | None = None) -> list[dict[str, Any]]:
    """Train every stage of ``cfg.chain``; returns one record per stage (a skipped stage's is its stored record).

    ``callbacks``: stage name -> ``transformers.TrainerCallback`` objects for that stage's run.
    """
    stages = chain_stages(cfg)
    names = stage_names(cfg)
    records = []
    for i, (name, stage) in enumerate(zip(names, stages)):
        if resume and stage_finished(stage):
            print(f"chain stage {i + 1}/{len(stages)} {name}: finished, skipped ({stage.train.output_dir})")
            records.append(_finished_record(stage, name))
            continue
        teacher = (stage.teacher.model or stage.teacher.cache) if stage.teacher is not None else None
        print(f"chain stage {i + 1}/{len(stages)} {name}: {stage.loss.name} from {teacher} into "
              f"{stage.student.model} -> {stage.train.output_dir}")
        records.append(run_training(stage, resume=resume, overwrite=overwrite,
                                    callbacks=list((callbacks or {}).get(name, [])) or None))
    return records
