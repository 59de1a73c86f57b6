"""Typed run configuration: dataclasses (one docstring per field), YAML + ``key=value`` overrides, strict validation.

``load_config(path, overrides)`` reads a recipe, applies dotted overrides (``loss.temperature=2``, values parsed as
YAML), builds the dataclasses with type checks and runs :func:`validate` — all before any model or tokenizer is
loaded. Every error is a :class:`ConfigError` naming the field, the value and the fix. Checks that need tokenizers
(same-vocabulary losses with differing tokenizers) live in :func:`crossdistill.train.run.check_pair`.
"""

from crossdistill.config.parse import apply_override, build, config_from_dict, load_config
from crossdistill.config.schema import (
    ConfigError,
    DataConfig,
    DistillConfig,
    GenerateConfig,
    LoraConfig,
    LossConfig,
    ModelConfig,
    OnPolicyConfig,
    TeacherConfig,
    TrainConfig,
)
from crossdistill.config.validate import validate

__all__ = [
    "ConfigError",
    "DataConfig",
    "DistillConfig",
    "GenerateConfig",
    "LoraConfig",
    "LossConfig",
    "ModelConfig",
    "OnPolicyConfig",
    "TeacherConfig",
    "TrainConfig",
    "apply_override",
    "build",
    "config_from_dict",
    "load_config",
    "validate",
]
