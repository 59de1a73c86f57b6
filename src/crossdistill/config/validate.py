"""Every config check that needs neither models nor tokenizers: value ranges, impossible combinations, paths and
teacher caches. Each error names the field, the value and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from crossdistill.config.schema import ConfigError, DistillConfig


def _is_local_like(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or Path(ref).exists() or ref.count("/") > 1


def _check_model_ref(ref: str, where: str) -> None:
    if not ref:
        raise ConfigError(f"{where} is empty; give a Hub id, a local model directory or a .gguf file")
    p = Path(ref).expanduser()
    if _is_local_like(ref) and not p.exists():
        raise ConfigError(f"{where}={ref!r} does not exist; fix the path (a model directory, a .gguf file) "
                          "or give a Hub id like 'org/name'")


def _check_cache_objective(cfg: DistillConfig, spec: Any) -> None:
    """What a teacher cache can feed: a sparse signal at the dataset's own completion tokens, nothing else."""
    from crossdistill.train.objectives import OBJECTIVES, SAME_VOCAB_DIVERGENCES

    where = f"teacher.cache={cfg.teacher.cache!r}"
    supported = sorted(SAME_VOCAB_DIVERGENCES)
    if not spec.needs_teacher:
        raise ConfigError(f"{where} is set but loss.name={cfg.loss.name!r} uses no teacher; choose a distillation "
                          f"loss that reads the cache (one of {supported}) or remove teacher.cache")
    cross = sorted(n for n, s in OBJECTIVES.items() if s.sparse_teacher)
    readable = (spec.sparse_teacher if spec.cross_tokenizer
                else spec.teacher_input == "signal" or spec.name in SAME_VOCAB_DIVERGENCES)
    if not readable:
        raise ConfigError(f"{where} with loss.name={cfg.loss.name!r}: training from a cache supports the "
                          f"same-vocabulary losses {supported} and the cross-tokenizer losses {cross} (the cached "
                          "top-k is a sparse distribution over the teacher's vocabulary); the other cross-tokenizer "
                          "and hidden-state objectives need the online teacher: remove teacher.cache and set "
                          "teacher.model")
    if spec.name == "uld" and cfg.loss.params.get("variant", "aligned") != "aligned":
        raise ConfigError(f"{where} with loss.params.variant={cfg.loss.params['variant']!r}: positional ULD needs the "
                          "teacher's logits at every position; use variant 'aligned' (the default) with a cache")
    if spec.name == "gold_hybrid" and not (cfg.teacher.tokenizer or cfg.teacher.model):
        raise ConfigError(f"{where} with loss.name='gold_hybrid': its vocabulary map needs the teacher's tokenizer; "
                          "set teacher.tokenizer (or teacher.model) to the tokenizer the cache was written with")
    if cfg.onpolicy.lmbda > 0:
        raise ConfigError(f"{where} with onpolicy.lmbda={cfg.onpolicy.lmbda}: on-policy steps need the teacher to score "
                          "the student's own samples, which no cache holds; set onpolicy.lmbda=0, or drop "
                          "teacher.cache and use teacher.model")
    if cfg.onpolicy.seq_kd:
        raise ConfigError(f"{where} with onpolicy.seq_kd=true: SeqKD samples completions from the teacher model, "
                          "which a cache does not replace; set onpolicy.seq_kd=false, or drop teacher.cache and use "
                          "teacher.model")


def _check_cache_path(ref: str) -> None:
    """``teacher.cache`` must be a complete teacher cache written at temperature 1 (opening it reads its manifest
    and checks every shard's presence and size, not the shards' contents)."""
    from crossdistill.teacher.reader import CacheError, CacheReader

    p = Path(ref).expanduser()
    if not p.exists():
        raise ConfigError(f"teacher.cache={ref!r} does not exist; give the output directory of `crossdistill cache` "
                          "(build one with: crossdistill cache RECIPE output=DIR)")
    if not p.is_dir():
        raise ConfigError(f"teacher.cache={ref!r} is a file, not a cache directory; give the output directory of "
                          "`crossdistill cache` (it holds manifest.json and shard-*.safetensors)")
    try:
        reader = CacheReader(p)
    except (CacheError, ValueError, KeyError) as err:
        raise ConfigError(f"teacher.cache={ref!r} is not a usable teacher cache: {err}") from None
    t_cache = reader.manifest.temperatures.get("distillation", 1.0)
    if t_cache != 1.0:
        # The losses temper stored log-probs by loss.temperature themselves; a cache tempered already would be
        # tempered twice.
        raise ConfigError(f"teacher.cache={ref!r} stores log-probs at temperature {t_cache}; training applies "
                          "loss.temperature to the stored values itself, so the cache must be written at temperature "
                          "1: rebuild it with `crossdistill cache ... temperature=1` and set loss.temperature instead")


def validate(cfg: DistillConfig, check_paths: bool = True) -> None:
    """Every check that needs neither models nor tokenizers. Raises :class:`ConfigError`."""
    from crossdistill.train.objectives import get_objective

    try:
        spec = get_objective(cfg.loss.name)
    except KeyError as err:
        raise ConfigError(err.args[0]) from None
    unknown = sorted(set(cfg.loss.params) - set(spec.params))
    if unknown:
        raise ConfigError(f"loss.params has unknown keys {unknown} for loss.name={cfg.loss.name!r}; "
                          f"it accepts {sorted(spec.params) or 'no parameters'}")
    bad_w = sorted(set(cfg.loss.weights) - set(spec.default_weights))
    if bad_w:
        raise ConfigError(f"loss.weights has unknown terms {bad_w} for loss.name={cfg.loss.name!r}; "
                          f"its terms are {sorted(spec.default_weights)}")
    for k, w in cfg.loss.weights.items():
        if w < 0:
            raise ConfigError(f"loss.weights.{k}={w} is negative; weights must be >= 0")
    if cfg.loss.temperature <= 0:
        raise ConfigError(f"loss.temperature={cfg.loss.temperature} must be > 0 (1.0 is standard)")
    if cfg.loss.chunk_tokens < 1:
        raise ConfigError(f"loss.chunk_tokens={cfg.loss.chunk_tokens} must be >= 1")

    if cfg.teacher is not None and cfg.teacher.cache is not None:
        _check_cache_objective(cfg, spec)

    op = cfg.onpolicy
    if not 0.0 <= op.lmbda <= 1.0:
        raise ConfigError(f"onpolicy.lmbda={op.lmbda} is outside [0, 1]; it is the probability of an on-policy "
                          "step (0 = off-policy only, 1 = always student samples)")
    if (op.lmbda > 0 or op.seq_kd) and not op.max_new_tokens:
        what = "onpolicy.lmbda > 0" if op.lmbda > 0 else "onpolicy.seq_kd=true"
        raise ConfigError(f"{what} needs a generation length: set onpolicy.max_new_tokens (e.g. 128); "
                          f"got onpolicy.max_new_tokens={op.max_new_tokens!r}")
    if op.max_new_tokens is not None and op.max_new_tokens < 1:
        raise ConfigError(f"onpolicy.max_new_tokens={op.max_new_tokens} must be >= 1")
    if op.temperature <= 0:
        raise ConfigError(f"onpolicy.temperature={op.temperature} must be > 0 for sampling")
    if not 0 < op.top_p <= 1:
        raise ConfigError(f"onpolicy.top_p={op.top_p} must be in (0, 1]")
    if op.lmbda > 0 and not spec.needs_teacher:
        raise ConfigError(f"onpolicy.lmbda={op.lmbda} with loss.name={cfg.loss.name!r}: on-policy steps need a "
                          "teacher objective to score the student's samples; use e.g. loss.name=forward_kl")
    if op.backend == "vllm":
        raise ConfigError("onpolicy.backend='vllm': vLLM rollouts are not implemented yet; use onpolicy.backend=hf")
    needs_teacher = spec.needs_teacher or op.seq_kd
    if needs_teacher and cfg.teacher is None:
        why = f"loss.name={cfg.loss.name!r}" if spec.needs_teacher else "onpolicy.seq_kd=true"
        raise ConfigError(f"{why} needs a teacher, but the config has none; add a teacher: section with "
                          "teacher.model (Hub id, directory or .gguf)")
    if cfg.student.lora.enabled and cfg.student.lora.r < 1:
        raise ConfigError(f"student.lora.r={cfg.student.lora.r} must be >= 1")
    if cfg.teacher is not None and cfg.teacher.lora.enabled:
        raise ConfigError("teacher.lora.enabled=true: the teacher is frozen; LoRA applies to the student only")

    d = cfg.data
    if d.max_length < 2:
        raise ConfigError(f"data.max_length={d.max_length} must be >= 2 (a prompt token and a target)")
    if not 0 <= d.eval_fraction < 1:
        raise ConfigError(f"data.eval_fraction={d.eval_fraction} must be in [0, 1)")
    t = cfg.train
    for name in ("per_device_batch_size", "grad_accum", "logging_steps"):
        if getattr(t, name) < 1:
            raise ConfigError(f"train.{name}={getattr(t, name)} must be >= 1")
    if t.max_steps == 0 or t.max_steps < -1:
        raise ConfigError(f"train.max_steps={t.max_steps} must be -1 (use num_epochs) or >= 1")
    if t.learning_rate < 0:
        raise ConfigError(f"train.learning_rate={t.learning_rate} must be >= 0")

    if check_paths:
        _check_model_ref(cfg.student.model, "student.model")
        if cfg.teacher is not None and cfg.teacher.cache is not None:
            _check_cache_path(cfg.teacher.cache)
            if cfg.teacher.model:  # optional next to a cache: only its tokenizer loads, to check the cache's
                _check_model_ref(cfg.teacher.model, "teacher.model")
            if cfg.teacher.tokenizer:
                _check_model_ref(cfg.teacher.tokenizer, "teacher.tokenizer")
        elif cfg.teacher is not None:
            if not cfg.teacher.model:
                raise ConfigError("teacher.model is empty; give a Hub id, a local model directory or a .gguf file, "
                                  "or set teacher.cache to the output directory of `crossdistill cache`")
            _check_model_ref(cfg.teacher.model, "teacher.model")
            if cfg.teacher.model.endswith(".gguf") and not cfg.teacher.tokenizer:
                pass  # the GGUF carries its tokenizer; checked when tokenizers load
        if not d.train:
            raise ConfigError("data.train is empty; give a jsonl / parquet file or a datasets directory")
        for name in ("train", "eval"):
            ref = getattr(d, name)
            if ref and not Path(ref).exists():
                raise ConfigError(f"data.{name}={ref!r} does not exist; fix the path (jsonl, parquet, or a "
                                  "datasets directory)")
