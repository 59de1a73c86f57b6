"""Tokenizer transfer (crossdistill.transfer) on the tiny models of the three tokenizer families, loaded back through
the real ``from_pretrained`` path. Run: python -m pytest tests/test_transfer.py -q"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from crossdistill.align.projection import Retokenizer
from crossdistill.align.vocab_map import token_keys
from crossdistill.transfer import kept_layers, transfer_embeddings, transfer_model


def test_kept_layers_are_evenly_spaced_with_both_ends():
    assert kept_layers(30, None) == list(range(30))
    assert kept_layers(30, 40) == list(range(30))
    assert kept_layers(30, 4) == [0, 10, 19, 29]
    assert kept_layers(5, 1) == [4]
    with pytest.raises(ValueError, match="layers=0"):
        kept_layers(5, 0)


def test_each_token_is_the_mean_of_the_source_pieces_that_spell_it(tokenizers):
    """BPE source -> SentencePiece-style and WordPiece targets: every spelled row equals the hand-computed mean of
    the source rows of its byte-exact pieces; roles map to roles; nothing else is left at the mean."""
    src = tokenizers["bpe"]
    torch.manual_seed(0)
    emb = torch.randn(len(src), 8)
    for kind in ("unigram", "wordpiece"):
        tgt = tokenizers[kind]
        out, stats = transfer_embeddings(emb, src, tgt)
        assert out.shape == (len(tgt), 8)
        keys = token_keys(tgt)
        pieces = Retokenizer(src).pieces(keys)
        checked = 0
        for i, (key, ids) in enumerate(zip(keys, pieces)):
            if ids and not key.startswith(b"\x00special:"):
                torch.testing.assert_close(out[i], emb[ids].mean(0))
                checked += 1
        assert checked == stats.spelled > len(tgt) // 2
        for role in ("eos_token", "pad_token"):
            t, s = getattr(tgt, role), getattr(src, role)
            if t is not None and s is not None:
                torch.testing.assert_close(out[tgt.convert_tokens_to_ids(t)], emb[src.convert_tokens_to_ids(s)])
        assert stats.spelled + stats.special + stats.fallback == len(tgt)


def test_special_map_and_its_errors(tokenizers):
    src, tgt = tokenizers["bpe"], tokenizers["unigram"]
    emb = torch.randn(len(src), 4)
    out, _ = transfer_embeddings(emb, src, tgt, {"<start_of_turn>": "<|im_start|>"})
    torch.testing.assert_close(out[tgt.convert_tokens_to_ids("<start_of_turn>")],
                               emb[src.convert_tokens_to_ids("<|im_start|>")])
    with pytest.raises(ValueError, match="no_such_token"):
        transfer_embeddings(emb, src, tgt, {"<start_of_turn>": "no_such_token"})


def test_same_tokenizer_all_layers_reproduces_the_source(model_paths, tmp_path):
    """Transferring a model to its own tokenizer with every layer kept gives back the same model on text whose
    tokens spell themselves (all of them here), so the logits match."""
    src_dir = model_paths["teacher_bpe"]
    stats = transfer_model(src_dir, src_dir, tmp_path / "same")
    a = AutoModelForCausalLM.from_pretrained(src_dir).eval()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "same").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "same")
    ids = tok("Tom has 12 apples and buys 30 more.", return_tensors="pt").input_ids
    with torch.no_grad():
        torch.testing.assert_close(b(ids).logits, a(ids).logits)
    assert stats.layers == (0, 1)


@pytest.mark.parametrize("target", ["student_unigram", "student_wordpiece"])
def test_cross_family_transfer_loads_and_keeps_the_chosen_layers(model_paths, tmp_path, target):
    src_dir = model_paths["teacher_bpe"]
    out = tmp_path / target
    stats = transfer_model(src_dir, model_paths[target], out, layers=1)
    assert stats.layers == (1,)
    src = AutoModelForCausalLM.from_pretrained(src_dir)
    got = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    assert got.config.num_hidden_layers == 1 and got.config.vocab_size == len(tok)
    assert got.get_input_embeddings().weight.shape == (len(tok), src.config.hidden_size)
    torch.testing.assert_close(got.model.layers[0].mlp.down_proj.weight, src.model.layers[1].mlp.down_proj.weight)
    assert got.generation_config.eos_token_id == tok.eos_token_id
    ids = tok("Mia has 7 apples.", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.isfinite(got(ids).logits).all()


def test_public_api_transfer_tokenizer(model_paths, tmp_path):
    import crossdistill

    stats = crossdistill.transfer_tokenizer(model_paths["teacher_bpe"], model_paths["student_unigram"],
                                            tmp_path / "s", layers=1)
    assert stats["layers"] == (1,) and stats["spelled"] > 0
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "s").config.num_hidden_layers == 1
