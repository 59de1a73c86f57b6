"""The run configuration's dataclasses, one docstring per field (the documentation users read in ``--help`` and
errors). :class:`ConfigError` lives in :mod:`crossdistill.errors`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

RENAMED_SECTIONS: dict[str, tuple[str, str]] = {
    "cache": ("cache_build", "so it cannot be confused with teacher.cache, the cache a student trains from"),
}
"""Old top-level recipe key -> (new key, why). A recipe that still uses an old key is refused with the new name,
rather than read under a meaning it no longer has."""


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
class TeacherServerConfig:
    """A teacher behind an OpenAI-compatible vLLM server (``teacher.server``, ``cache_build.server``): the client
    renders and tokenizes with the teacher's tokenizer locally, sends token ids and reads the server's
    ``prompt_logprobs`` as a sparse top-k teacher signal. See docs/server.md."""

    url: str = ""
    """Base URL of the server, e.g. ``http://127.0.0.1:8000`` (a trailing ``/v1`` is accepted)."""
    model: str = ""
    """Served model name (vLLM's ``--served-model-name``, by default its ``--model`` argument). Empty: the one model
    the server serves (refused when it serves several)."""
    top_k: int = 20
    """Teacher log-probs kept per position in training (``prompt_logprobs``); at most the server's
    ``--max-logprobs``. A cache built from a server uses ``cache_build.k`` instead."""
    timeout: float = 120.0
    """Seconds to wait for one scoring request before it counts as failed (and is retried)."""
    retries: int = 4
    """Retries of a request after a transient failure (connection refused or dropped, timeout, HTTP 5xx / 429),
    with exponential backoff; a 4xx other than 429 is not retried."""
    backoff: float = 1.0
    """Seconds before the first retry; each further retry waits twice as long (at most 30 s)."""
    concurrency: int = 8
    """Scoring requests in flight at once (one sequence per request; the server batches them)."""
    api_key_env: str | None = None
    """Name of the environment variable that holds the server's API key (vLLM's ``--api-key``), sent as a bearer
    token. The key itself never appears in a recipe, a log or an error."""


@dataclass
class TeacherConfig(ModelConfig):
    """The frozen teacher: a model, or an offline top-k cache of its outputs (``crossdistill cache``)."""

    cache: str | None = None
    """Directory of a teacher cache written by ``crossdistill cache``. When set, training reads the sparse teacher
    signal from it and NEVER loads the teacher model; ``model`` becomes optional (when given, only its tokenizer
    loads, to check it is the one the cache was made with). Same-vocabulary objectives only (``forward_kl``, ``jsd``
    ...) and off-policy only (no ``onpolicy.lmbda`` / ``seq_kd``): see docs/cache.md."""
    missing_mass: Literal["renormalize", "tail_bucket"] = "renormalize"
    """With ``cache`` or ``server``: what the loss does with the teacher mass outside the top-k ids —
    ``renormalize`` them to sum to 1, or keep the rest as one extra ``tail_bucket``."""
    server: TeacherServerConfig | None = None
    """A teacher served by vLLM (:class:`TeacherServerConfig`). Training then NEVER loads the teacher model; only
    its tokenizer (``teacher.tokenizer`` or ``teacher.model``), which renders each example for the server. Objectives
    that read a sparse teacher (same-tokenizer divergences, ``uld``, ``gold_hybrid``), off-policy and on-policy;
    not ``onpolicy.seq_kd``. See docs/server.md."""


@dataclass
class WeightedTeacherConfig(TeacherConfig):
    """One of several teachers (``teachers:``): a teacher model with its own tokenizer, and its weight."""

    name: str = ""
    """Label of this teacher in logs (``loss_<term>@<name>``) and records. Empty: ``teacher<i>`` (1-based)."""
    weight: float = 1.0
    """Weight of this teacher's objective: the loss is the sum over teachers of weight times the single-teacher
    objective (the method's terms with their own weights, over one global target count). Weights that sum to 1 keep
    every term, the student's ``ce`` included, at its single-teacher scale."""


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
    """The training method (a name registered in :mod:`crossdistill.methods`)."""

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
class LambdaSchedule:
    """GKD's λ as a function of the optimizer step (``onpolicy.lmbda: {kind: linear, ...}``); docs/training.md,
    "λ schedules". Every process evaluates it identically, and the per-step coin stays seeded by (seed, step)."""

    kind: Literal["constant", "linear", "cosine", "adaptive"] = "constant"
    """``constant``: λ = ``start`` at every step. ``linear`` / ``cosine``: λ goes from ``start`` to ``end`` between
    the fractions ``ramp_start`` and ``ramp_end`` of the run's optimizer steps (``start`` before, ``end`` after;
    ``cosine`` is a half cosine, flat at both ends). ``adaptive``: λ follows the measured gap between the
    distillation loss on the student's own samples and on the off-policy completions, within [``lower``,
    ``upper``]."""
    start: float = 0.0
    """λ at the start of the run. ``adaptive``: λ until both an on-policy and an off-policy step have been
    measured (must lie in [``lower``, ``upper``])."""
    end: float | None = None
    """λ at the end of the ramp; required by ``linear`` and ``cosine``, unused by ``constant`` and ``adaptive``."""
    ramp_start: float = 0.0
    """Fraction of the run's optimizer steps (in [0, 1]) where the ramp begins (``linear`` / ``cosine``)."""
    ramp_end: float = 1.0
    """Fraction of the run's optimizer steps (in [0, 1], > ``ramp_start``) where the ramp reaches ``end``."""
    lower: float = 0.05
    """``adaptive``: the smallest λ. Must be > 0, so on-policy steps keep being measured."""
    upper: float = 1.0
    """``adaptive``: the largest λ."""
    sensitivity: float = 2.0
    """``adaptive``: how fast λ rises with the gap g = on-policy loss / off-policy loss:
    λ = lower + (upper - lower) * (1 - exp(-sensitivity * max(g - 1, 0)))."""
    ema: float = 0.8
    """``adaptive``: decay of the moving averages of the two losses (in [0, 1); 0 = the last step only)."""

    @property
    def highest(self) -> float:
        """The largest λ the schedule can take (0 means it never takes an on-policy step)."""
        if self.kind == "adaptive":
            return self.upper
        return max(self.start, self.end if self.end is not None else self.start)


@dataclass
class RolloutServerConfig:
    """The vLLM server that samples the student's on-policy completions (``onpolicy.server``, with
    ``onpolicy.backend: vllm``). Before each on-policy step the trainer writes the student's weights to
    ``weights_dir`` and has the server reload them in place (vLLM's ``reload_weights`` through its development
    endpoint ``/collective_rpc``, so the server runs with ``VLLM_SERVER_DEV_MODE=1`` and must read ``weights_dir``)."""

    url: str = ""
    """Base URL of the server, e.g. ``http://127.0.0.1:8001``."""
    model: str = ""
    """Served model name; empty: the one model the server serves."""
    weights_dir: str | None = None
    """Directory the student's weights are written to for the server to reload (the server must be able to read it:
    the same machine or a shared filesystem). ``None``: ``rollout_weights`` inside ``train.output_dir``."""
    timeout: float = 600.0
    """Seconds to wait for one generation or reload request."""
    retries: int = 4
    """Retries after a transient failure (connection refused or dropped, timeout, HTTP 5xx / 429)."""
    backoff: float = 1.0
    """Seconds before the first retry; doubling after each (at most 30 s)."""
    concurrency: int = 8
    """Generation requests in flight at once (one prompt per request)."""
    api_key_env: str | None = None
    """Name of the environment variable holding the server's API key (never the key itself)."""


@dataclass
class OnPolicyConfig:
    """Generated completions: GKD on-policy mixing (student samples) and SeqKD (teacher samples)."""

    lmbda: float | LambdaSchedule = 0.0
    """Probability that an optimizer step uses student-sampled completions (GKD λ, student-data fraction): a
    constant, or a :class:`LambdaSchedule` mapping (``{kind: linear, start: 0, end: 0.5}``, ``{kind: adaptive,
    start: 0.5}``) whose value at each step is the probability of that step."""
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
    ce_on_samples: bool = False
    """Keep, on on-policy steps, the terms that only reward the student's own samples: its cross-entropy
    (``ce``/``nll``) and each method's ``sample_terms`` (ULD's sorted L1, MultiLevelOT's ranked top-k terms, GOLD's
    unmatched half, DSKD's ``t2s_ce``).
    Off (default): an on-policy step trains only the terms that carry the teacher's token identities, because CE on
    the student's own samples rewards whatever it sampled (measured to wreck a pretrained student's answers) and a
    sorted-probability comparison makes it more confident in its own top tokens (measured: held-out bits per byte
    1.17 -> 2.6-2.8 at λ = 1 for ``uld`` and ``gold_hybrid``); off-policy and SeqKD steps keep everything."""
    backend: Literal["hf", "vllm"] = "hf"
    """Engine of the student's on-policy samples: HF ``generate`` in the training process, or ``vllm``: a vLLM server
    that serves the student (``onpolicy.server``), refreshed with the student's current weights before every
    on-policy step. See docs/server.md, "Rollouts on vLLM"."""
    server: RolloutServerConfig | None = None
    """With ``backend: vllm``: the vLLM server that serves the student (started on the student's initial weights,
    with ``VLLM_SERVER_DEV_MODE=1``)."""

    @property
    def highest_lmbda(self) -> float:
        """The largest λ of :attr:`lmbda` (a constant or a schedule); > 0 means the run can take on-policy steps."""
        return self.lmbda.highest if isinstance(self.lmbda, LambdaSchedule) else self.lmbda


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
class CacheBuildConfig:
    """``crossdistill cache``: how to WRITE a teacher cache (the teacher's top-k or sampled ids and log-probs at every
    completion token of a dataset).

    Not the same thing as ``teacher.cache``, the finished cache a student trains FROM. One recipe may hold both:
    ``crossdistill cache`` reads this section, with ``teacher``, ``data`` and ``max_length`` taken from the recipe's
    ``teacher.model``, ``data.train`` and ``data.max_length`` when left empty (so the cache renders and truncates
    exactly as training will); ``crossdistill train`` reads ``teacher.cache`` and only range-checks this section.
    """

    teacher: str = ""
    """Teacher model: a local directory, a Hub id, or a ``.gguf`` file. Empty: the recipe's ``teacher.model``."""
    data: str = ""
    """Dataset: a ``.jsonl`` file whose rows have ``messages``, ``prompt`` + ``completion``, or ``text``. Empty: the
    recipe's ``data.train``."""
    output: str = ""
    """Cache directory to write (created; shards + ``manifest.json``). Required."""
    k: int = 32
    """Teacher entries kept per completion token (top-k ids, or sampled draws for ``support: sampled``)."""
    support: Literal["topk", "sampled"] = "topk"
    """``topk``: the k most likely ids + the log of the remaining mass. ``sampled``: k draws from the teacher
    distribution (RS-KD, unbiased), stored as unique ids with draw counts."""
    temperature: float = 1.0
    """Distillation temperature the stored log-probs are computed at (softmax(logits / T)); it is in the manifest.
    Training from the cache needs 1 (it applies ``loss.temperature`` itself). Not a sampling temperature."""
    value_dtype: Literal["fp16", "bf16", "fp32"] = "fp16"
    """Storage of log-prob values: ``fp16`` (default; 8x finer than bf16 on log-probs in [-65504, 0], same bytes),
    ``bf16``, or ``fp32`` (exact, for checks)."""
    examples_per_shard: int = 256
    """Examples per shard: the unit of atomic writing, checksumming, resuming and reading."""
    batch_size: int = 8
    """Examples per teacher forward pass."""
    max_length: int | None = None
    """Longest teacher sequence (prompt + completion); longer completions are cut from the right exactly as
    training cuts them. ``None``: the recipe's ``data.max_length``."""
    seed: int = 0
    """Seed of the sampled support (each example draws from its own generator seeded by (seed, index))."""
    teacher_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype the teacher runs in."""
    device: str = "auto"
    """``auto`` (accelerate's device / cuda when present / cpu), or a torch device string."""
    limit: int | None = None
    """Use only the first ``limit`` examples of the dataset (``None``: all)."""
    workers: int = 1
    """Local worker processes, each with its own teacher copy, writing every ``workers``-th shard."""
    server: TeacherServerConfig | None = None
    """Score with a teacher served by vLLM instead of loading it (``None``: the recipe's ``teacher.server``, if
    any). ``teacher`` then names only the tokenizer; ``k`` is the ``prompt_logprobs`` asked for; ``support: topk``
    and ``temperature: 1`` only. Same cache format, resumable alike."""


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
    bf16: bool = False
    """Mixed precision: the forward and backward under bf16 autocast, parameters and AdamW states in fp32
    (``TrainingArguments.bf16``). On a CPU with AMX (Sapphire Rapids and later) a 107M-parameter step measured
    1.6-1.9x faster; losses reduce in fp32 either way."""
    optim: str = "adamw_torch_fused"
    """transformers optimizer name. Default: torch's fused AdamW, the same update as ``adamw_torch`` (to rounding)
    in one kernel per parameter group: measured 5x faster per step on a 135M student on one CPU thread."""
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
class ChainStage:
    """One run of a teacher-assistant chain (``chain:``, docs/training.md, "Teacher-assistant chains")."""

    name: str = ""
    """Label of the stage (letters, digits, ``-``, ``_``, ``.``); its output directory defaults to
    ``<train.output_dir>/<name>``. Empty: ``stage<i>`` (1-based)."""
    recipe: dict[str, Any] = field(default_factory=dict)
    """Partial recipe of this stage (``student:``, ``loss:``, ``train:`` ... any section), merged key by key over the
    recipe's own sections. ``teacher:`` differs: the first stage's teacher is the recipe's; a later stage's teacher
    is the student the stage before it trained (its output directory) unless its ``teacher.model`` says otherwise,
    and its ``teacher:`` mapping starts from the defaults, not from the recipe's teacher."""


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
    cache_build: CacheBuildConfig | None = None
    """Settings of ``crossdistill cache`` (how to write a teacher cache), so one recipe can build a cache and then
    train from it; training reads ``teacher.cache`` instead. ``None``: the recipe builds no cache."""
    teachers: list[WeightedTeacherConfig] | None = None
    """Several teachers at once (instead of ``teacher:``), each with its own tokenizer, aligned to the student
    independently, combined with per-teacher weights over one global normalization (docs/training.md, "Several
    teachers"). The first is the one evaluated and recorded as ``teacher``. ``None``: one teacher (``teacher:``)."""
    chain: list[ChainStage] | None = None
    """A teacher-assistant chain (largest teacher first): the stages run one after another, each a full run with its
    own output directory, record and resume, each stage's teacher being the student of the stage before it. The rest
    of the recipe is the stages' common base (see :class:`ChainStage`). ``None``: one run."""

    @property
    def mode(self) -> str:
        """``sft`` | ``hard_label`` | ``soft`` | ``on_policy`` | ``seq_kd`` (derived, for records and logs)."""
        if self.onpolicy.highest_lmbda > 0:
            return "on_policy"
        if self.onpolicy.seq_kd:
            return "seq_kd"
        if self.loss.name != "ce":
            return "soft"
        if self.data.train and (Path(self.data.train) / "manifest.json").exists():
            return "hard_label"
        return "sft"

    def resolved_cache_build(self) -> CacheBuildConfig:
        """:attr:`cache_build` (defaults when absent) with its empty ``teacher``, ``data`` and ``max_length`` taken
        from ``teacher.model``, ``data.train`` and ``data.max_length``: what ``crossdistill cache`` runs with."""
        section = self.cache_build if self.cache_build is not None else CacheBuildConfig()
        teacher_model = self.teacher.model if self.teacher is not None else ""
        server = section.server if section.server is not None else (
            self.teacher.server if self.teacher is not None else None)
        if server is not None and not teacher_model and self.teacher is not None:
            teacher_model = self.teacher.tokenizer or ""  # a served teacher needs only its tokenizer here
        return replace(section, teacher=section.teacher or teacher_model, data=section.data or self.data.train,
                       max_length=section.max_length if section.max_length is not None else self.data.max_length,
                       server=server)

    def with_first_teacher(self) -> DistillConfig:
        """With ``teachers:``, this config with ``teacher`` set to the first of them (the form every single-teacher
        code path reads, and what ``resolved_config.yaml`` records); otherwise the config itself."""
        if not self.teachers:
            return self
        first = self.teachers[0]
        return replace(self, teacher=TeacherConfig(**{f.name: getattr(first, f.name) for f in fields(TeacherConfig)}))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)
