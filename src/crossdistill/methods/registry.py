"""The method registry: ``loss.name`` -> :class:`~crossdistill.methods.base.Method`.

The built-in methods are registered by :mod:`crossdistill.methods` when it is imported; a user registers their own
with :func:`register` before building a config that names it (docs/design.md, "Adding a method")."""

from __future__ import annotations

from crossdistill.errors import ConfigError
from crossdistill.methods.base import Method

METHODS: dict[str, Method] = {}
"""Every registered method by name."""


def register(method: Method, *, replace: bool = False) -> Method:
    """Add ``method`` under ``method.name``; registering another method under a taken name raises unless
    ``replace``. Returns the method (so a module can write ``METHOD = register(Method(...))``)."""
    if not isinstance(method, Method):
        raise TypeError(f"register() takes a crossdistill.methods.Method, got {type(method).__name__}")
    unknown = sorted(set(method.sample_terms) - set(method.default_weights))
    if unknown:  # a misspelt sample term would silently stay on for the student's own samples
        raise ValueError(f"method {method.name!r}: sample_terms {unknown} are not among its terms "
                         f"{sorted(method.default_weights)}")
    old = METHODS.get(method.name)
    if old is not None and old is not method and not replace:
        raise ValueError(f"method {method.name!r} is already registered (by {old.loss.__module__}); pick another "
                         "name or pass replace=True")
    METHODS[method.name] = method
    return method


def unregister(name: str) -> None:
    """Remove a method (tests and notebooks that registered a temporary one)."""
    METHODS.pop(name, None)


def get_method(name: str) -> Method:
    """The method registered under ``name``; the error lists what exists."""
    if name not in METHODS:
        raise ConfigError(f"loss.name={name!r} is not a registered method; choose one of {sorted(METHODS)} "
                          "(or register your own with crossdistill.methods.register)")
    return METHODS[name]


def cross_tokenizer_methods() -> list[str]:
    """Names of the methods that work with any tokenizer pair."""
    return sorted(n for n, m in METHODS.items() if m.cross_tokenizer)


def sparse_teacher_methods() -> list[str]:
    """Names of the methods that train from a sparse teacher signal (a cache)."""
    return sorted(n for n, m in METHODS.items() if m.sparse_teacher)
