"""Every config check that needs neither models nor tokenizers: value ranges, impossible combinations, paths and
teacher caches. Each error names the field, the value and the fix."""

from __future__ import annotations

from pathlib import Path

from crossdistill.config.schema import CacheBuildConfig, DistillConfig
from crossdistill.errors import ConfigError
from crossdistill.manifest import MANIFEST_NAME, Manifest
from crossdistill.methods import Method, Setup, get_method, sparse_teacher_methods


def _is_local_like(ref: str) -> bool:
    return ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or Path(ref).exists() or ref.count("/") > 1


def _check_model_ref(ref: str, where: str) -> None:
    if not ref:
        raise ConfigError(f"{where} is empty; give a Hub id, a local model directory or a .gguf file")
    p = Path(ref).expanduser()
    if _is_local_like(ref) and not p.exists():
        raise ConfigError(f"{where}={ref!r} does not exist; fix the path (a model directory, a .gguf file) "
                          "or give a Hub id like 'org/name'")


def _check_cache_objective(cfg: DistillConfig, method: Method) -> None:
    """What a teacher cache can feed: a sparse signal at the dataset's own completion tokens, nothing else."""
    where = f"teacher.cache={cfg.teacher.cache!r}"
    readable = sparse_teacher_methods()
    if not method.needs_teacher:
        raise ConfigError(f"{where} is set but loss.name={cfg.loss.name!r} uses no teacher; choose a distillation "
                          f"loss that reads the cache (one of {readable}) or remove teacher.cache")
    if not method.sparse_teacher:
        raise ConfigError(f"{where} with loss.name={cfg.loss.name!r}: training from a cache supports the methods "
                          f"{readable} (the cached top-k is a sparse distribution over the teacher's vocabulary); "
                          "the other cross-tokenizer and hidden-state methods need the online teacher: remove "
                          "teacher.cache and set teacher.model")
    if cfg.onpolicy.lmbda > 0:
        raise ConfigError(f"{where} with onpolicy.lmbda={cfg.onpolicy.lmbda}: on-policy steps need the teacher to score "
                          "the student's own samples, which no cache holds; set onpolicy.lmbda=0, or drop "
                          "teacher.cache and use teacher.model")
    if cfg.onpolicy.seq_kd:
        raise ConfigError(f"{where} with onpolicy.seq_kd=true: SeqKD samples completions from the teacher model, "
                          "which a cache does not replace; set onpolicy.seq_kd=false, or drop teacher.cache and use "
                          "teacher.model")


def _method_setup(cfg: DistillConfig, params) -> Setup:
    t = cfg.teacher
    source = "none" if t is None else ("cache" if t.cache is not None else "model")
    return Setup(params=params, teacher_source=source, on_policy=cfg.onpolicy.lmbda > 0,
                 has_teacher_tokenizer=t is not None and bool(t.tokenizer or t.model))


def _check_method(cfg: DistillConfig) -> Method:
    """The method exists, its parameters parse (types and ranges), its weights name its terms, and its own
    pre-flight check accepts the run."""
    method = get_method(cfg.loss.name)
    params = method.parse_params(cfg.loss.params)
    bad_w = sorted(set(cfg.loss.weights) - set(method.default_weights))
    if bad_w:
        raise ConfigError(f"loss.weights has unknown terms {bad_w} for loss.name={cfg.loss.name!r}; "
                          f"its terms are {sorted(method.default_weights)}")
    for k, w in cfg.loss.weights.items():
        if w < 0:
            raise ConfigError(f"loss.weights.{k}={w} is negative; weights must be >= 0")
    if cfg.teacher is not None and cfg.teacher.cache is not None:
        _check_cache_objective(cfg, method)
    if method.check is not None:
        method.check(_method_setup(cfg, params))
    return method


def _check_cache_path(ref: str) -> None:
    """``teacher.cache`` must be a complete teacher cache written at temperature 1. Only its manifest is read here
    (the shards' presence and sizes are checked when training opens the cache, still before any weights load)."""
    p = Path(ref).expanduser()
    if not p.exists():
        raise ConfigError(f"teacher.cache={ref!r} does not exist; give the output directory of `crossdistill cache` "
                          "(build one with: crossdistill cache RECIPE output=DIR)")
    if not p.is_dir():
        raise ConfigError(f"teacher.cache={ref!r} is a file, not a cache directory; give the output directory of "
                          "`crossdistill cache` (it holds manifest.json and shard-*.safetensors)")
    if not (p / MANIFEST_NAME).is_file():
        hint = (" A run is in progress or was interrupted: rerun `crossdistill cache` with the same recipe to finish "
                "it." if (p / ".plan.json").exists() else " Build one with `crossdistill cache RECIPE`.")
        raise ConfigError(f"teacher.cache={ref!r} is not a usable teacher cache: {p} has no {MANIFEST_NAME}.{hint}")
    try:
        manifest = Manifest.read(p)
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"teacher.cache={ref!r} is not a usable teacher cache: its {MANIFEST_NAME} is unreadable "
                          f"({err}); rebuild it with `crossdistill cache RECIPE`") from None
    if manifest.kind != "cache":
        raise ConfigError(f"teacher.cache={ref!r} is not a usable teacher cache: {p} holds a {manifest.kind!r}, not "
                          "a teacher cache; give the output directory of `crossdistill cache`")
    t_cache = manifest.temperatures.get("distillation", 1.0)
    if t_cache != 1.0:
        # The losses temper stored log-probs by loss.temperature themselves; a cache tempered already would be
        # tempered twice.
        raise ConfigError(f"teacher.cache={ref!r} stores log-probs at temperature {t_cache}; training applies "
                          "loss.temperature to the stored values itself, so the cache must be written at temperature "
                          "1: rebuild it with `crossdistill cache ... temperature=1` and set loss.temperature instead")


SAMPLED_MAX_K = 255
"""The sampled support stores per-id draw counts as uint8, so at most 255 draws fit."""


def validate_cache_build(cb: CacheBuildConfig, require_inputs: bool = True) -> None:
    """Range checks of ``crossdistill cache``'s settings, completed by
    :meth:`~crossdistill.config.DistillConfig.resolved_cache_build` (its ``teacher``, ``data`` and ``max_length``
    filled in from the recipe), so they fail before any model loads. Raises :class:`ConfigError`.

    ``require_inputs=False`` skips the check that ``teacher``, ``data`` and ``output`` are set: a training run that
    carries the section without running it may leave them out (e.g. ``teacher.model`` dropped next to
    ``teacher.cache``).
    """
    missing = [name for name in ("teacher", "data", "output") if not getattr(cb, name)]
    if missing and require_inputs:
        raise ConfigError(f"cache_build is missing {missing}: set cache_build.output (the cache directory to write), "
                          "and cache_build.teacher / cache_build.data unless the recipe's teacher.model / data.train "
                          "give them (on the command line: " + " ".join(f"{m}=..." for m in missing) + ")")
    if cb.k < 1:
        raise ConfigError(f"cache_build.k={cb.k} must be >= 1; use a positive integer such as 32")
    if cb.support == "sampled" and cb.k > SAMPLED_MAX_K:
        raise ConfigError(f"cache_build.k={cb.k} with cache_build.support='sampled': draw counts are stored as "
                          f"uint8; use k <= {SAMPLED_MAX_K}")
    if cb.temperature <= 0:
        raise ConfigError(f"cache_build.temperature={cb.temperature} must be > 0; use 1.0 (training tempers the "
                          "stored log-probs by loss.temperature itself)")
    if cb.max_length is None:
        raise ConfigError("cache_build.max_length=None was not filled in from data.max_length; build the settings "
                          "with load_cache_build_config or cache_build_from_dict, or give max_length")
    for name in ("examples_per_shard", "batch_size", "max_length", "workers"):
        if getattr(cb, name) < 1:
            raise ConfigError(f"cache_build.{name}={getattr(cb, name)} must be >= 1; use a positive integer")
    if cb.limit is not None and cb.limit < 1:
        raise ConfigError(f"cache_build.limit={cb.limit} must be >= 1; use a positive integer, or null for all "
                          "examples")


def validate(cfg: DistillConfig, check_paths: bool = True) -> None:
    """Every check that needs neither models nor tokenizers. Raises :class:`ConfigError`."""
    method = _check_method(cfg)
    if cfg.loss.temperature <= 0:
        raise ConfigError(f"loss.temperature={cfg.loss.temperature} must be > 0 (1.0 is standard)")
    if cfg.loss.chunk_tokens < 1:
        raise ConfigError(f"loss.chunk_tokens={cfg.loss.chunk_tokens} must be >= 1")

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
    if op.lmbda > 0 and not method.needs_teacher:
        raise ConfigError(f"onpolicy.lmbda={op.lmbda} with loss.name={cfg.loss.name!r}: on-policy steps need a "
                          "teacher objective to score the student's samples; use e.g. loss.name=forward_kl")
    if op.backend == "vllm":
        raise ConfigError("onpolicy.backend='vllm': vLLM rollouts are not implemented yet; use onpolicy.backend=hf")
    needs_teacher = method.needs_teacher or op.seq_kd
    if needs_teacher and cfg.teacher is None:
        why = f"loss.name={cfg.loss.name!r}" if method.needs_teacher else "onpolicy.seq_kd=true"
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
    if cfg.cache_build is not None:  # only `crossdistill cache` runs it, but an out-of-range value is refused anyway
        validate_cache_build(cfg.resolved_cache_build(), require_inputs=False)

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
