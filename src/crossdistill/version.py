"""The package version, at the bottom of the import graph so that every writer of a manifest can record it."""

__version__ = "0.1.0"
