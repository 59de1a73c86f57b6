"""Evaluation metrics against hand computations. Run: python -m pytest tests/test_evaluation.py -q

The "known model" is a GPT-2 whose every weight is zero except the final LayerNorm bias ``b`` and an untied lm_head
``W``: the residual stream stays 0, the final norm outputs ``b`` at every position, so the logits are the same vector
``z = W b`` everywhere — a unigram model whose probabilities we can write down by hand.
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

from crossdistill import evaluation as ev
from crossdistill.data.render import render


def unigram_model(tok, logits: list[float]) -> GPT2LMHeadModel:
    """A GPT-2 whose logits are ``logits`` at every position (see module docstring)."""
    V = len(tok)
    cfg = GPT2Config(vocab_size=V, n_embd=8, n_layer=1, n_head=2, n_positions=128, tie_word_embeddings=False,
                     eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.transformer.ln_f.bias[0] = 1.0  # h = e_0 at every position
        model.lm_head.weight[:, 0] = torch.tensor(logits)  # z = W e_0 = logits
    return model.eval()


@pytest.fixture(scope="module")
def bpe(tokenizer_paths):
    return AutoTokenizer.from_pretrained(tokenizer_paths["bpe"])


def test_bits_per_byte_uniform_model_by_hand(bpe):
    """Uniform model: every target costs ln V nats. 'What is 12 plus 30?' -> 'The answer is 42.'"""
    V = len(bpe)
    model = unigram_model(bpe, [0.0] * V)
    prompt = [{"role": "user", "content": "What is 12 plus 30?"}]
    completion = "The answer is 42."
    out = ev.forward_outputs(model, bpe, [{"prompt": prompt, "completion": completion}], progress=False)
    n_tokens = len(bpe(completion, add_special_tokens=False).input_ids) + 1  # + the end-of-turn token
    expected_nll = n_tokens * math.log(V)
    expected_bpb = expected_nll / (math.log(2) * 17)  # 17 UTF-8 bytes
    assert out.tokens == n_tokens and out.bytes == 17
    assert out.total_nll == pytest.approx(expected_nll, rel=1e-6)
    res = ev.result_from("m", out)
    assert res.bpb == pytest.approx(expected_bpb, rel=1e-6)
    assert res.ce == pytest.approx(math.log(V), rel=1e-6)


def test_bits_per_byte_unigram_model_by_hand(bpe):
    """Non-uniform probabilities, two examples (one with multi-byte characters), sums before dividing."""
    V = len(bpe)
    z = [((i * 7) % 11) / 3.0 for i in range(V)]
    lse = math.log(sum(math.exp(v) for v in z))
    model = unigram_model(bpe, z)
    records = [{"prompt": [{"role": "user", "content": "Name a drink."}], "completion": "café au lait"},
               {"prompt": "Count: ", "completion": "1 2 3 🙂"}]
    out = ev.forward_outputs(model, bpe, records, batch_size=2, progress=False)
    nll = nbytes = 0.0
    for rec in records:
        r = render(bpe, rec["prompt"], rec["completion"])
        targets = r.input_ids[r.completion_start:]  # completion ids + EOS, each predicted by the row before it
        nll += sum(lse - z[y] for y in targets)
        nbytes += len(rec["completion"].encode("utf-8"))
    assert nbytes == 13 + 10  # 12 characters, "é" is 2 bytes; 7 characters, "🙂" is 4 bytes
    assert out.total_nll == pytest.approx(nll, rel=1e-6)
    assert ev.result_from("m", out).bpb == pytest.approx(nll / (math.log(2) * nbytes), rel=1e-6)


def test_batching_and_order_do_not_change_results(bpe, model_paths):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_paths["teacher_bpe"]).eval()
    records = [{"prompt": "Q: " + "x" * i, "completion": "answer " * (1 + i % 3)} for i in range(5)]
    a = ev.forward_outputs(model, bpe, records, batch_size=1, progress=False)
    b = ev.forward_outputs(model, bpe, records, batch_size=4, progress=False)
    for x, y in zip(a.nll, b.nll):
        torch.testing.assert_close(torch.tensor(x), torch.tensor(y), rtol=1e-4, atol=1e-4)


def test_bits_per_byte_rejects_empty_text():
    from crossdistill.metrics import bits_per_byte

    with pytest.raises(ValueError, match="positive number of bytes"):
        bits_per_byte(1.0, 0)


def _token_id(tok, text: str) -> int:
    ids = tok(text, add_special_tokens=False).input_ids
    assert len(ids) == 1, (text, tok.convert_ids_to_tokens(ids))
    return ids[0]


def test_agreement_identical_models_is_one(bpe, model_paths):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_paths["teacher_bpe"]).eval()
    records = [{"prompt": "Q: hi", "completion": "The quick brown fox jumps over the lazy dog."}]
    out = ev.forward_outputs(model, bpe, records, progress=False)
    assert ev.agreement(out, out, bpe, bpe) == 1.0


def test_agreement_across_tokenizers(tokenizers):
    """A Unigram and a BPE unigram-model that always predict the same text -> agreement 1; other text -> 0."""
    from crossdistill.align.vocab_map import token_keys

    s_tok, t_tok = tokenizers["unigram"], tokenizers["bpe"]
    s_keys, t_keys = token_keys(s_tok), token_keys(t_tok)
    s_by_key = {k: i for i, k in enumerate(s_keys) if k and not k.startswith(b"\x00")}
    common = sorted((k for k in t_keys if k in s_by_key and len(k) >= 3), key=lambda k: (-len(k), k))
    same = common[0]  # a multi-character text both vocabularies have as one token
    other = next(k for k in common if not (k.startswith(same) or same.startswith(k)))
    records = [{"prompt": "Say: ", "completion": "the quick brown fox and the lazy dog."}]

    def peaked(tok, idx):
        z = [0.0] * len(tok)
        z[idx] = 10.0
        return unigram_model(tok, z)

    s_out = ev.forward_outputs(peaked(s_tok, s_by_key[same]), s_tok, records, progress=False)
    t_out = ev.forward_outputs(peaked(t_tok, t_keys.index(same)), t_tok, records, progress=False)
    assert ev.agreement(s_out, t_out, s_tok, t_tok) == 1.0
    t_out_other = ev.forward_outputs(peaked(t_tok, t_keys.index(other)), t_tok, records, progress=False)
    assert ev.agreement(s_out, t_out_other, s_tok, t_tok) == 0.0


def test_task_accuracy_greedy_and_scored(bpe):
    seven = _token_id(bpe, "7")
    z = [0.0] * len(bpe)
    z[seven] = 10.0
    model = unigram_model(bpe, z)
    records = [{"prompt": [{"role": "user", "content": "3 + 4?"}], "completion": "7", "answer": 7},
               {"prompt": [{"role": "user", "content": "4 + 4?"}], "completion": "8", "answer": 8},
               {"prompt": [{"role": "user", "content": "no answer field"}], "completion": "x"}]
    acc, n, samples = ev.task_accuracy(model, bpe, records, max_new_tokens=1, progress=False)
    assert (acc, n) == (0.5, 2)
    assert samples[0]["output"] == "7" and samples[0]["correct"] and not samples[1]["correct"]


def test_cli_json_and_table(tmp_path, model_paths, capsys):
    data = tmp_path / "held.jsonl"
    rows = [{"prompt": [{"role": "user", "content": f"What is {a} plus 1?"}], "completion": f"It is {a + 1}.",
             "answer": a + 1} for a in range(3)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = ["--model", str(model_paths["student_unigram"]), "--teacher", str(model_paths["teacher_bpe"]),
            "--data", str(data), "--max-new-tokens", "4", "--quiet"]
    assert ev.main(args + ["--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert set(got) == {"teacher", "student"}
    s = got["student"]
    assert s["bytes"] == sum(len(r["completion"].encode()) for r in rows)
    assert s["bpb"] == pytest.approx(s["nll_nats"] / (math.log(2) * s["bytes"]))
    assert 0.0 <= s["agreement"] <= 1.0 and s["scored"] == 3
    assert ev.main(args + ["--no-generate"]) == 0
    table = capsys.readouterr().out
    assert "bits/byte" in table and "student" in table and "teacher" in table


def test_cli_errors_name_the_fix(tmp_path):
    with pytest.raises(SystemExit, match="--data"):
        ev.main(["--model", str(tmp_path)])
    with pytest.raises(SystemExit, match="does not exist"):
        ev.main(["--model", str(tmp_path), "--data", str(tmp_path / "missing.jsonl")])


def test_cli_from_recipe(tmp_path, model_paths, capsys):
    """A recipe whose output_dir has no trained student yet evaluates student.model against its teacher."""
    data = tmp_path / "held.jsonl"
    data.write_text(json.dumps({"prompt": "Q: 2+2?", "completion": "4", "answer": 4}) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"student: {{model: {model_paths['student_wordpiece']}}}\n"
                      f"teacher: {{model: {model_paths['teacher_bpe']}}}\n"
                      f"data: {{train: {data}}}\nloss: {{name: uld}}\n"
                      f"train: {{output_dir: {tmp_path / 'not-trained'}}}\n")
    assert ev.main([str(recipe), f"data.eval={data}", "--no-generate", "--json", "--quiet"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["student"]["bytes"] == 1 and got["student"]["agreement"] is not None
    with pytest.raises(SystemExit, match="data.eval"):
        ev.main([str(recipe), "--quiet"])


def test_load_pretrained_refuses_a_tokenizer_that_drops_text(model_paths, tmp_path, capsys):
    """The same guard as training: a Unigram vocabulary under a Qwen2 config loads as a byte-level tokenizer that
    silently drops characters, so every bpb would be computed on missing text."""
    import shutil

    from crossdistill.config import ConfigError

    qwen = tmp_path / "student-qwen2-unigram"
    shutil.copytree(model_paths["student_unigram"], qwen)
    config = json.loads((qwen / "config.json").read_text())
    config.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    (qwen / "config.json").write_text(json.dumps(config))
    with pytest.raises(ConfigError, match=r"loads as Qwen2Tokenizer, which drops characters of plain text"):
        ev.load_pretrained(str(qwen))
    data = tmp_path / "held.jsonl"
    data.write_text(json.dumps({"prompt": "Q: 2+2?", "completion": "4"}) + "\n")
    assert ev.main(["--model", str(qwen), "--data", str(data), "--quiet"]) == 2
    assert re.search(r"crossdistill eval: error: student.model='.*' loads as Qwen2Tokenizer", capsys.readouterr().err)
    model, tok = ev.load_pretrained(str(model_paths["student_unigram"]))
    assert not model.training and tok.pad_token_id is not None
