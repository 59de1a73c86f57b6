"""Tokenizer transfer: a pretrained causal LM re-targeted to another tokenizer, ready to be distilled into.

A student with its own tokenizer need not start from random weights. :func:`transfer_model` keeps a pretrained
model's transformer body (all of its layers, or an evenly spaced subset) and gives it new embeddings and a new head
for the target tokenizer: each target token's vector is the mean of the source embeddings of the source tokens that
spell exactly the same bytes (the same byte-exact re-tokenization the X-Token projection is built from,
:class:`crossdistill.align.projection.Retokenizer`). Special tokens are matched by role (BOS, EOS, PAD, UNK) and by
an explicit map; the few tokens nothing spells get the mean source embedding. Distilling the source (as the teacher)
into the result across the two tokenizers is the tokenizer-transfer setting ALM was designed for; any
cross-tokenizer method works on it.

Usage::

    from crossdistill.transfer import transfer_model
    transfer_model("SmolLM2-135M-Instruct/", "my-tokenizer/", "student/",
                   special_map={"<start_of_turn>": "<|im_start|>"})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from crossdistill.data.render import reloads_identically
from crossdistill.io import publish_dir

ROLES = ("bos_token", "eos_token", "pad_token", "unk_token")
"""Special-token roles matched between the two tokenizers by default."""


@dataclass(frozen=True)
class TransferStats:
    """How the target vocabulary was initialised."""

    spelled: int
    """Target tokens whose bytes the source tokenizer spells exactly (mean of those source embeddings)."""
    special: int
    """Target special tokens mapped to a source special token (by role or ``special_map``)."""
    fallback: int
    """Target tokens nothing spells (byte pieces of partial UTF-8 sequences, unmapped specials): mean embedding."""
    layers: tuple[int, ...]
    """Source layer index of each kept layer, in order."""


def kept_layers(num_layers: int, keep: int | None) -> list[int]:
    """Evenly spaced source layers, first and last always kept; ``keep=None`` or ``>= num_layers``: all.

    >>> kept_layers(30, 4)
    [0, 10, 19, 29]
    """
    if keep is None or keep >= num_layers:
        return list(range(num_layers))
    if keep < 1:
        raise ValueError(f"layers={keep}: keep at least 1 layer (or None for all {num_layers})")
    if keep == 1:
        return [num_layers - 1]
    return [round(i * (num_layers - 1) / (keep - 1)) for i in range(keep)]


def source_rows(source_tokenizer: Any, target_tokenizer: Any, special_map: Mapping[str, str] | None = None
                ) -> tuple[list[list[int]], TransferStats]:
    """For every target id, the source ids whose rows' mean initialises it (``[]``: the mean of all source rows).

    ``special_map``: target special token -> source special token, on top of the same-name and :data:`ROLES`
    matches.
    """
    from crossdistill.align.projection import Retokenizer, special_ids
    from crossdistill.align.vocab_map import token_keys

    n = len(target_tokenizer)
    rows: list[list[int]] = [[] for _ in range(n)]
    source_specials = {source_tokenizer.convert_ids_to_tokens(i) for i in special_ids(source_tokenizer)}
    pairs = {t: t for t in (target_tokenizer.convert_ids_to_tokens(i) for i in special_ids(target_tokenizer))
             if t in source_specials}  # the same special token in both: itself
    pairs.update({getattr(target_tokenizer, r): getattr(source_tokenizer, r) for r in ROLES})
    pairs.update(special_map or {})
    mapped = set()
    for t_name, s_name in pairs.items():
        if t_name is None or s_name is None:
            continue
        t_id, s_id = _token_id(target_tokenizer, t_name), _token_id(source_tokenizer, s_name)
        if t_id is None or s_id is None:
            raise ValueError(f"special_map: {t_name!r} -> {s_name!r} names a token one tokenizer does not have")
        rows[t_id] = [s_id]
        mapped.add(t_id)
    keys = token_keys(target_tokenizer)
    # Byte-fallback pieces (<0x41>) are often registered as special tokens, but their key is the byte itself.
    todo = [i for i in range(n) if i not in mapped and keys[i] and not keys[i].startswith(b"\x00special:")]
    spelled = 0
    for i, ids in zip(todo, Retokenizer(source_tokenizer).pieces([keys[i] for i in todo])):
        if ids:
            rows[i] = list(ids)
            spelled += 1
    return rows, TransferStats(spelled=spelled, special=len(mapped), fallback=n - spelled - len(mapped), layers=())


def rows_mean(weight: torch.Tensor, rows: Sequence[Sequence[int]], n_source: int) -> torch.Tensor:
    """``[len(rows), H]``: row ``i`` is the mean of ``weight[rows[i]]``, or of the first ``n_source`` rows of
    ``weight`` (the tokenizer's, not padding rows) where ``rows[i]`` is empty."""
    src = weight.detach().float()
    out = src[:n_source].mean(0).expand(len(rows), -1).clone()
    for i, ids in enumerate(rows):
        if ids:
            out[i] = src[list(ids)].mean(0)
    return out


def transfer_embeddings(source_embeddings: torch.Tensor, source_tokenizer: Any, target_tokenizer: Any,
                        special_map: Mapping[str, str] | None = None) -> tuple[torch.Tensor, TransferStats]:
    """``[V_target, H]`` embeddings for ``target_tokenizer`` from ``source_embeddings`` ``[V_source, H]``
    (:func:`source_rows`, then :func:`rows_mean`)."""
    rows, stats = source_rows(source_tokenizer, target_tokenizer, special_map)
    return rows_mean(source_embeddings, rows, len(source_tokenizer)), stats


def transfer_model(source: str | Path, tokenizer: str | Path | Any, out: str | Path, *, layers: int | None = None,
                   special_map: Mapping[str, str] | None = None, dtype: torch.dtype = torch.float32
                   ) -> TransferStats:
    """Save at ``out`` the model of ``source`` re-targeted to ``tokenizer`` (a directory or a tokenizer object),
    keeping ``layers`` evenly spaced layers of its body (None: all); returns how the vocabulary was initialised.

    The directory is published atomically (model, tokenizer, generation config with the new EOS/PAD ids).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src_tok = AutoTokenizer.from_pretrained(str(source))
    tgt_tok = AutoTokenizer.from_pretrained(str(tokenizer)) if isinstance(tokenizer, (str, Path)) else tokenizer
    model = AutoModelForCausalLM.from_pretrained(str(source), dtype=dtype)
    cfg = type(model.config).from_dict(model.config.to_dict())
    keep = kept_layers(cfg.num_hidden_layers, layers)
    cfg.num_hidden_layers = len(keep)
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = [cfg.layer_types[i] for i in keep]
    cfg.vocab_size = len(tgt_tok)
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = (tgt_tok.bos_token_id, tgt_tok.eos_token_id,
                                                            tgt_tok.pad_token_id)
    rows, stats = source_rows(src_tok, tgt_tok, special_map)  # once, for the embeddings and an untied head
    student = AutoModelForCausalLM.from_config(cfg, dtype=dtype)
    state = _renumbered(model.state_dict(), keep)
    state = {k: v for k, v in state.items() if "embed_tokens" not in k and "lm_head" not in k}
    missing, unexpected = student.load_state_dict(state, strict=False)
    left = [k for k in missing if "embed_tokens" not in k and "lm_head" not in k]
    if left or unexpected:
        raise RuntimeError(f"transfer: weights did not line up (missing {left[:3]}, unexpected {unexpected[:3]})")
    with torch.no_grad():
        student.get_input_embeddings().weight.copy_(rows_mean(model.get_input_embeddings().weight, rows, len(src_tok)))
        head = student.get_output_embeddings()
        if head is not None and not cfg.tie_word_embeddings:  # an untied head's rows are output embeddings
            head.weight.copy_(rows_mean(model.get_output_embeddings().weight, rows, len(src_tok)))
    student.generation_config.bos_token_id = tgt_tok.bos_token_id
    student.generation_config.eos_token_id = tgt_tok.eos_token_id
    student.generation_config.pad_token_id = tgt_tok.pad_token_id
    with publish_dir(Path(out)) as tmp:
        student.save_pretrained(tmp)
        tgt_tok.save_pretrained(tmp)
        if not reloads_identically(tgt_tok, tmp):  # checked before the directory is published
            raise ValueError(f"tokenizer: saved beside a {cfg.model_type!r} model it loads back as another "
                             "tokenizer class and tokenizes differently; transfer into a model type whose tokenizer "
                             "class keeps this tokenizer's pipeline")
    return replace(stats, layers=tuple(keep))


def _renumbered(state: dict[str, torch.Tensor], keep: Sequence[int]) -> dict[str, torch.Tensor]:
    """The source state dict with layer ``keep[i]`` renamed to layer ``i`` (other layers dropped)."""
    new_index = {src: i for i, src in enumerate(keep)}
    out = {}
    for k, v in state.items():
        parts = k.split(".")
        if "layers" in parts:
            j = parts.index("layers") + 1
            if int(parts[j]) not in new_index:
                continue
            parts[j] = str(new_index[int(parts[j])])
        out[".".join(parts)] = v
    return out


def _token_id(tok: Any, name: str) -> int | None:
    """The id of token ``name``, or None where ``tok`` has no such token (not the UNK id it falls back to)."""
    i = tok.convert_tokens_to_ids(name)
    if i is None or (i == tok.unk_token_id and name != tok.unk_token):
        return None
    return int(i)
