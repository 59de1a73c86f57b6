"""Tiny tokenizers and causal LMs built in-process, for tests, benchmarks and the demo's smoke path.

Nothing here touches the network. Every builder saves to a directory and the caller loads back through the real
``AutoTokenizer.from_pretrained`` / ``AutoModelForCausalLM.from_pretrained`` path, so tests exercise what users run.

Three tokenizer families, chosen because their offsets behave differently:

* ``bpe``       byte-level BPE (GPT-2 / Llama-3 / Qwen / SmolLM style): tokens can split a multi-byte character.
* ``unigram``   SentencePiece-style Unigram with the ``▁`` marker and byte fallback (Llama-2 / Gemma style).
* ``wordpiece`` WordPiece with ``##`` continuations and a lowercasing normalizer (BERT style).
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# A template that differs from ChatML, so a cross-tokenizer pair also has different prompt renderings.
TURN_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<start_of_turn>{{ message['role'] }}\n{{ message['content'] }}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Distillation moves knowledge from a large teacher to a small student.",
    "What is 12 plus 30? The answer is 42.",
    "Tokenizers split text into pieces; different tokenizers split it differently.",
    "Naïve café façade, déjà vu — unicode text with accents.",
    "日本語のテキストと中文文本也在这里。 Emoji too: 🙂🚀👍🏽.",
    "Numbers like 3.14159, 2718 and 1,000,000 appear in math problems.",
    "def add(a, b):\n    return a + b\n",
    "   leading spaces, trailing spaces   and\ttabs\tand\nnewlines\n\n",
    "Question: how many apples? Answer: 7 apples.",
    "Combining marks: e\u0301 a\u0308 n\u0303 and Hangul 한국어.",
] * 20

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "<s>", "</s>", "<start_of_turn>", "<end_of_turn>"]


def build_tokenizer(kind: str, vocab_size: int = 300) -> Tokenizer:
    """Train a small ``tokenizers.Tokenizer`` of the given family on :data:`CORPUS`."""
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
    elif kind == "unigram":
        tok = Tokenizer(models.Unigram(byte_fallback=True))
        tok.normalizer = normalizers.Replace(" ", "▁")
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence(
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
        trainer = trainers.UnigramTrainer(
            vocab_size=vocab_size + 256, special_tokens=SPECIALS + byte_tokens, unk_token="<unk>",
            max_piece_length=8,
        )
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True, strip_accents=False)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=["[UNK]"] + SPECIALS)
    else:
        raise ValueError(f"tokenizer kind must be one of 'bpe', 'unigram', 'wordpiece'; got {kind!r}")
    tok.train_from_iterator(CORPUS, trainer=trainer)
    return tok


def save_tokenizer(kind: str, path: str | Path, vocab_size: int = 300, chat_template: str | None = None,
                   bos_prefix: bool = False) -> Path:
    """Build a tokenizer of ``kind``, wrap it as a ``PreTrainedTokenizerFast`` and save it to ``path``.

    The ``bpe`` and ``wordpiece`` tokenizers get the ChatML template, ``unigram`` the turn template, unless
    ``chat_template`` is given. ``bos_prefix``: the post-processor puts ``<s>`` (the BOS token) before every text,
    as Llama / Gemma tokenizers do, while the chat template does not write it; the BOS then comes only from the
    tokenizer's prefix specials. Load it back with ``AutoTokenizer.from_pretrained(path)``.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    raw = build_tokenizer(kind, vocab_size)
    if kind == "unigram":
        special = dict(bos_token="<s>", eos_token="<end_of_turn>", pad_token="<pad>", unk_token="<unk>")
        template = TURN_TEMPLATE
    elif kind == "wordpiece":
        special = dict(eos_token="<|im_end|>", pad_token="<pad>", unk_token="[UNK]")
        template = CHATML_TEMPLATE
    else:
        special = dict(eos_token="<|im_end|>", pad_token="<|endoftext|>")
        template = CHATML_TEMPLATE
    if bos_prefix:
        bos = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                            special_tokens=[("<s>", raw.token_to_id("<s>"))])
        raw.post_processor = bos if raw.post_processor is None else processors.Sequence([raw.post_processor, bos])
        special["bos_token"] = "<s>"
    fast = PreTrainedTokenizerFast(tokenizer_object=raw, **special)
    fast.chat_template = chat_template if chat_template is not None else template
    fast.save_pretrained(path)
    return path


def save_model(arch: str, tokenizer_path: str | Path, path: str | Path, hidden: int = 32, layers: int = 2,
               seed: int = 0, vocab_pad: int = 0, heads: int = 4) -> Path:
    """Save a randomly initialised tiny causal LM whose vocabulary matches the tokenizer at ``tokenizer_path``.

    Args:
        arch: ``"llama"``, ``"qwen2"``, ``"mistral"`` or ``"gpt2"``. Transformers 5 picks the tokenizer CLASS of a model
            directory from its model type and, for some types (``qwen2``), rebuilds the tokenizer as that class's
            pipeline (byte-level BPE) whatever ``tokenizer.json`` says; a SentencePiece-style tokenizer then silently
            drops characters. The saved directory is loaded back and checked (ValueError on any difference).
        vocab_pad: extra embedding rows beyond the tokenizer (models whose head is padded, like Qwen2.5-7B).
        heads: attention heads (key/value heads: half of them, at least one). A model a vLLM CPU server loads needs a
            head size (``hidden / heads``) of at least 32, e.g. ``hidden=64, heads=2``.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2Config, LlamaConfig, MistralConfig, Qwen2Config

    tok = AutoTokenizer.from_pretrained(tokenizer_path)
    vocab = len(tok) + vocab_pad
    ids = dict(pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    kv_heads = max(1, heads // 2)
    if arch == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                          tie_word_embeddings=False, **ids)
    elif arch == "qwen2":
        cfg = Qwen2Config(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                          tie_word_embeddings=True, **ids)
    elif arch == "mistral":
        cfg = MistralConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                            max_position_embeddings=512, sliding_window=None, tie_word_embeddings=True, **ids)
    elif arch == "gpt2":
        cfg = GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads, n_positions=512, **ids)
    else:
        raise ValueError(f"arch must be one of 'llama', 'qwen2', 'mistral', 'gpt2'; got {arch!r}")
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    from crossdistill.data.render import PROBE_TEXT, reloads_identically

    if not reloads_identically(tok, path, PROBE_TEXT + "\n  x=12+30 done."):
        raise ValueError(f"arch={arch!r}: transformers loads the tokenizer saved in {path} as "
                         f"{type(AutoTokenizer.from_pretrained(path)).__name__}, which tokenizes differently from "
                         f"{tokenizer_path}; use another arch "
                         "for this tokenizer family")
    return path
