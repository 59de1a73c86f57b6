"""Typed run configuration: dataclasses (one docstring per field), YAML + ``key=value`` overrides, strict validation.

``load_config(path, overrides)`` reads a recipe, applies dotted overrides (``loss.temperature=2``, values parsed as
YAML), builds the dataclasses with type checks and runs :func:`validate` — all before any model or tokenizer is
loaded. Every error is a :class:`ConfigError` naming the field, the value and the fix. Checks that need tokenizers
(same-vocabulary losses with differing tokenizers) live in :func:`crossdistill.train.pairing.check_pair`.

``load_cache_build_config(path, overrides)`` does the same for ``crossdistill cache``: the recipe's ``cache_build:``
section (how to write a teacher cache), completed from the recipe and checked by :func:`validate_cache_build`.
"""

from crossdistill.config.chain import chain_stages
from crossdistill.config.parse import (
    apply_override,
    build,
    cache_build_from_dict,
    config_from_dict,
    load_cache_build_config,
    load_config,
)
from crossdistill.config.schema import (
    CacheBuildConfig,
    ChainStage,
    DataConfig,
    DistillConfig,
    GenerateConfig,
    LambdaSchedule,
    LoraConfig,
    LossConfig,
    ModelConfig,
    OnPolicyConfig,
    RolloutServerConfig,
    TeacherConfig,
    TeacherServerConfig,
    TrainConfig,
    WeightedTeacherConfig,
)
from crossdistill.config.validate import validate, validate_cache_build
from crossdistill.errors import ConfigError

__all__ = [
    "CacheBuildConfig",
    "ChainStage",
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "GenerateConfig",
    "LambdaSchedule",
    "LoraConfig",
    "LossConfig",
    "ModelConfig",
    "OnPolicyConfig",
    "RolloutServerConfig",
    "TeacherConfig",
    "TeacherServerConfig",
    "TrainConfig",
    "WeightedTeacherConfig",
    "apply_override",
    "build",
    "cache_build_from_dict",
    "chain_stages",
    "config_from_dict",
    "load_cache_build_config",
    "load_config",
    "validate",
    "validate_cache_build",
]
