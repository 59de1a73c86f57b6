"""Rendered datasets and collation of student + teacher batches."""

from __future__ import annotations

import torch

from crossdistill.data.dataset import DistillCollator, RenderedDataset, split_teacher
from crossdistill.positions import count_targets

EXAMPLES = [{"messages": [{"role": "user", "content": "What is 2 plus 3?"},
                          {"role": "assistant", "content": "The answer is 5."}]},
            {"prompt": "Say hi: ", "completion": "hi"},
            {"text": "Plain text is all target."}]


def test_same_tokenizer_batch(tokenizers):
    tok = tokenizers["bpe"]
    ds = RenderedDataset(EXAMPLES, tok, None, 64, progress=False)
    batch = DistillCollator(tok.pad_token_id)([ds[i] for i in range(3)])
    assert split_teacher(batch) is None
    assert batch["example_index"].tolist() == [0, 1, 2]
    labels, attn = batch["labels"], batch["attention_mask"]
    assert (labels[attn == 0] == -100).all()  # padding is never a target
    for b, it in enumerate(ds.items):
        s = it.student
        assert (labels[b, : s.completion_start] == -100).all()  # prompt is never a target
        assert labels[b, s.completion_start:len(s.input_ids)].tolist() == s.input_ids[s.completion_start:]
    # the chat example renders the prompt with the tokenizer's own template
    assert ds.items[0].student.prompt_text.startswith("<|im_start|>user")


def test_cross_tokenizer_batch_has_teacher_rendering(tokenizers):
    s_tok, t_tok = tokenizers["unigram"], tokenizers["bpe"]
    ds = RenderedDataset(EXAMPLES[:2], s_tok, t_tok, 64, progress=False)
    batch = DistillCollator(s_tok.pad_token_id, t_tok.pad_token_id)([ds[0], ds[1]])
    tb = split_teacher(batch)
    assert tb is not None and set(tb) >= {"input_ids", "attention_mask", "labels", "spans", "completion_start"}
    assert ds.items[0].teacher.prompt_text.startswith("<|im_start|>")  # teacher: its own (ChatML) template
    assert "<start_of_turn>" in ds.items[0].student.prompt_text  # student: its own (turn) template
    # both sides cover the same completion text
    for it in ds.items:
        assert it.student.covered == it.teacher.covered == len(it.completion)
    assert count_targets(batch["labels"]) > 0 and count_targets(tb["labels"]) > 0
    assert torch.equal(batch["example_index"], torch.tensor([0, 1]))
