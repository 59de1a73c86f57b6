"""Typed dataclasses from plain mappings: the one parser behind recipes (:mod:`crossdistill.config`) and method
parameters (:mod:`crossdistill.methods`). Wrong types and unknown keys raise :class:`ConfigError` naming the dotted
field, the value and what is expected (with a spelling suggestion for unknown keys)."""

from __future__ import annotations

import difflib
import math
import types
import typing
from dataclasses import MISSING, fields, is_dataclass
from typing import Any, Literal

from crossdistill.errors import ConfigError


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and build nested dataclasses; raise ConfigError otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        sections = [e for a, e in zip([a for a in args if a is not type(None)], errors) if is_dataclass(a)]
        if isinstance(value, dict) and len(sections) == 1:  # a mapping means the section: say what is wrong in it
            raise sections[0]
        raise ConfigError(f"{where}={value!r} has the wrong type: expected {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}={value!r} is not allowed: choose one of {list(choices)}")
        return value
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a mapping of {tp.__name__} fields")
        return build(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a mapping")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a list")
        (et,) = typing.get_args(tp)
        return [_coerce(v, et, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a number (float)")
        if not math.isfinite(value):  # NaN compares false with every bound, so range checks would let it through
            raise ConfigError(f"{where}={value!r} is not a finite number; give a finite value")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a string")
        return value
    raise TypeError(f"config type {tp!r} at {where} is not supported")  # a bug in this module, not user input


def build(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys (with a spelling suggestion) and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {(where + '.' if where else '') + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {path!r}{hint} Valid keys here: {names}")
        kwargs[key] = _coerce(value, hints[key], path)
    for f in fields(cls):  # dataclass-typed optional sections given as {} still become dataclasses
        if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"missing required config key {(where + '.' if where else '') + f.name!r}")
    return cls(**kwargs)
