"""Typed run configuration: dataclasses (one docstring per field), YAML + ``key=value`` overrides, strict validation.

``load_config(path, overrides)`` reads a recipe, applies dotted overrides (``loss.temperature=2``, values parsed as
YAML), builds the dataclasses with type checks and runs :func:`validate` — all before any model or tokenizer is
loaded. Every error is a :class:`ConfigError` naming the field, the value and the fix. Checks that need tokenizers
(same-vocabulary losses with differing tokenizers) live in :func:`crossdistill.train.run.check_pair`.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import yaml


class ConfigError(ValueError):
    """A recipe or override that cannot work; the message names the field, the value and the fix."""


@dataclass
class LoraConfig:
    """Optional LoRA adapters on the student (PEFT)."""

    enabled: bool = False
    """Train LoRA adapters instead of all student weights; the saved student has the adapters merged in."""
    r: int = 8
    """LoRA rank."""
    alpha: int = 16
    """LoRA scaling numerator (``lora_alpha``)."""
    dropout: float = 0.0
    """Dropout on the LoRA input."""
    target_modules: list[str] | str = "all-linear"
    """Module names to adapt, or ``"all-linear"``."""


@dataclass
class ModelConfig:
    """One model: where it comes from and how it is placed."""

    model: str = ""
    """Hub id, local directory, or path to a ``.gguf`` file (converted once and cached by sha256)."""
    tokenizer: str | None = None
    """Tokenizer location when it differs from ``model`` (required for a GGUF file without a tokenizer dir)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    """Parameter dtype after loading."""
    device: str | None = None
    """Device for this model (``cpu``, ``cuda:0`` ...). ``None``: the student follows accelerate, the teacher sits
    on the student's device."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) for a Hub id."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA settings (student only)."""


@dataclass
class TeacherConfig(ModelConfig):
    """The frozen teacher: a model, or an offline top-k cache of its outputs (``crossdistill cache``)."""

    cache: str | None = None
    """Directory of a teacher cache written by ``crossdistill cache``. When set, training reads the sparse teacher
    signal from it and NEVER loads the teacher model; ``model`` becomes optional (when given, only its tokenizer
    loads, to check it is the one the cache was made with). Same-vocabulary objectives only (``forward_kl``, ``jsd``
    ...) and off-policy only (no ``onpolicy.lmbda`` / ``seq_kd``): see docs/cache.md."""
    missing_mass: Literal["renormalize", "tail_bucket"] = "renormalize"
    """With ``cache``: what the loss does with the teacher mass outside the cached top-k ids — ``renormalize`` them
    to sum to 1, or keep the rest as one extra ``tail_bucket`` (design.md contract 4)."""


@dataclass
class DataConfig:
    """Training and evaluation examples."""

    train: str = ""
    """jsonl / parquet file or ``datasets`` directory (``save_to_disk``) of examples: ``messages``,
    ``prompt``+``completion``, or ``text``; or a directory written by ``crossdistill generate`` (hard labels)."""
    eval: str | None = None
    """Held-out examples in the same formats; ``None`` holds out ``eval_fraction`` of ``train``."""
    eval_fraction: float = 0.1
    """Fraction of ``train`` held out when ``eval`` is not given (at least one example)."""
    format: Literal["auto", "messages", "prompt_completion", "text"] = "auto"
    """Example format; ``auto`` detects it from the keys of the first example."""
    max_length: int = 512
    """Maximum tokens per rendered example (prompt + completion) for each model; longer ones are truncated from
    the end of the completion, with a warning."""
    max_examples: int | None = None
    """Use only the first N training examples."""


@dataclass
class LossConfig:
    """The training objective (a name in :mod:`crossdistill.train.objectives`)."""

    name: str = "ce"
    """Registered objective: ``ce`` (sft / hard-label), ``forward_kl``, ``reverse_kl``, ``jsd``, ``skew_kl``,
    ``skew_reverse_kl``, ``tvd``, ``adaptive_kl`` (same tokenizer), or a cross-tokenizer one (``uld``,
    ``gold_hybrid`` ...)."""
    weights: dict[str, float] = field(default_factory=dict)
    """Term name -> weight, overriding the objective's defaults (e.g. ``{ce: 0.5, kd: 0.5}``)."""
    params: dict[str, Any] = field(default_factory=dict)
    """Objective-specific parameters (e.g. ``{beta: 0.5}`` for ``jsd``); only names the objective declares."""
    temperature: float = 1.0
    """Distillation temperature for soft targets (NOT the sampling temperature, see ``onpolicy.temperature``)."""
    t2_scale: bool = True
    """Multiply soft-target terms by ``temperature**2``."""
    chunk_tokens: int = 1024
    """Target tokens per chunk when computing logits from hidden states (bounds memory)."""


@dataclass
class OnPolicyConfig:
    """Generated completions: GKD on-policy mixing (student samples) and SeqKD (teacher samples)."""

    lmbda: float = 0.0
    """Probability that an optimizer step uses student-sampled completions (GKD λ, student-data fraction)."""
    seq_kd: bool = False
    """Off-policy steps use completions sampled by the teacher instead of the dataset's."""
    max_new_tokens: int | None = None
    """Length of generated completions; required when ``lmbda > 0`` or ``seq_kd``."""
    temperature: float = 1.0
    """SAMPLING temperature for generation (the distillation temperature is ``loss.temperature``)."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    top_k: int = 0
    """Top-k sampling (0 = off)."""
    backend: Literal["hf", "vllm"] = "hf"
    """Generation engine: HF ``generate``, or vLLM when installed (GPU)."""


@dataclass
class GenerateConfig:
    """``crossdistill generate``: teacher generations for hard-label training."""

    output: str = ""
    """Output directory (``examples.jsonl`` + ``manifest.json``)."""
    max_new_tokens: int = 128
    """Tokens generated per prompt."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy."""
    top_p: float = 1.0
    """Nucleus sampling threshold."""
    batch_size: int = 8
    """Prompts per generate call."""


@dataclass
class TrainConfig:
    """Optimization, logging and checkpoints (mapped onto ``transformers.TrainingArguments``)."""

    output_dir: str = "outputs/run"
    """Directory for checkpoints, TensorBoard logs, the resolved config and the final student."""
    seed: int = 0
    """Seed for data order, initialization of LoRA, and the per-step on-policy decision."""
    max_steps: int = -1
    """Optimizer steps; -1 trains ``num_epochs`` epochs."""
    num_epochs: float = 1.0
    """Epochs when ``max_steps`` is -1."""
    per_device_batch_size: int = 8
    """Examples per micro-batch per process."""
    grad_accum: int = 1
    """Micro-batches per optimizer step."""
    learning_rate: float = 5e-5
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_ratio: float = 0.0
    """Fraction of steps of linear warm-up."""
    lr_scheduler: str = "linear"
    """transformers scheduler name (``linear``, ``cosine``, ``constant`` ...)."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm (0 disables)."""
    optim: str = "adamw_torch"
    """transformers optimizer name."""
    logging_steps: int = 1
    """Log every N optimizer steps."""
    eval_steps: int | None = None
    """Evaluate every N steps (``None``: only at the end)."""
    save_steps: int | None = None
    """Checkpoint every N steps (``None``: no intermediate checkpoints)."""
    save_total_limit: int | None = 2
    """Keep at most N checkpoints."""
    report_to: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Logging integrations (``tensorboard``, ``wandb`` when installed, or ``[]``)."""
    runs_file: str | None = None
    """Where the run record is appended; ``None``: ``runs.jsonl`` next to ``output_dir`` (its parent directory)."""
    dataloader_workers: int = 0
    """DataLoader worker processes."""
    progress_bar: bool = True
    """Show tqdm progress bars."""
    log_lines: bool = False
    """Print every training log as a line under the progress bar (the Transformers default). Off: the latest loss
    terms show in the bar's postfix; ``trainer_state.json`` and ``report_to`` get every value either way."""


@dataclass
class DistillConfig:
    """A whole run: student, optional teacher, data, objective, generation and training settings."""

    student: ModelConfig = field(default_factory=ModelConfig)
    """The model being trained."""
    teacher: TeacherConfig | None = None
    """The frozen teacher (a model and/or a cache); ``None`` for sft / hard-label training."""
    data: DataConfig = field(default_factory=DataConfig)
    """Examples."""
    loss: LossConfig = field(default_factory=LossConfig)
    """Objective."""
    onpolicy: OnPolicyConfig = field(default_factory=OnPolicyConfig)
    """On-policy mixing and SeqKD."""
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    """Teacher generation (``crossdistill generate``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Optimization and logging."""
    method: str | None = None
    """Free label recorded in ``runs.jsonl`` (default: derived from mode and loss)."""
    cache: dict[str, Any] = field(default_factory=dict)
    """Settings of ``crossdistill cache`` (``output``, ``k``, ...; :class:`crossdistill.teacher.config.CacheConfig`,
    checked by that command) so one recipe can build a cache and then train from it; training ignores them and reads
    ``teacher.cache``."""

    @property
    def mode(self) -> str:
        """``sft`` | ``hard_label`` | ``soft`` | ``on_policy`` | ``seq_kd`` (derived, for records and logs)."""
        if self.onpolicy.lmbda > 0:
            return "on_policy"
        if self.onpolicy.seq_kd:
            return "seq_kd"
        if self.loss.name != "ce":
            return "soft"
        if self.data.train and (Path(self.data.train) / "manifest.json").exists():
            return "hard_label"
        return "sft"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# ------------------------------------------------------------------------------------------------ dict -> dataclass
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp`` and build nested dataclasses; raise ConfigError otherwise."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(err)
        if len(errors) == 1:
            raise errors[0]
        raise ConfigError(f"{where}={value!r} has the wrong type: expected {_type_name(tp)}")
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}={value!r} is not allowed: choose one of {list(choices)}")
        return value
    if is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a mapping of {tp.__name__} fields")
        return build(tp, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a mapping")
        _, vt = typing.get_args(tp)
        return {str(k): _coerce(v, vt, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a list")
        (et,) = typing.get_args(tp)
        return [_coerce(v, et, f"{where}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a number (float)")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r} has the wrong type: expected a string")
        return value
    raise TypeError(f"config type {tp!r} at {where} is not supported")  # a bug in this module, not user input


def build(cls: type, data: dict[str, Any], where: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys (with a spelling suggestion) and wrong types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in hints:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"; did you mean {(where + '.' if where else '') + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {path!r}{hint} Valid keys here: {names}")
        kwargs[key] = _coerce(value, hints[key], path)
    for f in fields(cls):  # dataclass-typed optional sections given as {} still become dataclasses
        if f.name not in kwargs and f.default is MISSING and f.default_factory is MISSING:
            raise ConfigError(f"missing required config key {(where + '.' if where else '') + f.name!r}")
    return cls(**kwargs)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``dotted.key=value`` override in place; ``value`` is parsed as YAML (``2`` int, ``[a]`` list)."""
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. loss.temperature=2.0)")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw != "" else ""
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(f"override {item!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = nxt
    node[parts[-1]] = value


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                validate_paths: bool = True) -> DistillConfig:
    """Read a YAML recipe (or start from defaults), apply overrides, build and validate the config."""
    data: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"recipe {str(p)!r} does not exist; give the path of a YAML recipe (see recipes/)")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"recipe {str(p)!r} is not valid YAML: {err}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"recipe {str(p)!r} must be a mapping of sections (student:, data:, ...)")
    for item in overrides:
        apply_override(data, item)
    cfg = build(DistillConfig, data)
    validate(cfg, check_paths=validate_paths)
    return cfg


def config_from_dict(data: dict[str, Any], validate_paths: bool = True) -> DistillConfig:
    """Build and validate a config from a plain dict (the Python API)."""
    cfg = build(DistillConfig, data)
    validate(cfg, check_paths=validate_paths)
    return cfg


# ------------------------------------------------------------------------------------------------------ validation
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
    from crossdistill.train.objectives import SAME_VOCAB_DIVERGENCES

    where = f"teacher.cache={cfg.teacher.cache!r}"
    supported = sorted(SAME_VOCAB_DIVERGENCES)
    if not spec.needs_teacher:
        raise ConfigError(f"{where} is set but loss.name={cfg.loss.name!r} uses no teacher; choose a distillation "
                          f"loss that reads the cache (one of {supported}) or remove teacher.cache")
    from crossdistill.train.objectives import OBJECTIVES

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
