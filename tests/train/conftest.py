"""Fixtures for training tests: a small chat dataset and config overrides for the tiny model pairs."""

from __future__ import annotations

import json

import pytest

from crossdistill.train.tiny_assets import chat_examples


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
