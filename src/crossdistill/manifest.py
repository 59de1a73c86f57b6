"""Provenance manifests for caches, generated datasets and trained students.

A manifest records what an artifact was made from: the teacher, hashes of the tokenizers, the chat templates, the
temperatures, k, a fingerprint of the dataset, the format version and the tool version. Whoever loads the artifact
builds the manifest it *expects* from its own config and calls :meth:`Manifest.check`, which refuses a mismatch with
one line per differing field (what the artifact has, what was expected, and how to fix it).

The file is canonical JSON (sorted keys, no timestamps) so two runs that make the same artifact write the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from crossdistill.io import write_text

MANIFEST_NAME = "manifest.json"

# Fields whose difference never makes an artifact unusable; reported by `diff`, never raised by `check`.
INFORMATIONAL = frozenset({"tool_version", "files"})


class ManifestMismatchError(ValueError):
    """An artifact was made from something other than what the loader expects."""

    def __init__(self, differences: list[str], what: str = "artifact"):
        self.differences = differences
        lines = "\n".join(f"  - {d}" for d in differences)
        super().__init__(
            f"{what} does not match the current config:\n{lines}\n"
            "Rebuild the artifact with the current config, or change the config to match the artifact."
        )


@dataclass(kw_only=True)
class Manifest:
    """What an artifact was made from. ``None`` (or an empty dict) means "not applicable / not recorded"."""

    kind: str
    """What the artifact is: ``"cache"``, ``"dataset"`` or ``"student"``."""
    format_version: int
    """Version of the artifact's on-disk format; a reader refuses versions it does not know."""
    tool_version: str = ""
    """``crossdistill.__version__`` that wrote it (informational)."""
    teacher: str | None = None
    """Teacher id as given by the user (Hub id, directory or GGUF file name)."""
    tokenizer_hashes: dict[str, str] = field(default_factory=dict)
    """Role (``"teacher"``, ``"student"``) -> :func:`tokenizer_hash` of that tokenizer."""
    chat_templates: dict[str, str | None] = field(default_factory=dict)
    """Role -> :func:`text_hash` of the chat template used to render prompts (``None``: plain concatenation)."""
    temperatures: dict[str, float] = field(default_factory=dict)
    """Named temperatures, e.g. ``{"distillation": 1.0}`` for a cache, ``{"sampling": 0.7}`` for generations."""
    k: int | None = None
    """Number of teacher entries kept per token (top-k or sampled support), when relevant."""
    dataset_fingerprint: str | None = None
    """:func:`dataset_fingerprint` of the examples the artifact was made from."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Artifact-specific settings that must match (e.g. the cache's support kind); compared key by key."""
    files: list[dict[str, Any]] = field(default_factory=list)
    """Per-file records written by the artifact's writer (e.g. shard name, byte size, sha256); never compared."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"manifest has unknown fields {unknown}; it was written by a newer crossdistill")
        return cls(**data)

    def write(self, directory: str | Path) -> Path:
        """Write ``directory/manifest.json`` atomically and return its path."""
        path = Path(directory) / MANIFEST_NAME
        return write_text(path, self.to_json())

    @classmethod
    def read(cls, directory_or_file: str | Path) -> Manifest:
        path = Path(directory_or_file)
        if path.is_dir():
            path = path / MANIFEST_NAME
        if not path.exists():
            raise FileNotFoundError(f"no manifest at {path}: "
                                    "the artifact is incomplete or was not made by crossdistill")
        return cls.from_dict(json.loads(path.read_text()))

    def diff(self, expected: Manifest | dict[str, Any], *, include_informational: bool = False) -> list[str]:
        """Differences between this manifest (found) and ``expected``.

        Only fields (and dict keys) that ``expected`` sets are compared: ``None``, ``{}`` and missing keys mean
        "anything is fine", so a loader states only what it cares about.
        """
        exp = asdict(expected) if isinstance(expected, Manifest) else dict(expected)
        have = asdict(self)
        out: list[str] = []
        for name, want in sorted(exp.items()):
            if name not in have:
                raise KeyError(f"{name!r} is not a manifest field; fields are {sorted(have)}")
            if (name in INFORMATIONAL and not include_informational) or want in (None, {}, []):
                continue
            got = have[name]
            if isinstance(want, dict):
                for key, sub in sorted(want.items()):
                    if sub is None and key not in (got or {}):
                        continue
                    found = (got or {}).get(key, "<absent>")
                    if found != sub:
                        out.append(f"{name}[{key!r}]: artifact has {_short(found)}, expected {_short(sub)}")
            elif got != want:
                out.append(f"{name}: artifact has {_short(got)}, expected {_short(want)}")
        return out

    def check(self, expected: Manifest | dict[str, Any], what: str | None = None) -> None:
        """Raise :class:`ManifestMismatchError` naming every field that differs from ``expected``."""
        differences = self.diff(expected)
        if differences:
            raise ManifestMismatchError(differences, what or f"{self.kind} (teacher {self.teacher!r})")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# ----------------------------------------------------------------------------------------------------------- hashes
def text_hash(text: str | None) -> str | None:
    """sha256 of a string (e.g. a chat template); ``None`` stays ``None``."""
    return None if text is None else hashlib.sha256(text.encode()).hexdigest()


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of what decides how a tokenizer maps text to ids (model, normalizer, added tokens, special tokens).

    Fast tokenizers are hashed through their canonical ``tokenizers`` JSON, so the same tokenizer saved to two
    directories hashes the same, and any change to the vocabulary, merges or special tokens changes the hash.
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(f"tokenizer_hash needs a fast (Rust-backed) tokenizer, got {type(tokenizer).__name__}")
    # The pad token is left out: loaders set it to EOS when missing, which changes no id of any text.
    specials = {name: str(getattr(tokenizer, name, None)) for name in ("bos_token", "eos_token")}
    payload = backend.to_str() + json.dumps(specials, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def vocab_hash(tokenizer: Any) -> str:
    """sha256 of the id <-> token-string map only (``get_vocab``): equal for two loadings of one vocabulary whose
    normalizer or pre-tokenizer differ (which changes how text is split, not what an id means)."""
    items = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256(json.dumps(items, ensure_ascii=False).encode()).hexdigest()


def dataset_fingerprint(examples: Iterable[Any]) -> str:
    """sha256 over the canonical JSON of every example, in order (so reordering is a different dataset)."""
    h = hashlib.sha256()
    n = 0
    for example in examples:
        h.update(json.dumps(example, sort_keys=True, ensure_ascii=False, default=str).encode())
        h.update(b"\n")
        n += 1
    return f"{h.hexdigest()}:{n}"
