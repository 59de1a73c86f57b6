"""Fixtures for the teacher-cache tests: a small mixed-format dataset and caches built from the tiny teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from crossdistill.config import cache_build_from_dict
from crossdistill.teacher.writer import build_cache
from crossdistill.testing.tiny import CORPUS


def write_dataset(path: Path, n: int = 8, shift: int = 0) -> Path:
    """``n`` examples cycling through the three formats (messages, prompt+completion, text), unicode included."""
    rows = []
    for i in range(n):
        a, b = CORPUS[(i + shift) % 11], CORPUS[(i + shift + 4) % 11]
        if i % 3 == 0:
            rows.append({"messages": [{"role": "user", "content": a}, {"role": "assistant", "content": b}]})
        elif i % 3 == 1:
            rows.append({"prompt": a, "completion": b})
        else:
            rows.append({"text": a})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def cache_dataset(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("cache-data") / "data.jsonl")


@pytest.fixture(scope="session")
def make_cache(model_paths, cache_dataset, tmp_path_factory):
    """``make_cache(name, **settings) -> (CacheBuildConfig, Manifest)``: build a cache of the tiny BPE teacher."""

    def make(name: str, **settings):
        out = tmp_path_factory.mktemp("caches") / name
        base = dict(teacher=str(model_paths["teacher_bpe"]), data=str(cache_dataset), output=str(out), k=8,
                    examples_per_shard=3, batch_size=2)
        cfg = cache_build_from_dict({**base, **settings})
        return cfg, build_cache(cfg, progress=False)

    return make


@pytest.fixture(scope="session")
def topk_cache(make_cache):
    """The default-format (fp16 values) top-8 cache, 8 examples in 3 shards."""
    return make_cache("topk")


@pytest.fixture(scope="session")
def student_same_vocab(tokenizer_paths, tiny_dir):
    """A Llama-style student that loads EXACTLY the teacher's tokenizer.

    (``model_paths["student_bpe"]`` is a Qwen2 model: transformers 5 rebuilds its tokenizer as a Qwen2 tokenizer
    with an NFC normalizer and Qwen's pre-tokenizer regex, so its hash — and some tokenizations — differ.)
    """
    from crossdistill.testing.tiny import save_model

    return save_model("llama", tokenizer_paths["bpe"], tiny_dir / "student_bpe_llama", hidden=32, seed=2)


@pytest.fixture(scope="session")
def dataset_writer():
    """:func:`write_dataset` itself (``from conftest import ...`` resolves to whichever tests/*/conftest.py pytest
    imported first, so it breaks when tests/teacher runs together with tests/train)."""
    return write_dataset


@pytest.fixture(scope="session")
def served_teacher_path(tokenizer_paths, tiny_dir):
    """A Llama-style teacher with the byte-level BPE tokenizer that a vLLM CPU server can load (head size 32; the
    CPU attention kernels refuse the 12 of ``model_paths["teacher_bpe"]``)."""
    from crossdistill.testing.tiny import save_model

    return save_model("llama", tokenizer_paths["bpe"], tiny_dir / "teacher_served", hidden=64, heads=2, seed=1)


@pytest.fixture(scope="session")
def vllm_server(served_teacher_path):
    """A real vLLM server on 127.0.0.1 (a free port) serving :func:`served_teacher_path` as ``tiny-teacher``, for the
    whole session; stopped at the end. Skipped only when the vLLM environment is missing (``bash scripts/setup.sh
    dev`` creates it); under CI (``CI`` set) a missing environment fails instead, so CI never skips these silently."""
    import os

    from crossdistill.testing.vllm_server import VLLMServer, vllm_python

    if vllm_python() is None:
        reason = "no vLLM environment (.venv-vllm): run `bash scripts/setup.sh dev` to create it"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = VLLMServer(served_teacher_path, served_name="tiny-teacher", max_logprobs=64, max_model_len=512)
    server.start(timeout=600)
    yield server
    server.stop()
