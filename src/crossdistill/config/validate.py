"""Every config check that needs neither models nor tokenizers: value ranges, impossible combinations, paths and
teacher caches. Each error names the field, the value and the fix."""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from crossdistill.config.schema import (
    CacheBuildConfig,
    DistillConfig,
    GenerateConfig,
    LambdaSchedule,
    OnPolicyConfig,
    TeacherServerConfig,
)
from crossdistill.config.train_checks import check_device, check_output_paths, check_train
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
    if cfg.onpolicy.highest_lmbda > 0:
        raise ConfigError(f"{where} with onpolicy.lmbda={_lmbda_text(cfg.onpolicy)}: "
                          "on-policy steps need the teacher to score "
                          "the student's own samples, which no cache holds; set onpolicy.lmbda=0, or drop "
                          "teacher.cache and use teacher.model")
    if cfg.onpolicy.seq_kd:
        raise ConfigError(f"{where} with onpolicy.seq_kd=true: SeqKD samples completions from the teacher model, "
                          "which a cache does not replace; set onpolicy.seq_kd=false, or drop teacher.cache and use "
                          "teacher.model")


def _check_server_objective(cfg: DistillConfig, method: Method) -> None:
    """What a served teacher can feed: a sparse top-k signal over any rendering the client sends it, so on-policy
    samples too (they are re-rendered for the teacher and scored), but no teacher generation."""
    t = cfg.teacher
    where = f"teacher.server.url={t.server.url!r}"
    readable = sparse_teacher_methods()
    if t.cache is not None:
        raise ConfigError(f"{where} and teacher.cache={t.cache!r} are both set; a run reads its teacher from one "
                          "source: remove teacher.cache (score with the server) or teacher.server (read the cache)")
    if not method.needs_teacher:
        raise ConfigError(f"{where} is set but loss.name={cfg.loss.name!r} uses no teacher; choose a distillation "
                          f"loss that reads a sparse teacher (one of {readable}) or remove teacher.server")
    if not method.sparse_teacher:
        raise ConfigError(f"{where} with loss.name={cfg.loss.name!r}: a served teacher returns top-k log-probs, "
                          f"which the methods {readable} read; the other cross-tokenizer and hidden-state methods "
                          "need the teacher's full logits or hidden states: remove teacher.server and set "
                          "teacher.model, or choose one of those methods")
    if cfg.onpolicy.seq_kd:
        raise ConfigError(f"{where} with onpolicy.seq_kd=true: SeqKD samples completions from an in-process teacher "
                          "model; set onpolicy.seq_kd=false (on-policy student samples, onpolicy.lmbda, do work with a "
                          "server), or write the teacher's samples first with `crossdistill generate`")


def _check_server_settings(sv: TeacherServerConfig, where: str) -> None:
    """Ranges of a ``TeacherServerConfig`` or ``RolloutServerConfig`` (``where``: ``teacher.server``,
    ``cache_build.server`` or ``onpolicy.server``)."""
    if not re.match(r"^https?://[^/\s]+", sv.url or ""):
        raise ConfigError(f"{where}.url={sv.url!r} is not an http(s) URL; give the server's base URL, e.g. "
                          f"{where}.url=http://127.0.0.1:8000")
    if getattr(sv, "top_k", 1) < 1:
        raise ConfigError(f"{where}.top_k={sv.top_k} must be >= 1 (log-probs per position; at most the server's "
                          "--max-logprobs), e.g. 20")
    if not sv.timeout > 0:
        raise ConfigError(f"{where}.timeout={sv.timeout} must be > 0 seconds, e.g. 120")
    if sv.retries < 0:
        raise ConfigError(f"{where}.retries={sv.retries} must be >= 0 (0: fail on the first transient error)")
    if sv.backoff < 0:
        raise ConfigError(f"{where}.backoff={sv.backoff} must be >= 0 seconds")
    if sv.concurrency < 1:
        raise ConfigError(f"{where}.concurrency={sv.concurrency} must be >= 1 (requests in flight), e.g. 8")
    if sv.api_key_env is not None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", sv.api_key_env):
            raise ConfigError(f"{where}.api_key_env={sv.api_key_env!r} is not an environment variable name; give the "
                              "NAME of the variable that holds the key (e.g. VLLM_API_KEY), never the key itself")
        if not os.environ.get(sv.api_key_env):
            raise ConfigError(f"{where}.api_key_env={sv.api_key_env!r}: that environment variable is not set; "
                              f"export {sv.api_key_env}=<the server's --api-key> before the run, or remove "
                              f"{where}.api_key_env for a server without a key")


def _method_setup(cfg: DistillConfig, params) -> Setup:
    t = cfg.teacher
    source = "none" if t is None else ("cache" if t.cache is not None else
                                       "server" if t.server is not None else "model")
    return Setup(params=params, teacher_source=source, on_policy=cfg.onpolicy.highest_lmbda > 0,
                 has_teacher_tokenizer=t is not None and bool(t.tokenizer or t.model),
                 teacher_top_k=_sparse_top_k(t, source))


def _sparse_top_k(t, source: str) -> int | None:
    """How many teacher log-probs per position a sparse teacher provides (the cache's k, the server's top_k)."""
    if source == "server":
        return t.server.top_k
    if source == "cache" and (Path(t.cache).expanduser() / MANIFEST_NAME).is_file():
        try:
            return int(Manifest.read(Path(t.cache).expanduser()).k)
        except (ValueError, KeyError, TypeError):
            return None  # an unreadable manifest is reported by the cache path check
    return None


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
    weights = {**method.default_weights, **cfg.loss.weights}
    if not any(w > 0 for w in weights.values()):
        raise ConfigError(f"loss.weights={cfg.loss.weights}: every term of loss.name={cfg.loss.name!r} has weight 0, "
                          f"so nothing would be trained; give at least one of {sorted(weights)} a positive weight")
    if cfg.onpolicy.highest_lmbda > 0 and not cfg.onpolicy.ce_on_samples:
        if not any(w > 0 for k, w in weights.items() if k not in method.terms_off_on_samples):
            warnings.warn(
                f"onpolicy.lmbda > 0 with loss.name={cfg.loss.name!r}: on the student's own samples its terms "
                f"{sorted(k for k, w in weights.items() if w > 0)} only reward what it sampled (no token identity "
                "from the teacher), so they get weight 0 there and every on-policy step trains nothing. Use a "
                "method that compares token identities on samples (gold_hybrid, xtoken_hkl, cdm, forward_kl, ...), "
                "set onpolicy.lmbda: 0, or onpolicy.ce_on_samples: true to train these terms on samples anyway.",
                UserWarning, stacklevel=2)
    if cfg.teacher is not None and cfg.teacher.server is not None:
        _check_server_settings(cfg.teacher.server, "teacher.server")
        _check_server_objective(cfg, method)
    elif cfg.teacher is not None and cfg.teacher.cache is not None:
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


def validate_generate(g: GenerateConfig, require_output: bool = True) -> None:
    """Ranges of ``crossdistill generate``'s settings (the ``generate:`` section). ``require_output=False``: a
    training recipe may leave ``generate.output`` empty (only ``crossdistill generate`` needs it)."""
    import math

    if require_output and not g.output:
        raise ConfigError("generate.output is empty; give the directory to write the generated dataset to, e.g. "
                          "generate.output=outputs/generated")
    if not math.isfinite(g.temperature) or g.temperature < 0:
        raise ConfigError(f"generate.temperature={g.temperature} must be a finite number >= 0 (0 decodes greedily, "
                          "> 0 samples at that temperature), e.g. 0 or 0.7")
    if not (math.isfinite(g.top_p) and 0 < g.top_p <= 1):
        raise ConfigError(f"generate.top_p={g.top_p} must be in (0, 1] (1 keeps the whole distribution), e.g. 0.95")
    if g.max_new_tokens < 1:
        raise ConfigError(f"generate.max_new_tokens={g.max_new_tokens} must be >= 1 (tokens generated per prompt), "
                          "e.g. 128")
    if g.batch_size < 1:
        raise ConfigError(f"generate.batch_size={g.batch_size} must be >= 1 (prompts per generate call), e.g. 8")


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
    if cb.server is not None:
        _check_server_settings(cb.server, "cache_build.server")
        if cb.support != "topk":
            raise ConfigError(f"cache_build.support={cb.support!r} with a served teacher (cache_build.server or "
                              "teacher.server): a server returns its top-k log-probs, not the full distribution to "
                              "sample from; set cache_build.support=topk, or drop the server to sample in-process")
        if cb.temperature != 1.0:
            raise ConfigError(f"cache_build.temperature={cb.temperature} with a served teacher: the server's "
                              "prompt log-probs are at temperature 1; set cache_build.temperature=1 (training applies "
                              "loss.temperature itself)")


def _lmbda_text(op: OnPolicyConfig) -> str:
    """``onpolicy.lmbda`` as an error message shows it: the number, or the schedule's kind and nonzero bound."""
    lm = op.lmbda
    return f"{lm}" if not isinstance(lm, LambdaSchedule) else f"{{kind: {lm.kind}, up to {lm.highest}}}"


def _check_lmbda(op: OnPolicyConfig) -> None:
    """``onpolicy.lmbda``: a probability, or a schedule whose every value is one (docs/training.md, "λ schedules")."""
    lm = op.lmbda
    if not isinstance(lm, LambdaSchedule):
        if not 0.0 <= lm <= 1.0:
            raise ConfigError(f"onpolicy.lmbda={lm} is outside [0, 1]; it is the probability of an on-policy "
                              "step (0 = off-policy only, 1 = always student samples)")
        return
    w = "onpolicy.lmbda"
    probabilities = ["start", "lower", "upper"] + ([] if lm.end is None else ["end"])
    for name in probabilities:
        v = getattr(lm, name)
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{w}.{name}={v} is outside [0, 1]; every value of a λ schedule is the probability "
                              "of an on-policy step: give a number in [0, 1]")
    if lm.kind in ("linear", "cosine"):
        if lm.end is None:
            raise ConfigError(f"{w}.kind={lm.kind!r} needs {w}.end (the λ the ramp reaches); got {w}.end=None: "
                              f"set e.g. {w}.end=0.5")
        if not 0.0 <= lm.ramp_start < lm.ramp_end <= 1.0:
            raise ConfigError(f"{w}.ramp_start={lm.ramp_start}, {w}.ramp_end={lm.ramp_end}: the ramp must satisfy "
                              "0 <= ramp_start < ramp_end <= 1 (fractions of the run's optimizer steps); e.g. "
                              "ramp_start=0, ramp_end=0.5 ramps over the first half")
    elif lm.end is not None and lm.end != lm.start:
        raise ConfigError(f"{w}.end={lm.end} with {w}.kind={lm.kind!r}: only linear and cosine ramps use end; "
                          f"set {w}.kind=linear (or cosine) to ramp from start={lm.start} to end={lm.end}, or "
                          "remove end")
    if lm.kind == "adaptive":
        if not 0.0 < lm.lower <= lm.upper:
            raise ConfigError(f"{w}.lower={lm.lower}, {w}.upper={lm.upper}: the adaptive rule needs "
                              "0 < lower <= upper (with lower = 0 λ could reach 0 and on-policy steps, its signal, "
                              "would never be measured again); e.g. lower=0.05, upper=1")
        if not lm.lower <= lm.start <= lm.upper:
            raise ConfigError(f"{w}.start={lm.start} is outside [lower, upper] = [{lm.lower}, {lm.upper}]; the "
                              "adaptive rule starts at start (until both an on- and an off-policy step are "
                              f"measured): set e.g. {w}.start={(lm.lower + lm.upper) / 2:g}")
        if lm.sensitivity <= 0:
            raise ConfigError(f"{w}.sensitivity={lm.sensitivity} must be > 0 (how fast λ rises with the gap; "
                              "2 is the default)")
        if not 0.0 <= lm.ema < 1.0:
            raise ConfigError(f"{w}.ema={lm.ema} must be in [0, 1) (the decay of the moving averages; 0.8 is the "
                              "default)")


def validate(cfg: DistillConfig, check_paths: bool = True, pending: frozenset[str] = frozenset()) -> None:
    """Every check that needs neither models nor tokenizers. Raises :class:`ConfigError`.

    One run: a recipe with ``chain:`` is validated stage by stage by :func:`crossdistill.config.chain.chain_stages`
    (which calls this for each stage; :func:`crossdistill.config.load_config` dispatches). ``pending``: model
    directories an earlier stage of a chain will write, which need not exist yet."""
    if cfg.chain is not None:
        raise ConfigError("validate() checks one run; a recipe with chain: is validated stage by stage with "
                          "crossdistill.config.chain.chain_stages (load_config does this)")
    if cfg.teachers is not None:  # several teachers: theirs checked here, the rest as a run from the first
        from crossdistill.config.teachers import check_teachers

        check_teachers(cfg, get_method(cfg.loss.name), _check_model_ref if check_paths else None)
        cfg = cfg.with_first_teacher()
    method = _check_method(cfg)
    if cfg.loss.temperature <= 0:
        raise ConfigError(f"loss.temperature={cfg.loss.temperature} must be > 0 (1.0 is standard)")
    if cfg.loss.chunk_tokens < 1:
        raise ConfigError(f"loss.chunk_tokens={cfg.loss.chunk_tokens} must be >= 1")

    op = cfg.onpolicy
    _check_lmbda(op)
    if (op.highest_lmbda > 0 or op.seq_kd) and not op.max_new_tokens:
        what = "onpolicy.lmbda > 0" if op.highest_lmbda > 0 else "onpolicy.seq_kd=true"
        raise ConfigError(f"{what} needs a generation length: set onpolicy.max_new_tokens (e.g. 128); "
                          f"got onpolicy.max_new_tokens={op.max_new_tokens!r}")
    if op.max_new_tokens is not None and op.max_new_tokens < 1:
        raise ConfigError(f"onpolicy.max_new_tokens={op.max_new_tokens} must be >= 1")
    if op.temperature <= 0:
        raise ConfigError(f"onpolicy.temperature={op.temperature} must be > 0 for sampling")
    if not 0 < op.top_p <= 1:
        raise ConfigError(f"onpolicy.top_p={op.top_p} must be in (0, 1]")
    if op.highest_lmbda > 0 and not method.needs_teacher:
        raise ConfigError(f"onpolicy.lmbda={_lmbda_text(op)} with loss.name={cfg.loss.name!r}: on-policy steps need a "
                          "teacher objective to score the student's samples; use e.g. loss.name=forward_kl")
    if op.backend == "vllm":
        if op.server is None:
            raise ConfigError("onpolicy.backend='vllm' needs onpolicy.server: the vLLM server that serves the student "
                              "(set onpolicy.server.url, e.g. http://127.0.0.1:8001; docs/server.md has the "
                              "command), or use onpolicy.backend=hf")
        _check_server_settings(op.server, "onpolicy.server")
    elif op.server is not None:
        raise ConfigError(f"onpolicy.server.url={op.server.url!r} is set but onpolicy.backend={op.backend!r}; set "
                          "onpolicy.backend=vllm to sample from that server, or remove onpolicy.server")
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
    check_train(cfg.train)
    check_device(cfg.student, "student")
    if cfg.teacher is not None:
        check_device(cfg.teacher, "teacher")
    validate_generate(cfg.generate, require_output=False)  # only `crossdistill generate` runs it; refused anyway
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
        elif cfg.teacher is not None and cfg.teacher.server is not None:
            if not (cfg.teacher.model or cfg.teacher.tokenizer):
                raise ConfigError("teacher.server is set but neither teacher.tokenizer nor teacher.model is: the "
                                  "client renders and tokenizes every example with the served model's tokenizer; set "
                                  "teacher.tokenizer (or teacher.model) to its directory or Hub id (only the "
                                  "tokenizer loads)")
            for name in ("model", "tokenizer"):
                if getattr(cfg.teacher, name):
                    _check_model_ref(getattr(cfg.teacher, name), f"teacher.{name}")
        elif cfg.teacher is not None:
            if not cfg.teacher.model:
                raise ConfigError("teacher.model is empty; give a Hub id, a local model directory or a .gguf file, "
                                  "or set teacher.cache to the output directory of `crossdistill cache`")
            if cfg.teacher.model not in pending:  # a chain's earlier stage writes it
                _check_model_ref(cfg.teacher.model, "teacher.model")
            if cfg.teacher.model.endswith(".gguf") and not cfg.teacher.tokenizer:
                pass  # the GGUF carries its tokenizer; checked when tokenizers load
        check_output_paths(cfg)
        if not d.train:
            raise ConfigError("data.train is empty; give a jsonl / parquet file or a datasets directory")
        for name in ("train", "eval"):
            ref = getattr(d, name)
            if ref and not Path(ref).exists():
                raise ConfigError(f"data.{name}={ref!r} does not exist; fix the path (jsonl, parquet, or a "
                                  "datasets directory)")
