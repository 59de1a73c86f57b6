"""Models and tokenizers: load them (Hub id, local directory or GGUF file), freeze, wrap, look inside, generate.

Every command loads through :func:`load_tokenizer` and :func:`load_model`, so every command refuses the same broken
tokenizers (slow ones, and ones that silently drop characters of plain text) with the same message. Tokenizers load
first and cheaply, so config/tokenizer checks run before any weights; models load after. A GGUF file is converted
once to a Hugging Face directory cached by the file's sha256 (:func:`crossdistill.assets.convert_gguf`) and reloaded
from there.

Every command also generates through :func:`generate`: prompts become ids by the same rule as
:func:`crossdistill.data.render.render` (the tokenizer's prefix specials, e.g. BOS, in front unless the chat
template wrote them), so a model generates from exactly the prompt it is trained and scored on.
"""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from crossdistill.config import ConfigError, ModelConfig
from crossdistill.io import looks_like_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")
VOCABULARY_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model", "tekken.json", "merges.txt")
"""Files that define a vocabulary; ``tokenizer_config.json`` alone does not (transformers then builds an empty or
wrong tokenizer)."""


# ------------------------------------------------------------------------------------------------------ loading
def resolve_model_dir(mc: ModelConfig, role: str) -> str:
    """A loadable directory or Hub id for ``mc.model`` (GGUF files are converted once and cached; a Hub id becomes
    its cached snapshot directory when the Hub is off or unreachable, :func:`resolve_ref`)."""
    ref = mc.model
    if ref.endswith(".gguf"):
        if not Path(ref).expanduser().is_file():
            raise ConfigError(f"{role}.model={ref!r} does not exist; give the path of a .gguf file")
        from crossdistill.assets import convert_gguf

        return str(convert_gguf(str(Path(ref).expanduser())))
    return resolve_ref(ref, mc.revision, f"{role}.model")


HUB_TIMEOUT_ENV = "CROSSDISTILL_HUB_TIMEOUT"
"""Seconds the Hub reachability probe waits for a TCP connection (default 0.5). A Hub that does not answer in time
is treated as unreachable: the local cache is used, and a model that is not in it fails at once."""
_TRUE = {"1", "ON", "YES", "TRUE"}


@functools.lru_cache(maxsize=1)
def fast_bf16() -> bool:
    """bf16 matmuls are fast here: a CUDA device with bf16, or a CPU with AMX / AVX512-BF16 (read from
    ``/proc/cpuinfo``; elsewhere a CPU emulates bf16 and is slower than fp32)."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next((line for line in handle if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) is set, now or when huggingface_hub was imported (it reads
    the variable once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return bool(constants.HF_HUB_OFFLINE) or env.strip().upper() in _TRUE


@functools.lru_cache(maxsize=8)
def _reachable(host: str, port: int, timeout: float) -> bool:
    box: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            box.append(True)
        except OSError:
            box.append(False)

    thread = threading.Thread(target=probe, daemon=True)  # a hanging DNS lookup must not hold us up either
    thread.start()
    thread.join(timeout + 0.05)
    return bool(box and box[0])


def hub_reachable() -> bool:
    """Whether a TCP connection to the Hub endpoint (``HF_ENDPOINT``, or the HTTPS proxy when one is set) opens within
    ``CROSSDISTILL_HUB_TIMEOUT`` seconds. Cached per process. huggingface_hub itself retries a failed request five
    times with backoff (about a minute) before giving up, so crossdistill asks this first."""
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    proxy = next((os.environ[k] for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy") if os.environ.get(k)),
                 None)
    url = urlsplit(proxy if proxy and "://" in proxy else f"http://{proxy}" if proxy else constants.ENDPOINT)
    if not url.hostname:
        return True  # an endpoint we cannot parse: let huggingface_hub try
    try:
        timeout = float(os.environ.get(HUB_TIMEOUT_ENV) or 0.5)
    except ValueError:
        timeout = 0.5
    return _reachable(url.hostname, url.port or (443 if url.scheme == "https" else 80), timeout)


def resolve_ref(ref: str, revision: str | None, where: str) -> str:
    """Where ``ref`` (a model or tokenizer reference) loads from, checked before anything slow happens:

    * an existing path: itself;
    * a path that does not exist (starts with ``/ . ~``, ends with ``.gguf``, has two or more ``/``): ``ConfigError``
      at once;
    * a Hub id while the Hub is reachable: itself (transformers downloads or revalidates it);
    * a Hub id with ``HF_HUB_OFFLINE`` set or no route to the Hub: its snapshot directory in the local
      Hugging Face cache, so nothing touches the network, or ``ConfigError`` at once when it is not cached (instead
      of a minute of retries).
    """
    p = Path(ref).expanduser()
    if p.exists():
        return str(p)
    if looks_like_path(ref):
        raise ConfigError(f"{where}={ref!r} does not exist; fix the path (a model or tokenizer directory, a .gguf "
                          "file) or give a Hub id like 'org/name'")
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(ref)
    except HFValidationError as err:
        raise ConfigError(f"{where}={ref!r} is neither an existing path nor a Hub id ({err}); give a local "
                          "directory or a Hub id like 'org/name'") from None
    offline = hub_offline()
    if not offline and hub_reachable():
        return ref
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(ref, revision=revision, local_files_only=True)
    except Exception as err:  # LocalEntryNotFoundError, IncompleteSnapshotError, an unreadable cache
        from huggingface_hub import constants

        why = ("HF_HUB_OFFLINE is set" if offline else f"the Hub ({constants.ENDPOINT}) is not reachable from here")
        raise ConfigError(f"{where}={ref!r} is neither a local path (nothing exists there) nor in the local Hugging "
                          f"Face cache ({constants.HF_HUB_CACHE}), and {why} ({type(err).__name__}); fix the path, or "
                          f"download the model first where the Hub is reachable (`hf download {ref}`)") from None


def load_tokenizer(mc: ModelConfig, role: str) -> Any:
    """The fast tokenizer of a model; a pad token is set to EOS when the tokenizer has none.

    Raises:
        ConfigError: no tokenizer files, a slow tokenizer, or one that drops characters (:func:`check_keeps_text`);
            the message names the ``{role}.tokenizer`` key that fixes it.
    """
    from transformers import AutoTokenizer

    ref = mc.tokenizer or mc.model
    where = f"{role}.tokenizer" if mc.tokenizer else f"{role}.model"
    if ref.endswith(".gguf"):
        ref = resolve_model_dir(mc, role) if not mc.tokenizer else ref
    ref = resolve_ref(ref, mc.revision, where)
    p = Path(ref)
    if p.is_dir():
        check_tokenizer_files(p, role, where)
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


def check_tokenizer_files(p: Path, role: str, where: str) -> None:
    """A tokenizer directory must hold a vocabulary file, and its ``tokenizer_config.json`` must be readable JSON (a
    save that was killed leaves it empty)."""
    if not any((p / f).exists() for f in TOKENIZER_FILES) and not any(p.glob("*.tiktoken")):
        raise ConfigError(f"{where}={str(p)!r} has no tokenizer files ({', '.join(TOKENIZER_FILES[:2])} ...); set "
                          f"{role}.tokenizer to the directory or Hub id of the {role}'s tokenizer")
    if not any((p / f).exists() for f in VOCABULARY_FILES) and not any(p.glob("*.tiktoken")):
        raise ConfigError(f"{where}={str(p)!r} has no vocabulary file ({', '.join(VOCABULARY_FILES[:4])}), only "
                          f"{', '.join(sorted(f.name for f in p.iterdir() if f.name.startswith('tokenizer')))}: the "
                          f"tokenizer was not saved completely; set {role}.tokenizer to a directory or Hub id that "
                          "holds the whole tokenizer")
    config = p / "tokenizer_config.json"
    if config.is_file():
        import json

        try:
            json.loads(config.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise ConfigError(f"{where}={str(p)!r}: {config.name} is empty or not valid JSON (a save that was "
                              f"interrupted?); save the tokenizer again, or set {role}.tokenizer to a directory or Hub "
                              "id that holds a complete one") from None


def check_keeps_text(tok: Any, role: str, where: str, ref: str) -> None:
    """Refuse a tokenizer that silently drops characters of ordinary text.

    Why: Transformers 5 chooses the tokenizer class from the model type and, for some types (``qwen2`` ...), rebuilds
    the pipeline of that class whatever ``tokenizer.json`` holds; a SentencePiece-style vocabulary loaded that way
    loses every character it cannot byte-encode, and training would go on with text missing and no error.
    """
    from crossdistill.data.render import PROBE_TEXT, lost_characters

    enc = tok(PROBE_TEXT, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    specials = set(getattr(tok, "all_special_ids", []) or [])
    if len(tok) <= len(specials) + 1 or not ids or all(i in specials for i in ids):
        raise ConfigError(f"{where}={ref!r} loads as a tokenizer with {len(tok)} token(s) that encodes plain text "
                          f"as special tokens only ({len(ids)} ids for {PROBE_TEXT[:20]!r}...): the directory holds no "
                          f"usable vocabulary; set {role}.tokenizer to the directory or Hub id of the {role}'s "
                          "tokenizer")
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
    if Path(ref).is_dir() and not any((Path(ref) / f).is_file() for f in ("config.json", "adapter_config.json")):
        raise ConfigError(f"{role}.model={mc.model!r} has no config.json, so it is not a saved model; give the "
                          "directory written by save_pretrained (or `crossdistill train`), a .gguf file or a Hub id")
    try:
        model = AutoModelForCausalLM.from_pretrained(ref, dtype=DTYPES[mc.dtype], revision=mc.revision)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot load {role}.model={mc.model!r}: {err}; give a directory written by "
                          "save_pretrained, a .gguf file or a Hub id") from None
    target = mc.device or device
    if target is not None:
        model.to(target)
    return model


def gguf_tokenizer_dir(path: str | Path) -> Path:
    """The tokenizer alone of a GGUF file, saved once in Hugging Face format under ``<cache>/tokenizers/<sha256>``.

    Why not :func:`resolve_model_dir`: that converts the weights too, which a tokenizer-only command does not need
    (reading a GGUF's tokenizer takes ~30-100 s; the cached copy loads in about a second).
    """
    from transformers import AutoTokenizer

    from crossdistill.assets import cache_root
    from crossdistill.io import publish_dir, sha256_file

    path = Path(path)
    target = cache_root() / "tokenizers" / sha256_file(path)
    if not (target / "tokenizer_config.json").is_file():
        print(f"[crossdistill] reading the tokenizer of {path.name} (once; cached at {target})", file=sys.stderr)
        tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        with publish_dir(target, if_exists="keep") as tmp:  # another process reading this GGUF may win: keep theirs
            tok.save_pretrained(tmp)
    return target


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


# ------------------------------------------------------------------------------------------------------ anatomy
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


def output_head(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float, float | None]:
    """``(weight [V, H], bias or None, logit_scale, final_logit_softcapping or None)`` of a causal LM's head."""
    m = base_model(model)
    head = m.get_output_embeddings()
    scale = float(getattr(m.config, "logit_scale", None) or 1.0)
    cap = getattr(m.config, "final_logit_softcapping", None)
    return head.weight, getattr(head, "bias", None), scale, float(cap) if cap else None


def head_logits(model: torch.nn.Module, rows: torch.Tensor, vocab_size: int | None = None,
                chunk_tokens: int = 1024) -> torch.Tensor:
    """``[M, H] -> [M, V]`` fp32 logits of some hidden rows through ``model``'s output head (logit scale and final
    soft-capping applied as the model's own forward does; padding columns beyond ``vocab_size`` sliced off),
    ``chunk_tokens`` rows at a time so the fp32 upcast never holds more than one chunk in the head's dtype."""
    weight, bias, scale, cap = output_head(model)

    def chunk(start: int) -> torch.Tensor:
        z = torch.nn.functional.linear(rows[start:start + chunk_tokens].to(weight.dtype), weight, bias).float()
        z = z * scale if scale != 1.0 else z
        if cap:
            z = torch.tanh(z / cap) * cap
        return z[:, :vocab_size] if vocab_size else z

    n = rows.shape[0]
    if n == 0:
        return rows.new_zeros(0, vocab_size or weight.shape[0], dtype=torch.float32)
    first = chunk(0)
    if n <= chunk_tokens:  # one chunk: returned as computed (a copy only when padding columns were sliced off)
        return first.contiguous()
    out = torch.empty((n, first.shape[1]), dtype=torch.float32, device=first.device)  # no list + cat (2x peak)
    out[:chunk_tokens] = first
    del first
    for start in range(chunk_tokens, n, chunk_tokens):
        out[start:start + chunk_tokens] = chunk(start)
    return out


def head_info(model: torch.nn.Module) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """``(weight [V, H], bias or None, logit_scale)`` of a causal LM's output head; refuses soft-capped heads,
    which the fused losses do not apply."""
    weight, bias, scale, cap = output_head(model)
    if cap:
        raise NotImplementedError(f"{type(base_model(model)).__name__} uses final logit soft-capping, which the fused "
                                  "losses do not apply yet")
    return weight, bias, scale


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


@contextlib.contextmanager
def capture_hidden(model: torch.nn.Module):
    """Capture the ``last_hidden_state`` (lm_head input) of ``model``'s decoder during the ``with`` block.

    Yields a one-element list that holds the tensor after the forward. The hook lives only for one forward, so a
    model can be wrapped (DDP, PEFT) or swapped without stale hooks.
    """
    box: list[torch.Tensor] = []

    def hook(module, args, output):
        box.append(output[0] if isinstance(output, tuple) else output.last_hidden_state)

    handle = decoder_of(model).register_forward_hook(hook)
    try:
        yield box
    finally:
        handle.remove()


def hidden_states(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """``[B, T, H]`` final hidden states from ONE call of ``model`` itself (so DDP/FSDP hooks fire) that computes no
    logit row at all instead of ``[B, T, V]``: ``logits_to_keep`` is an empty index tensor. (``logits_to_keep=1``
    kept one row, sliced as a non-contiguous ``[B, 1, H]`` view, which a bf16 CPU matmul handles by expanding the
    head weight per batch row: measured 18 s instead of 0.1 s for Gemma-3's 262k-row head.)"""
    no_rows = torch.zeros(0, dtype=torch.long, device=batch["input_ids"].device)
    with capture_hidden(model) as box:
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=no_rows,
              use_cache=False)
    if not box:
        raise RuntimeError("the decoder hook captured nothing; is this a causal LM with get_decoder()?")
    return box[-1]


# --------------------------------------------------------------------------------------------------- generation
@dataclass(frozen=True)
class Generation:
    """One generated completion."""

    ids: list[int]
    """Completion ids without padding; when ``ended``, the EOS is the last id and nothing follows it."""
    ended: bool
    """The model produced EOS within ``max_new_tokens``."""
    text: str
    """The completion decoded with special tokens (EOS, padding) removed."""


def _prompt_as_ids(tok: Any, prompt: Any) -> list[int]:
    """Ids of one prompt: token ids are kept, text or chat messages are rendered; then the prefix specials are added
    where missing, as render() does (ids that came from render() already have them and stay unchanged)."""
    from crossdistill.data.render import add_prefix_specials, prompt_ids

    if isinstance(prompt, torch.Tensor):
        prompt = prompt.tolist()
    if isinstance(prompt, str) or (len(prompt) > 0 and not all(isinstance(i, int) for i in prompt)):
        return prompt_ids(tok, prompt)
    return add_prefix_specials(tok, prompt)[0]


def left_pad(rows: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids [B, W], attention_mask [B, W])`` with every row right-aligned: generation continues right after
    each prompt's last token."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attn = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r):] = torch.tensor(list(r), dtype=torch.long)
            attn[i, width - len(r):] = 1
    return ids, attn


def _cut_at_eos(row: list[int], eos_id: int | None) -> tuple[list[int], bool]:
    """``(ids up to and including the first EOS, ended)``. HF pads a finished row with pad ids only after its EOS,
    so a row without EOS is all samples."""
    if eos_id is not None and eos_id in row:
        return row[: row.index(eos_id) + 1], True
    return row, False


def _generate_batch(model: torch.nn.Module, tok: Any, rows: list[list[int]], pad: int,
                    hf_kwargs: dict[str, Any]) -> list[Generation]:
    """One ``model.generate`` call over left-padded ``rows`` (prompt ids)."""
    device = next(model.parameters()).device
    ids, attn = left_pad(rows, pad)
    out = model.generate(input_ids=ids.to(device), attention_mask=attn.to(device), pad_token_id=pad,
                         eos_token_id=tok.eos_token_id, **hf_kwargs)
    result = []
    for row in out[:, ids.shape[1]:].tolist():
        kept, ended = _cut_at_eos(row, tok.eos_token_id)
        text = tok.decode(kept, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        result.append(Generation(kept, ended, text))
    return result


def _sampling_kwargs(max_new_tokens: int, do_sample: bool, temperature: float, top_p: float,
                     top_k: int | None) -> dict[str, Any]:
    """HF ``generate`` options. Greedy decoding passes no sampling options (HF warns about unused ones);
    ``top_k=None`` leaves the model's own ``generation_config`` value in place, ``0`` turns top-k off."""
    kw: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
    if do_sample:
        kw.update(temperature=temperature, top_p=top_p)
        if top_k is not None:
            kw["top_k"] = top_k
    return kw


@torch.no_grad()
def generate(model: torch.nn.Module, tok: Any, prompts: Sequence[Any], *, max_new_tokens: int,
             do_sample: bool = False, temperature: float = 1.0, top_p: float = 1.0, top_k: int | None = None,
             seed: int | None = None, batch_size: int | None = None, progress: bool = False,
             desc: str = "generate") -> list[Generation]:
    """Generate one completion per prompt with HF ``generate`` (greedy, or sampling with ``do_sample``).

    Args:
        prompts: each chat messages or a prompt string (rendered with ``tok``'s own template), or prompt token ids
            (e.g. ``Rendered.input_ids[:completion_start]``, kept exactly). Either way the tokenizer's prefix
            specials are put in front where missing, by render()'s rule.
        top_k: ``None`` keeps the model's ``generation_config`` value, ``0`` turns top-k off.
        seed: sample under a private RNG state seeded by it (the global RNG is untouched), so the same seed gives
            the same samples whatever consumed random numbers before; ``None`` uses the global RNG.
        batch_size: prompts per ``generate`` call, in the given order (``None``: all at once).

    Returns:
        one :class:`Generation` per prompt, in order. The model's train/eval mode is restored afterwards.
    """
    from tqdm.auto import tqdm

    rows = [_prompt_as_ids(tok, p) for p in prompts]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    hf_kwargs = _sampling_kwargs(max_new_tokens, do_sample, temperature, top_p, top_k)
    step = batch_size or max(len(rows), 1)
    rng = contextlib.nullcontext() if seed is None else _private_rng(seed)
    was_training = model.training
    model.eval()
    out: list[Generation] = []
    try:
        with rng:
            for s in tqdm(range(0, len(rows), step), desc=desc, disable=not progress, leave=False):
                out += _generate_batch(model, tok, rows[s:s + step], pad, hf_kwargs)
    finally:
        model.train(was_training)
    return out


@contextlib.contextmanager
def _private_rng(seed: int):
    """Run the block under torch RNG state seeded by ``seed``; the previous state is restored afterwards."""
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield
