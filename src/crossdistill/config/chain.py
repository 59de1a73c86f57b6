"""Teacher-assistant chains: a recipe's ``chain:`` stages as complete, validated run configs.

Each stage is the recipe's own sections (its base) with the stage's partial ``recipe:`` merged over them key by key
(mappings merge, anything else replaces). Two settings get chain-specific defaults:

* ``train.output_dir``: ``<base train.output_dir>/<stage name>`` unless the stage sets it, so every stage has its own
  directory (checkpoints, student, manifest) and their records share ``<base train.output_dir>/runs.jsonl``.
* ``teacher``: the first stage's teacher is the recipe's (the largest model). A later stage's teacher is the student
  the stage before it trains, loaded from that stage's output directory (model, tokenizer and chat template saved
  there), unless its own ``teacher.model`` / ``teacher.cache`` names another; its ``teacher:`` mapping starts from
  the defaults, since the big teacher's tokenizer, revision or cache do not describe the assistant.

Every stage is validated here, before any weights load: a typo in the last stage fails before the first trains. A
teacher that an earlier stage will write is not required to exist yet.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from crossdistill.config.schema import DistillConfig
from crossdistill.errors import ConfigError
from crossdistill.typed import build

STAGE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: nested mappings merge key by key, other values replace."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def stage_names(cfg: DistillConfig) -> list[str]:
    """The stages' names (``stage<i>`` for an unnamed one), checked to be distinct and usable as directory names."""
    names = [st.name or f"stage{i + 1}" for i, st in enumerate(cfg.chain or [])]
    for i, name in enumerate(names):
        if not STAGE_NAME.fullmatch(name):
            raise ConfigError(f"chain[{i}].name={name!r} is not a usable stage name (it names the stage's output "
                              "directory): use letters, digits, '-', '_' or '.', e.g. name: assistant")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"chain: stage names {dup} occur more than once; give every stage its own name")
    return names


def chain_stages(cfg: DistillConfig, check_paths: bool = True) -> list[DistillConfig]:
    """The complete config of every stage of ``cfg.chain``, in order, each validated (raises :class:`ConfigError`
    naming the stage)."""
    from crossdistill.config.validate import validate

    if not cfg.chain:
        raise ConfigError("chain is empty: list at least two stages (teacher -> assistant, assistant -> student), "
                          "or remove chain: for one run")
    base = cfg.to_dict()
    base.pop("chain", None)
    names = stage_names(cfg)
    stages: list[DistillConfig] = []
    written: list[str] = []
    for i, (stage, name) in enumerate(zip(cfg.chain, names)):
        where = f"chain[{i}] ({name})"
        over = dict(stage.recipe)
        if "chain" in over:
            raise ConfigError(f"{where}.recipe has a chain: section; chains do not nest: list every stage in the "
                              "recipe's one chain:")
        data = merge(base, over)
        train = dict(data.get("train") or {})
        if "output_dir" not in (over.get("train") or {}):
            train["output_dir"] = str(Path(cfg.train.output_dir) / name)
        data["train"] = train
        if i > 0:
            own = over.get("teacher", {})
            if own is None:
                data["teacher"] = None
            elif not isinstance(own, dict):
                raise ConfigError(f"{where}.recipe.teacher={own!r} has the wrong type: expected a mapping of teacher "
                                  "fields (or leave it out: the stage before's student is the teacher)")
            else:
                data["teacher"] = own if own.get("model") or own.get("cache") else {**own, "model": written[-1]}
        try:
            stage_cfg = build(DistillConfig, data)
            validate(stage_cfg, check_paths=check_paths, pending=frozenset(written))
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        if stage_cfg.train.output_dir in written or stage_cfg.train.output_dir == cfg.train.output_dir:
            raise ConfigError(f"{where}: train.output_dir={stage_cfg.train.output_dir!r} is another stage's (or the "
                              "chain's own) directory; every stage needs its own train.output_dir")
        stages.append(stage_cfg)
        written.append(stage_cfg.train.output_dir)
    if len(stages) < 2:
        raise ConfigError(f"chain has {len(stages)} stage; a chain needs at least two (teacher -> assistant, "
                          "assistant -> student); for one run remove chain: and put the stage's settings in the recipe")
    return stages
