"""Shared fixtures: tiny tokenizers and models built in-process, saved once per session, loaded via from_pretrained.

`pytest`                 unit + end-to-end tests on tiny models (the default; no network, a few minutes on 2 cores)
`pytest --runslow`       also the tests marked `slow`, which use real pretrained models shipped in registry packages
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from crossdistill.testing.tiny import save_model, save_tokenizer

TOKENIZER_KINDS = ("bpe", "unigram", "wordpiece")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests that use real models")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="uses a real pretrained model; run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny")


@pytest.fixture(scope="session")
def tokenizer_paths(tiny_dir):
    """``{"bpe": path, "unigram": path, "wordpiece": path}``: saved tokenizers of the three families."""
    return {kind: save_tokenizer(kind, tiny_dir / f"tok-{kind}") for kind in TOKENIZER_KINDS}


@pytest.fixture(scope="session")
def tokenizers(tokenizer_paths):
    """The three tokenizers loaded through ``AutoTokenizer.from_pretrained``."""
    from transformers import AutoTokenizer

    return {kind: AutoTokenizer.from_pretrained(path) for kind, path in tokenizer_paths.items()}


@pytest.fixture(scope="session")
def model_paths(tiny_dir, tokenizer_paths):
    """Saved tiny models (tokenizer saved alongside):

    * ``teacher_bpe``  Llama-style, byte-level BPE, hidden 48, 2 layers
    * ``student_bpe``  Qwen2-style, same tokenizer (same-vocabulary pair with the teacher above), hidden 32
    * ``student_unigram`` Mistral-style (tied embeddings) with the SentencePiece-style tokenizer (cross-tokenizer
      pair), hidden 32; not Qwen2: transformers 5 would load its tokenizer as a byte-level Qwen2Tokenizer
    * ``student_wordpiece`` GPT-2-style with the WordPiece tokenizer, hidden 32
    * ``teacher_bpe_padded`` the teacher with 7 padding rows in its head (contract 5)
    """
    return {
        "teacher_bpe": save_model("llama", tokenizer_paths["bpe"], tiny_dir / "teacher_bpe", hidden=48, seed=1),
        "student_bpe": save_model("qwen2", tokenizer_paths["bpe"], tiny_dir / "student_bpe", hidden=32, seed=2),
        "student_unigram": save_model("mistral", tokenizer_paths["unigram"], tiny_dir / "student_unigram", seed=3),
        "student_wordpiece": save_model("gpt2", tokenizer_paths["wordpiece"], tiny_dir / "student_wordpiece", seed=4),
        "teacher_bpe_padded": save_model("llama", tokenizer_paths["bpe"], tiny_dir / "teacher_bpe_padded",
                                         hidden=48, seed=1, vocab_pad=7),
    }
