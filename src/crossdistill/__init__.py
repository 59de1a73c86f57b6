"""crossdistill: distill a large language model into a smaller one, across tokenizers.

    import crossdistill as cd
    record = cd.distill("recipes/tiny.yaml", ["loss.name=forward_kl", "onpolicy.lmbda=0"])

The public API lives in :mod:`crossdistill.api` (``distill``, ``generate``, ``build_cache``, ``evaluate``,
``align_report``, ``transfer_tokenizer``, the method registry: ``list_methods``, ``get_method``, ``register``,
``Method``) and is re-exported here. Heavy modules (torch, transformers) load only when one of these names is first
used, so ``import crossdistill`` and the CLI's ``--help`` stay instant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from crossdistill.version import __version__

__all__ = ["DistillConfig", "Method", "__version__", "align_report", "build_cache", "distill", "evaluate", "generate",
           "get_method", "list_methods", "load_config", "register", "transfer_tokenizer"]

if TYPE_CHECKING:
    from crossdistill.api import (
        DistillConfig,
        Method,
        align_report,
        build_cache,
        distill,
        evaluate,
        generate,
        get_method,
        list_methods,
        load_config,
        register,
        transfer_tokenizer,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from crossdistill import api

        return getattr(api, name)
    raise AttributeError(f"module 'crossdistill' has no attribute {name!r}")
