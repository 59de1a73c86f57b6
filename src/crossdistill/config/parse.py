"""YAML recipe + dotted ``key=value`` overrides -> typed dataclasses, with type checks and "did you mean" hints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from crossdistill.config.chain import chain_stages
from crossdistill.config.paths import absolute_paths, resolve_recipe_paths
from crossdistill.config.schema import RENAMED_SECTIONS, CacheBuildConfig, DistillConfig
from crossdistill.config.validate import validate, validate_cache_build
from crossdistill.errors import ConfigError
from crossdistill.typed import build


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place; ``value`` is parsed as YAML (``2`` int, ``[a]`` list)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. loss.temperature=2.0)")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def _read_recipe(path: str | Path) -> dict[str, Any]:
    """The YAML mapping of a recipe file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe {str(p)!r} does not exist; give the path of a YAML recipe (see recipes/)")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {str(p)!r} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {str(p)!r} must be a mapping of sections (student:, data:, ...)")
    return resolve_recipe_paths(data, p.resolve().parent)


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                validate_paths: bool = True) -> DistillConfig:
    """Read a YAML recipe (or start from defaults), apply overrides, build and validate the config."""
    data = _read_recipe(path) if path is not None else {}
    for item in overrides:
        apply_override(data, item)
    cfg = _with_absolute_paths(build_config(data))
    validate_config(cfg, check_paths=validate_paths)
    return cfg


def _with_absolute_paths(cfg: DistillConfig) -> DistillConfig:
    """The config with every relative path (from overrides, the Python API or a default) made absolute against the
    current directory: a loaded config, and the ``resolved_config.yaml`` a run writes, mean the same from anywhere."""
    return build_config(absolute_paths(cfg.to_dict()))


def config_from_dict(data: dict[str, Any], validate_paths: bool = True) -> DistillConfig:
    """Build and validate a config from a plain dict (the Python API); relative paths are made absolute against the
    current directory."""
    cfg = _with_absolute_paths(build_config(data))
    validate_config(cfg, check_paths=validate_paths)
    return cfg


def build_config(data: dict[str, Any]) -> DistillConfig:
    """Type-check ``data`` into a :class:`DistillConfig` (no range checks), refusing renamed sections by name."""
    for old, (new, why) in RENAMED_SECTIONS.items():
        if old in data:
            raise ConfigError(f"config key {old!r} was renamed to {new!r} ({why}); got {old}={data[old]!r}: rename the "
                              f"recipe's {old}: section to {new}: (and {old}.KEY=VALUE overrides to {new}.KEY=VALUE)")
    return build(DistillConfig, data)


# ------------------------------------------------------------------------------------------- crossdistill cache
def _cache_build_override(item: str) -> str:
    """``crossdistill cache`` shorthand: a key without a dot (``k=64``) is a ``cache_build`` field."""
    key, sep, value = item.partition("=")
    return f"cache_build.{key.strip()}{sep}{value}" if sep and "." not in key else item


def _resolved_cache_build(cfg: DistillConfig) -> CacheBuildConfig:
    settings = cfg.resolved_cache_build()
    validate_cache_build(settings)
    return settings


def load_cache_build_config(path: str | Path | None = None,
                            overrides: list[str] | tuple[str, ...] = ()) -> CacheBuildConfig:
    """What ``crossdistill cache RECIPE [key=value ...]`` runs with: the recipe's ``cache_build:`` section,
    completed from its ``teacher.model``, ``data.train`` and ``data.max_length``, type- and range-checked.

    ``overrides`` are dotted like any recipe override (``data.max_length=64``); a key without a dot is a
    ``cache_build`` field (``k=64`` means ``cache_build.k=64``). The rest of the recipe is type-checked but not
    validated: the cache a training section reads (``teacher.cache``) is typically the one being built.
    """
    data = _read_recipe(path) if path is not None else {}
    for item in overrides:
        apply_override(data, _cache_build_override(item))
    return _resolved_cache_build(build_config(data))


def cache_build_from_dict(settings: dict[str, Any]) -> CacheBuildConfig:
    """The Python API of :func:`load_cache_build_config`: ``settings`` are ``cache_build`` fields (``teacher``,
    ``data`` and ``output`` required; ``max_length`` defaults to ``data.max_length``'s default)."""
    return _resolved_cache_build(build_config({"cache_build": dict(settings)}))


def validate_config(cfg: DistillConfig, check_paths: bool = True) -> None:
    """:func:`validate` for one run, or every stage of a ``chain:`` recipe."""
    if cfg.chain is not None:
        chain_stages(cfg, check_paths)
    else:
        validate(cfg, check_paths=check_paths)
