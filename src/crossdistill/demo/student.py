"""The demo's student: its own SentencePiece-style tokenizer, and the teacher's pretrained body re-targeted to it
(or a small randomly initialised model), built once per seed and reused while its stamp matches."""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from crossdistill.demo.budget import DemoBudget
from crossdistill.io import publish_dir, write_json


def train_student_tokenizer(texts: Sequence[str], path: Path, vocab_size: int) -> Path:
    """Train a SentencePiece-style BPE tokenizer (Llama-2 family: ``▁`` marker, byte fallback) and save it.

    Digits are split one by one (as SmolLM2 does), so numbers align digit by digit. The chat template is Gemma-style
    (``<start_of_turn>`` / ``<end_of_turn>``, BOS first), unlike the teacher's ChatML.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from crossdistill.testing.tiny import TURN_TEMPLATE

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    # No <0x20>: the normalizer turns every space into "▁", so that piece is never emitted -- and GOLD's vocabulary
    # map matches a teacher token to the LOWEST student id with the same bytes, so with <0x20> present the teacher's
    # "Ġ" (a space, before every number) mapped to the dead <0x20> instead of "▁": measured, the matched-column KD
    # then pushed ~20% of the 1:1 groups away from the student's own target.
    byte_pieces = [f"<0x{i:02X}>" for i in range(256) if i != 0x20]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        # "never": chat content follows a template newline, so words at a turn start carry no "▁" there either
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + len(specials) + 256, special_tokens=specials + byte_pieces,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<end_of_turn>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = TURN_TEMPLATE
    fast.save_pretrained(path)
    return path


TRANSFER_SPECIALS = {"<start_of_turn>": "<|im_start|>", "</s>": "<|endoftext|>"}
"""The student's turn and end-of-text tokens -> SmolLM2's (BOS, EOS, PAD and UNK are matched by role)."""


def build_student(path: Path, texts: Sequence[str], budget: DemoBudget, seed: int, teacher: str | None = None) -> Path:
    """Tokenizer + student saved at ``path``: with ``budget.student_init == "transfer"`` the teacher's body
    re-targeted to the new tokenizer, else a randomly initialised Llama-style model. Reused when ``path`` holds the
    student of the same texts, budget fields, seed and teacher (its ``demo_student.json`` stamp), rebuilt otherwise.
    """
    stamp = {"texts": hashlib.sha256("\n".join(texts).encode()).hexdigest(), "seed": seed,
             "teacher": str(teacher), **{k: getattr(budget, k) for k in (
                 "student_init", "student_layers", "student_hidden", "student_vocab")}}
    stamp_file = path / STUDENT_STAMP
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp and (path / "config.json").is_file():
        print(f"student: {path} (cached: the same tokenizer texts, seed and shape)")
        return path
    shutil.rmtree(path, ignore_errors=True)
    _build_student(path, texts, budget, seed, teacher)
    write_json(stamp_file, stamp, sort_keys=True)  # last: a student without its stamp is rebuilt
    return path


STUDENT_STAMP = "demo_student.json"
"""What the demo's initial student was built from; a rerun reuses the student only when this matches."""


def _build_student(path: Path, texts: Sequence[str], budget: DemoBudget, seed: int, teacher: str | None) -> Path:
    if budget.student_init not in ("transfer", "random"):
        from crossdistill.config import ConfigError

        raise ConfigError(f"student_init={budget.student_init!r}: choose 'transfer' or 'random'")
    if budget.student_init == "transfer":
        if teacher is None:
            raise ValueError("build_student: student_init='transfer' needs the teacher directory")
        from crossdistill.transfer import transfer_model

        tok_dir = path.parent / (path.name + ".tokenizer")
        shutil.rmtree(tok_dir, ignore_errors=True)
        with publish_dir(tok_dir) as tmp:
            train_student_tokenizer(texts, tmp, budget.student_vocab)
        stats = transfer_model(teacher, tok_dir, path, layers=budget.student_layers, special_map=TRANSFER_SPECIALS)
        print(f"student: the teacher's body ({len(stats.layers)} layers) with embeddings for the new tokenizer: "
              f"{stats.spelled} tokens from the teacher pieces spelling them, {stats.special} special tokens mapped, "
              f"{stats.fallback} (partial UTF-8 bytes) at the mean embedding")
        return path
    from transformers import AutoTokenizer

    with publish_dir(path) as tmp:  # an interrupted build leaves no half student for the reuse check above
        train_student_tokenizer(texts, tmp, budget.student_vocab)
        save_random_llama(AutoTokenizer.from_pretrained(tmp), tmp, budget.student_hidden, budget.student_layers or 4,
                          seed)
    return path


def save_random_llama(tok: Any, path: Path, hidden: int, layers: int, seed: int) -> Path:
    """Save a randomly initialised Llama-style causal LM for ``tok`` at ``path`` (weights and config only): tied
    embeddings, an MLP of ~8/3 the hidden size, 64-dimensional heads (at least two), 512 positions, ``tok``'s special
    tokens in the generation config. The seed is applied right before the weights are drawn."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=(8 * hidden) // 3 // 16 * 16,
                      num_hidden_layers=layers, num_attention_heads=max(2, hidden // 64),
                      num_key_value_heads=max(2, hidden // 64), max_position_embeddings=512, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(path)
    return path
