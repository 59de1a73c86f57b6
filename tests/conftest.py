"""Shared fixtures: tiny tokenizers and models built in-process, saved once per session, loaded via from_pretrained.

`pytest`                 unit + end-to-end tests on tiny models (the default; no network, a few minutes on 2 cores)
`pytest --runslow`       also the tests marked `slow`, which use real pretrained models shipped in registry packages
"""

from __future__ import annotations

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

from crossdistill.testing.tiny import save_model, save_tokenizer
from crossdistill.train.tiny_assets import chat_examples

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
    * ``teacher_bpe_padded`` the teacher with 7 padding rows in its head (vocabulary padding)
    """
    return {
        "teacher_bpe": save_model("llama", tokenizer_paths["bpe"], tiny_dir / "teacher_bpe", hidden=48, seed=1),
        "student_bpe": save_model("qwen2", tokenizer_paths["bpe"], tiny_dir / "student_bpe", hidden=32, seed=2),
        "student_unigram": save_model("mistral", tokenizer_paths["unigram"], tiny_dir / "student_unigram", seed=3),
        "student_wordpiece": save_model("gpt2", tokenizer_paths["wordpiece"], tiny_dir / "student_wordpiece", seed=4),
        "teacher_bpe_padded": save_model("llama", tokenizer_paths["bpe"], tiny_dir / "teacher_bpe_padded",
                                         hidden=48, seed=1, vocab_pad=7),
    }


@pytest.fixture(scope="session")
def chat_data(tmp_path_factory):
    """jsonl with 24 short conversations."""
    path = tmp_path_factory.mktemp("train-data") / "chat.jsonl"
    path.write_text("".join(json.dumps(e) + "\n" for e in chat_examples(24)))
    return path


@pytest.fixture(scope="session")
def overrides(model_paths, chat_data):
    """``overrides(out_dir, *extra)``: a same-tokenizer teacher/student run with tiny batches and no loggers."""

    def make(out_dir, *extra, teacher="teacher_bpe", student="student_bpe"):
        base = [f"student.model={model_paths[student]}", f"data.train={chat_data}", "train.max_steps=3",
                "train.per_device_batch_size=4", f"train.output_dir={out_dir}", "train.report_to=[]",
                "train.learning_rate=5e-3", "train.progress_bar=false", "data.eval_fraction=0.1"]
        if teacher:
            base.append(f"teacher.model={model_paths[teacher]}")
        return base + list(extra)

    return make
