"""crossdistill: distill a large language model into a smaller one, across tokenizers.

    from crossdistill import DistillConfig, distill, load_config
    record = distill(load_config("recipes/tiny.yaml", ["loss.name=forward_kl"]))

Heavy modules (torch, transformers) load only when one of these names is first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossdistill.version import __version__
__all__ = ["DistillConfig", "distill", "load_config", "__version__"]

if TYPE_CHECKING:
    from crossdistill.config import DistillConfig, load_config


def distill(config: DistillConfig | str | None, overrides: list[str] | tuple[str, ...] = (), resume: bool = False
            ) -> dict[str, Any]:
    """Train the student described by ``config``: a :class:`DistillConfig`, a YAML recipe path, or ``None`` (the
    defaults) — recipe and ``None`` take dotted ``key=value`` ``overrides``.

    Returns the run record that was appended to ``runs.jsonl`` (sizes, tokens, validation losses, bits per byte).
    """
    from crossdistill.config import DistillConfig, load_config
    from crossdistill.train.run import run_training

    if not isinstance(config, DistillConfig):
        config = load_config(config, list(overrides))
    elif overrides:
        raise ValueError("overrides: pass key=value overrides together with a recipe path, not with a DistillConfig "
                         "(set the fields on the object instead)")
    return run_training(config, resume=resume)


def __getattr__(name: str) -> Any:
    if name in ("DistillConfig", "load_config"):
        from crossdistill import config

        return getattr(config, name)
    raise AttributeError(f"module 'crossdistill' has no attribute {name!r}")
