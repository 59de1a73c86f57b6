"""``CacheConfig``: what ``crossdistill cache RECIPE`` reads from a recipe.

A recipe may be a dedicated cache recipe (these fields at the top level) or a training recipe with a ``cache:``
section; ``teacher`` and ``data`` are then taken from the training recipe when the section does not set them (a
string, or a mapping with ``name``/``path``). ``key=value`` overrides use the same field names.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

SUPPORTS = ("topk", "sampled")
VALUE_DTYPES = ("fp16", "bf16", "fp32")
TEACHER_DTYPES = ("float32", "bfloat16", "float16")


@dataclass(kw_only=True)
class CacheConfig:
    """Settings of one cache run. Validated in ``__post_init__`` before any model loads."""

    teacher: str
    """Teacher model: a local directory, a Hub id, or a ``.gguf`` file."""
    data: str
    """Dataset: a ``.jsonl`` file whose rows have ``messages``, ``prompt`` + ``completion``, or ``text``."""
    output: str
    """Cache directory (created; shards + ``manifest.json``)."""
    k: int = 32
    """Teacher entries kept per completion token (top-k ids, or sampled draws for ``support: sampled``)."""
    support: str = "topk"
    """``topk``: the k most likely ids + the log of the remaining mass. ``sampled``: k draws from the teacher
    distribution (RS-KD, unbiased), stored as unique ids with draw counts."""
    temperature: float = 1.0
    """Distillation temperature the stored log-probs are computed at (softmax(logits / T)). Training must use the
    same one; it is in the manifest. Not a sampling temperature."""
    value_dtype: str = "fp16"
    """Storage of log-prob values: ``fp16`` (default; 8x finer than bf16 on log-probs in [-65504, 0], same bytes),
    ``bf16``, or ``fp32`` (exact, for checks)."""
    examples_per_shard: int = 256
    """Examples per shard: the unit of atomic writing, checksumming, resuming and reading."""
    batch_size: int = 8
    """Examples per teacher forward pass."""
    max_length: int = 2048
    """Longest teacher sequence (prompt + completion); longer completions are cut from the right exactly as
    :func:`crossdistill.data.render.render` cuts them for training (taken from ``data.max_length`` of a training
    recipe when the ``cache:`` section does not set it)."""
    seed: int = 0
    """Seed of the sampled support (each example draws from its own generator seeded by (seed, index))."""
    teacher_dtype: str = "float32"
    """Dtype the teacher runs in (``float32``, ``bfloat16``, ``float16``)."""
    device: str = "auto"
    """``auto`` (accelerate's device / cuda when present / cpu), or a torch device string."""
    limit: int | None = None
    """Use only the first ``limit`` examples of the dataset (None: all)."""
    workers: int = 1
    """Local worker processes, each with its own teacher copy, writing every ``workers``-th shard."""

    def __post_init__(self) -> None:
        def bad(name: str, value: Any, fix: str) -> ValueError:
            return ValueError(f"cache.{name} = {value!r} is invalid: {fix}")

        for name in ("teacher", "data", "output"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise bad(name, getattr(self, name), "give a non-empty path or id")
        if not isinstance(self.k, int) or self.k < 1:
            raise bad("k", self.k, "use a positive integer such as 32")
        if self.support not in SUPPORTS:
            raise bad("support", self.support, f"use one of {SUPPORTS}")
        if self.support == "sampled" and self.k > 255:
            raise bad("k", self.k, "sampled support stores draw counts in uint8; use k <= 255")
        if not (isinstance(self.temperature, (int, float)) and math.isfinite(self.temperature)
                and self.temperature > 0):
            raise bad("temperature", self.temperature, "use a positive number such as 1.0")
        if self.value_dtype not in VALUE_DTYPES:
            raise bad("value_dtype", self.value_dtype, f"use one of {VALUE_DTYPES}")
        if self.teacher_dtype not in TEACHER_DTYPES:
            raise bad("teacher_dtype", self.teacher_dtype, f"use one of {TEACHER_DTYPES}")
        for name in ("examples_per_shard", "batch_size", "max_length", "workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise bad(name, value, "use a positive integer")
        if self.limit is not None and (not isinstance(self.limit, int) or self.limit < 1):
            raise bad("limit", self.limit, "use a positive integer or null")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "CacheConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"unknown cache setting(s) {unknown}; known settings are {sorted(known)}")
        return cls(**raw)


def _coerce(text: str) -> Any:
    """``key=value`` values are parsed as YAML scalars (``32`` -> int, ``null`` -> None, ``a/b`` -> str)."""
    return yaml.safe_load(text)


def _name_of(section: Any) -> str | None:
    if isinstance(section, str):
        return section
    if isinstance(section, dict):
        for key in ("path", "name", "model", "train", "file"):
            if isinstance(section.get(key), str):
                return section[key]
    return None


def load_cache_config(path: str | Path | None, overrides: list[str] = ()) -> CacheConfig:
    """Read a YAML recipe (dedicated or a training recipe with a ``cache:`` section) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"recipe {path} does not exist")
        doc = yaml.safe_load(path.read_text()) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"recipe {path} must be a YAML mapping, got {type(doc).__name__}")
        if isinstance(doc.get("cache"), dict):
            raw = dict(doc["cache"])
            for key in ("teacher", "data"):
                if key not in raw and _name_of(doc.get(key)) is not None:
                    raw[key] = _name_of(doc[key])
            if "max_length" not in raw:  # render exactly as training will (same truncation)
                data = doc.get("data") if isinstance(doc.get("data"), dict) else {}
                if "max_length" in data:
                    raw["max_length"] = data["max_length"]
                else:
                    from crossdistill.config import DataConfig

                    raw["max_length"] = DataConfig().max_length
        else:
            raw = dict(doc)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"override {item!r} must look like key=value (e.g. k=64)")
        key = key.removeprefix("cache.")
        raw[key] = _coerce(value)
    missing = [n for n in ("teacher", "data", "output") if n not in raw]
    if missing:
        raise ValueError(f"cache recipe is missing {missing}; set them in the recipe or as key=value overrides")
    return CacheConfig.from_dict(raw)
