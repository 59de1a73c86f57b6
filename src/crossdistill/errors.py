"""Errors that any layer may raise: they sit at the bottom of the import graph so that a method's parameter check,
a config check and a loader all refuse bad input with the same exception type."""

from __future__ import annotations


class ConfigError(ValueError):
    """A recipe or override that cannot work; the message names the field, the value and the fix."""
