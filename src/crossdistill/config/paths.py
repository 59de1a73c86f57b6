"""Paths in a recipe file are relative to the recipe file, not to the directory the command runs in — so a recipe
works from anywhere and a project can keep recipes beside its data. ``key=value`` overrides on the command line
stay relative to the current directory, as every shell user expects.

Two kinds of fields:

* :data:`PATH_FIELDS` can only be paths (data files, caches, output directories): a relative value is joined to
  the recipe's directory.
* :data:`MODEL_FIELDS` may be Hub ids (``org/name``) as well as paths, so a value is joined only when it is
  written explicitly relative (``./…`` or ``../…``) or names something that exists there; anything else (a Hub
  id) is left as written.

After the overrides are applied, :func:`absolute_paths` makes the remaining relative paths absolute against the
current directory, so a loaded config holds no relative path: the ``resolved_config.yaml`` a run writes loads back
to the same config from anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

PATH_FIELDS = ("data.train", "data.eval", "teacher.cache", "train.output_dir", "train.runs_file", "generate.output",
               "cache_build.output", "cache_build.data")
MODEL_FIELDS = ("student.model", "student.tokenizer", "teacher.model", "teacher.tokenizer", "cache_build.teacher")


def _get(data: dict[str, Any], dotted: str) -> tuple[dict[str, Any] | None, str]:
    *sections, key = dotted.split(".")
    node: Any = data
    for s in sections:
        node = node.get(s) if isinstance(node, dict) else None
    return (node if isinstance(node, dict) else None), key


def _explicitly_relative(value: str) -> bool:
    return value.startswith(("./", "../")) or value in (".", "..")


def _resolve(data: dict[str, Any], base: Path) -> None:
    for dotted in PATH_FIELDS + MODEL_FIELDS:
        node, key = _get(data, dotted)
        value = node.get(key) if node is not None else None
        if not isinstance(value, str) or not value or value.startswith("~") or Path(value).is_absolute():
            continue
        if dotted in MODEL_FIELDS and not (_explicitly_relative(value) or (base / value).exists()):
            continue
        node[key] = str((base / value).resolve())


def absolute_paths(data: dict[str, Any], base: Path | None = None) -> dict[str, Any]:
    """``data`` with every relative path made absolute against ``base`` (default: the current directory)."""
    base = Path.cwd() if base is None else base
    for stage in data.get("chain") or []:
        if isinstance(stage, dict) and isinstance(stage.get("recipe"), dict):
            _resolve(stage["recipe"], base)
    _resolve(data, base)
    return data


def resolve_recipe_paths(data: dict[str, Any], recipe_dir: Path) -> dict[str, Any]:
    """``data`` (a recipe mapping, changed in place and returned) with its relative paths joined to
    ``recipe_dir`` — the stages of a ``chain:`` (each a partial recipe under ``recipe:``) included."""
    return absolute_paths(data, recipe_dir)
