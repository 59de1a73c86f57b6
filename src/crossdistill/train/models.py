"""Load tokenizers and models from a Hub id, a local directory or a GGUF file; freeze the teacher; optional LoRA.

Tokenizers load first and cheaply (so config/tokenizer checks run before any weights); models load after. A GGUF
file is converted once to a Hugging Face directory cached by the file's sha256 (:func:`crossdistill.assets.
convert_gguf`) and reloaded from there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from crossdistill.config import ConfigError, ModelConfig

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def resolve_model_dir(mc: ModelConfig, role: str) -> str:
    """A loadable directory or Hub id for ``mc.model`` (GGUF files are converted once and cached)."""
    ref = mc.model
    if ref.endswith(".gguf"):
        if not Path(ref).is_file():
            raise ConfigError(f"{role}.model={ref!r} does not exist; give the path of a .gguf file")
        from crossdistill.assets import convert_gguf

        return str(convert_gguf(ref))
    return ref


def load_tokenizer(mc: ModelConfig, role: str) -> Any:
    """The fast tokenizer of a model; a pad token is set to EOS when the tokenizer has none."""
    from transformers import AutoTokenizer

    ref = mc.tokenizer or mc.model
    where = f"{role}.tokenizer" if mc.tokenizer else f"{role}.model"
    p = Path(ref)
    if ref.endswith(".gguf"):
        ref = resolve_model_dir(mc, role) if not mc.tokenizer else ref
        p = Path(ref)
    if p.is_dir() and not any((p / f).exists() for f in TOKENIZER_FILES):
        raise ConfigError(f"{where}={str(p)!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])} ...); set "
                          f"{role}.tokenizer to the directory or Hub id of the {role}'s tokenizer")
    try:
        tok = AutoTokenizer.from_pretrained(ref, revision=mc.revision)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load the {role} tokenizer from {where}={ref!r}: {err}. Set {role}.tokenizer to a "
                          "directory or Hub id that has one") from None
    if not getattr(tok, "is_fast", False):
        raise ConfigError(f"{where}={ref!r} gives a slow tokenizer; crossdistill needs a fast (tokenizers) one for "
                          "character offsets")
    check_keeps_text(tok, role, where, ref)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def check_keeps_text(tok: Any, role: str, where: str, ref: str) -> None:
    """Refuse a tokenizer that silently drops characters of ordinary text.

    Why: Transformers 5 chooses the tokenizer class from the model type and, for some types (``qwen2`` ...), rebuilds
    the pipeline of that class whatever ``tokenizer.json`` holds; a SentencePiece-style vocabulary loaded that way
    loses every character it cannot byte-encode, and training would go on with text missing and no error.
    """
    from crossdistill.data.render import PROBE_TEXT, lost_characters

    enc = tok(PROBE_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    lost = lost_characters(PROBE_TEXT, [tuple(o) for o in enc["offset_mapping"]])
    if lost:
        raise ConfigError(
            f"{where}={ref!r} loads as {type(tok).__name__}, which drops characters of plain text "
            f"({''.join(lost[:12])!r} of {PROBE_TEXT!r}). Transformers picks the tokenizer class from the model type "
            f"in config.json and may rebuild a different pipeline than tokenizer.json describes. Fix: set "
            f"{role}.tokenizer to a directory holding only the tokenizer files (no config.json), or "
            "to the Hub id of the tokenizer the model was trained with")


def load_model(mc: ModelConfig, role: str, device: str | torch.device | None = None) -> torch.nn.Module:
    """``AutoModelForCausalLM`` for ``mc`` with its dtype, moved to ``mc.device`` (or ``device``)."""
    from transformers import AutoModelForCausalLM

    ref = resolve_model_dir(mc, role)
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=DTYPES[mc.dtype], revision=mc.revision)
    except OSError as err:
        raise ConfigError(f"cannot load {role}.model={mc.model!r}: {err}") from None
    target = mc.device or device
    if target is not None:
        model.to(target)
    return model


def freeze_teacher(model: torch.nn.Module) -> torch.nn.Module:
    """Eval mode (no dropout) and no gradients, ever."""
    model.eval()
    model.requires_grad_(False)
    return model


def apply_lora(model: torch.nn.Module, mc: ModelConfig) -> torch.nn.Module:
    """Wrap the student in PEFT LoRA adapters when ``mc.lora.enabled``."""
    if not mc.lora.enabled:
        return model
    from peft import LoraConfig, get_peft_model

    lc = mc.lora
    cfg = LoraConfig(r=lc.r, lora_alpha=lc.alpha, lora_dropout=lc.dropout, target_modules=lc.target_modules,
                     task_type="CAUSAL_LM")
    return get_peft_model(model, cfg)


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The ``PreTrainedModel`` under DDP / PEFT wrappers."""
    while hasattr(model, "module"):
        model = model.module
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


def decoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The module whose output ``last_hidden_state`` is the lm_head input (final norm included)."""
    m = base_model(model)
    dec = m.get_decoder() if hasattr(m, "get_decoder") else None
    if dec is None or dec is m:
        dec = getattr(m, m.base_model_prefix, None)
    if dec is None:
        raise TypeError(f"cannot find the decoder of {type(m).__name__}: crossdistill needs a causal LM with a base "
                        "model (model.get_decoder())")
    return dec


def head_info(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """``(weight [V, H], bias or None, logit_scale)`` of a causal LM's output head."""
    m = base_model(model)
    head = m.get_output_embeddings()
    scale = float(getattr(m.config, "logit_scale", None) or 1.0)
    if getattr(m.config, "final_logit_softcapping", None):
        raise NotImplementedError(f"{type(m).__name__} uses final logit soft-capping, which the fused losses do not "
                                  "apply yet")
    return head.weight, getattr(head, "bias", None), scale


def non_embedding_params(model: torch.nn.Module) -> int:
    """Parameters excluding input/output token embeddings and learned position embeddings (N_S of the scaling law)."""
    m = base_model(model)
    skip = set()
    for mod in (m.get_input_embeddings(), m.get_output_embeddings()):
        if mod is not None:
            skip.update(id(p) for p in mod.parameters())
    for name, mod in m.named_modules():
        if isinstance(mod, torch.nn.Embedding) and ("pos" in name or name.endswith("wpe")):
            skip.update(id(p) for p in mod.parameters())
    seen: set[int] = set()
    total = 0
    for p in m.parameters():
        if id(p) in skip or id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
    return total
