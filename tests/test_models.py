"""Loading, model anatomy and the one generation function. Run: python -m pytest tests/test_models.py -q"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM

from crossdistill import models
from crossdistill.config import ConfigError, GenerateConfig, ModelConfig, OnPolicyConfig
from crossdistill.data.render import prompt_ids, render
from crossdistill.testing.tiny import save_model, save_tokenizer

PROMPT = [{"role": "user", "content": "What is 12 plus 30?"}]


@pytest.fixture(scope="module")
def bos_pair(tmp_path_factory):
    """``(model, tokenizer)``: a tiny Llama whose tokenizer puts BOS before every text (its template does not)."""
    root = tmp_path_factory.mktemp("bos")
    tok_path = save_tokenizer("bpe", root / "tok", bos_prefix=True)
    path = save_model("llama", tok_path, root / "model", hidden=32, seed=5)
    tok = models.load_tokenizer(ModelConfig(model=str(path)), "teacher")
    return models.freeze_teacher(models.load_model(ModelConfig(model=str(path)), "teacher")), tok


def qwen2_unigram(model_paths, tmp_path):
    """A Unigram vocabulary saved under a Qwen2 config: transformers 5 loads it as a byte-level Qwen2Tokenizer that
    silently drops every character it cannot byte-encode."""
    qwen = tmp_path / "student-qwen2-unigram"
    shutil.copytree(model_paths["student_unigram"], qwen)
    config = json.loads((qwen / "config.json").read_text())
    config.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    (qwen / "config.json").write_text(json.dumps(config))
    return qwen


# ------------------------------------------------------------------------------------------------------ loading
def test_load_tokenizer_refuses_one_that_drops_text(model_paths, tokenizer_paths, tmp_path):
    qwen = qwen2_unigram(model_paths, tmp_path)
    with pytest.raises(ConfigError, match=r"student.model='.*' loads as Qwen2Tokenizer, which drops characters.*"
                                          r"set student.tokenizer"):
        models.load_tokenizer(ModelConfig(model=str(qwen)), "student")
    fixed = models.load_tokenizer(ModelConfig(model=str(qwen), tokenizer=str(tokenizer_paths["unigram"])), "student")
    assert fixed.pad_token_id is not None


def test_load_tokenizer_without_tokenizer_files(model_paths, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(model_paths["teacher_bpe"] / "config.json", bare / "config.json")
    with pytest.raises(ConfigError, match=r"teacher.model='.*bare' has no tokenizer files"):
        models.load_tokenizer(ModelConfig(model=str(bare)), "teacher")


def test_missing_gguf_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match=r"does not exist; give the path of a .gguf file"):
        models.load_model(ModelConfig(model=str(tmp_path / "nope.gguf")), "teacher")


# ------------------------------------------------------------------------------------------------------ anatomy
def test_hidden_states_times_head_are_the_logits(model_paths):
    model = AutoModelForCausalLM.from_pretrained(model_paths["student_wordpiece"]).eval()  # GPT-2: biasless head
    ids = torch.tensor([[5, 9, 14, 30, 2], [7, 7, 8, 1, 3]])
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        h = models.hidden_states(model, batch)  # [B, T, H]
        full = model(**batch).logits
    w, b, scale = models.head_info(model)
    torch.testing.assert_close(torch.nn.functional.linear(h, w, b) * scale, full)


def test_head_info_refuses_soft_capping_output_head_reports_it(model_paths):
    model = AutoModelForCausalLM.from_pretrained(model_paths["teacher_bpe"])
    assert models.output_head(model)[3] is None
    model.config.final_logit_softcapping = 30.0
    assert models.output_head(model)[3] == 30.0
    with pytest.raises(NotImplementedError, match="soft-capping"):
        models.head_info(model)


def test_non_embedding_params_skip_embeddings(model_paths):
    model = AutoModelForCausalLM.from_pretrained(model_paths["teacher_bpe"])  # untied head
    emb = model.get_input_embeddings().weight.numel() + model.get_output_embeddings().weight.numel()
    assert models.non_embedding_params(model) == sum(p.numel() for p in model.parameters()) - emb


# --------------------------------------------------------------------------------------------------- generation
def test_prompt_ids_match_render_for_every_tokenizer(tokenizers, bos_pair):
    _, bos_tok = bos_pair
    for name, tok in {**tokenizers, "bos": bos_tok}.items():
        for prompt in (PROMPT, "Count: ", ""):
            r = render(tok, prompt, "The answer is 42.")
            assert prompt_ids(tok, prompt) == r.input_ids[: r.completion_start], (name, prompt)
    assert prompt_ids(bos_tok, PROMPT)[0] == bos_tok.bos_token_id


def spy_generate(model, monkeypatch) -> list[tuple[list[int], list[int]]]:
    """Record ``(prompt ids without padding, generated ids)`` of every row ``model.generate`` sees."""
    calls: list[tuple[list[int], list[int]]] = []
    real = model.generate

    def spy(*, input_ids, attention_mask, **kwargs):
        out = real(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        for row, mask, gen in zip(input_ids, attention_mask, out):
            calls.append((row[mask.bool()].tolist(), gen[input_ids.shape[1]:].tolist()))
        return out

    monkeypatch.setattr(model, "generate", spy)
    return calls


def test_three_call_sites_generate_the_same_ids_from_the_same_prompt(bos_pair, monkeypatch):
    """``crossdistill generate``, on-policy rollouts and eval accuracy all generate from render()'s prompt ids (BOS
    included) and return the same completion for the same prompt under greedy decoding."""
    from crossdistill.evaluation import generate_answers
    from crossdistill.generation import generate_completions
    from crossdistill.train.onpolicy import sample

    model, tok = bos_pair
    calls = spy_generate(model, monkeypatch)
    n = 8
    r = render(tok, PROMPT, "The answer is 42.")
    rendered_prompt = r.input_ids[: r.completion_start]
    assert rendered_prompt[0] == tok.bos_token_id and rendered_prompt[1] != tok.bos_token_id

    cfg = SimpleNamespace(generate=GenerateConfig(max_new_tokens=n, temperature=0.0))
    text_generate = generate_completions(model, tok, [PROMPT], cfg, progress=False)[0]
    text_eval = generate_answers(model, tok, [PROMPT], max_new_tokens=n, progress=False)[0]
    # On-policy rollouts always sample; top-k 1 makes sampling pick the argmax, i.e. greedy decoding.
    ids_onpolicy, ended = sample(model, tok, [rendered_prompt], OnPolicyConfig(max_new_tokens=n, top_k=1))[0]

    assert len(calls) == 3
    assert [prompt for prompt, _ in calls] == [rendered_prompt] * 3
    assert calls[0][1] == calls[1][1] == calls[2][1]
    assert ids_onpolicy == calls[2][1][: len(ids_onpolicy)] and len(ids_onpolicy) >= 1
    assert ended == (tok.eos_token_id in calls[2][1])
    expected_text = tok.decode(ids_onpolicy, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    assert text_generate == text_eval == expected_text


def test_generate_batches_keep_order_and_cut_at_eos(bos_pair):
    model, tok = bos_pair
    prompts = [PROMPT, "Count: 1 2 3", [{"role": "user", "content": "hi"}]]
    one = [models.generate(model, tok, [p], max_new_tokens=6)[0] for p in prompts]
    batched = models.generate(model, tok, prompts, max_new_tokens=6, batch_size=2)
    assert [g.ids for g in batched] == [g.ids for g in one]
    for g in batched:
        assert g.ended == (tok.eos_token_id in g.ids)
        assert not g.ended or g.ids.index(tok.eos_token_id) == len(g.ids) - 1
        assert tok.pad_token_id not in g.ids[:-1] or tok.pad_token_id == tok.eos_token_id


def test_generate_from_ids_equals_generate_from_messages(bos_pair):
    model, tok = bos_pair
    ids = prompt_ids(tok, PROMPT)
    from_text = models.generate(model, tok, [PROMPT], max_new_tokens=5)[0]
    assert models.generate(model, tok, [ids], max_new_tokens=5)[0] == from_text
    # ids without the BOS get it back, as render() would have put it there
    assert models.generate(model, tok, [torch.tensor(ids[1:])], max_new_tokens=5)[0] == from_text


def test_seeded_sampling_is_reproducible_and_leaves_the_global_rng(bos_pair):
    model, tok = bos_pair
    kw = dict(max_new_tokens=6, do_sample=True, temperature=1.5, top_k=0)
    state = torch.random.get_rng_state()
    a = models.generate(model, tok, [PROMPT, "Count: "], seed=7, **kw)
    b = models.generate(model, tok, [PROMPT, "Count: "], seed=7, **kw)
    assert torch.equal(state, torch.random.get_rng_state())
    assert [g.ids for g in a] == [g.ids for g in b]


def test_generate_restores_train_mode(bos_pair):
    model, tok = bos_pair
    model.train()
    try:
        models.generate(model, tok, ["x"], max_new_tokens=1)
        assert model.training
    finally:
        model.eval()


def test_left_pad_right_aligns_rows():
    ids, attn = models.left_pad([[1, 2, 3], [4], []], pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4], [0, 0, 0]]
    assert attn.tolist() == [[1, 1, 1], [0, 0, 1], [0, 0, 0]]


def test_head_logits_chunks_equal_one_pass(model_paths):
    """head_logits in chunks (written into one buffer) equals the single pass and the plain head, padding columns
    sliced off."""
    model = AutoModelForCausalLM.from_pretrained(model_paths["student_wordpiece"]).eval()
    w, b, scale = models.head_info(model)
    rows = torch.randn(7, w.shape[1])
    full = torch.nn.functional.linear(rows, w, b).detach() * scale
    for chunk in (1, 3, 7, 100):
        torch.testing.assert_close(models.head_logits(model, rows, None, chunk), full)
        got = models.head_logits(model, rows, w.shape[0] - 2, chunk)
        assert got.is_contiguous() and got.shape == (7, w.shape[0] - 2)
        torch.testing.assert_close(got, full[:, :-2])
    assert models.head_logits(model, rows[:0], 5).shape == (0, 5)


def test_hidden_states_computes_no_logit_row(model_paths):
    """hidden_states asks the model for no logits at all (not one row: a sliced last row is a non-contiguous view
    that a bf16 CPU matmul expands against the whole head), in fp32 and bf16 alike."""
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModelForCausalLM.from_pretrained(model_paths["teacher_bpe"], dtype=dtype).eval()
        seen = []
        orig = model.forward

        def spy(*args, _orig=orig, _seen=seen, **kwargs):
            out = _orig(*args, **kwargs)
            _seen.append(out.logits.shape)
            return out

        model.forward = spy
        ids = torch.tensor([[5, 9, 14, 30, 2], [7, 7, 8, 1, 3]])
        with torch.no_grad():
            h = models.hidden_states(model, {"input_ids": ids, "attention_mask": torch.ones_like(ids)})
        assert h.shape[:2] == (2, 5) and h.dtype == dtype
        assert seen == [(2, 0, model.config.vocab_size)]
