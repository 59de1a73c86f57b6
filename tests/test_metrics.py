"""Completion NLL and bits per byte against a full-logits reference. Run: python -m pytest tests/test_metrics.py -q"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM

from crossdistill import metrics, models
from crossdistill.data.render import collate_rendered, render
from crossdistill.positions import shift_targets

EXAMPLES = [([{"role": "user", "content": "Name a drink."}], "café au lait"), ("Count: ", "1 2 3 🙂"),
            ("Q: hi", "The quick brown fox jumps over the lazy dog.")]


@pytest.fixture(scope="module")
def padded(model_paths, tokenizers):
    """The tiny teacher whose head has 7 rows beyond the tokenizer, a batch of three examples, and its hidden states."""
    model = AutoModelForCausalLM.from_pretrained(model_paths["teacher_bpe_padded"]).eval()
    tok = tokenizers["bpe"]
    batch = collate_rendered([render(tok, p, c) for p, c in EXAMPLES], tok.pad_token_id)
    with torch.no_grad():
        hidden = models.hidden_states(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return model, tok, batch, hidden, logits


def reference(logits: torch.Tensor, labels: torch.Tensor, vocab: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token NLL and argmax from full ``[B, T, V']`` logits (real vocabulary only)."""
    targets, mask = shift_targets(labels)
    rows = logits[mask].float()[:, :vocab]
    return F.cross_entropy(rows, targets[mask], reduction="none"), rows.argmax(-1)


@pytest.mark.parametrize("chunk", [1, 5, 4096])
def test_token_nll_matches_full_logits_whatever_the_chunk(padded, chunk):
    model, tok, batch, hidden, logits = padded
    w, b, scale = models.head_info(model)
    assert w.shape[0] == len(tok) + 7
    nll, top = metrics.token_nll(hidden, w, b, scale, len(tok), batch["labels"], chunk, with_argmax=True)
    ref_nll, ref_top = reference(logits, batch["labels"], len(tok))
    torch.testing.assert_close(nll, ref_nll, rtol=1e-5, atol=1e-5)
    assert torch.equal(top, ref_top) and int(top.max()) < len(tok)
    assert metrics.token_nll(hidden, w, b, scale, len(tok), batch["labels"], chunk)[1] is None


def test_per_row_ce_sums_each_rows_targets(padded):
    model, tok, batch, hidden, logits = padded
    w, b, scale = models.head_info(model)
    ce = metrics.per_row_ce(hidden, w, b, scale, len(tok), batch["labels"], 3)
    ref_nll, _ = reference(logits, batch["labels"], len(tok))
    counts = shift_targets(batch["labels"])[1].sum(1).tolist()
    expected = torch.stack([part.sum() for part in ref_nll.split(counts)])
    assert ce.shape == (3,) and ce.dtype == torch.float32
    torch.testing.assert_close(ce, expected, rtol=1e-5, atol=1e-5)


def test_softcap_and_scale_are_applied_like_the_model():
    torch.manual_seed(0)
    hidden, weight = torch.randn(1, 4, 6), torch.randn(10, 6) * 20
    labels = torch.tensor([[-100, 3, 7, 1]])
    nll, _ = metrics.token_nll(hidden, weight, None, 0.5, None, labels, 2, softcap=3.0)
    z = torch.tanh(hidden[0, :3] @ weight.T * 0.5 / 3.0) * 3.0
    torch.testing.assert_close(nll, F.cross_entropy(z, torch.tensor([3, 7, 1]), reduction="none"))


def test_no_targets_gives_empty_results():
    nll, top = metrics.token_nll(torch.zeros(2, 3, 4), torch.zeros(5, 4), None, 1.0, 5,
                                 torch.full((2, 3), -100), 8, with_argmax=True)
    assert nll.shape == (0,) and top.shape == (0,)
    assert metrics.per_row_ce(torch.zeros(2, 3, 4), torch.zeros(5, 4), None, 1.0, 5, torch.full((2, 3), -100),
                              8).tolist() == [0.0, 0.0]


def test_bits_per_byte_and_completion_bytes(tokenizers):
    assert metrics.bits_per_byte(math.log(2) * 10, 5) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="positive number of bytes"):
        metrics.bits_per_byte(1.0, 0)
    tok = tokenizers["bpe"]
    full = render(tok, "Q: ", "café au lait")
    assert metrics.completion_bytes(full) == len("café au lait".encode()) == 13
    cut = render(tok, "Q: ", "café au lait", max_length=len(full.input_ids) - 3)  # completion truncated
    assert "truncated" in cut.flags
    assert metrics.completion_bytes(cut) == len("café au lait"[: cut.covered].encode("utf-8")) < 13


def test_eval_and_validation_share_the_numbers(padded):
    """``crossdistill eval`` (forward_outputs) and training validation (per_row_ce) give the same NLL sums."""
    from crossdistill.evaluation import forward_outputs

    model, tok, batch, hidden, _ = padded
    records = [{"prompt": p, "completion": c} for p, c in EXAMPLES]
    out = forward_outputs(model, tok, records, batch_size=2, progress=False)
    w, b, scale = models.head_info(model)
    ce = metrics.per_row_ce(hidden, w, b, scale, len(tok), batch["labels"], 1024)
    torch.testing.assert_close(torch.tensor([x.sum() for x in out.nll], dtype=torch.float32), ce,
                               rtol=1e-5, atol=1e-5)
