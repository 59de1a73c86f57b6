"""What a distillation method is: a :class:`Method` record, the :class:`StepContext` it reads, the
:class:`MethodOutput` it returns, typed parameters and an optional per-run :class:`MethodState`.

A method turns one micro-batch's model outputs into **named term sums**. It never divides by a token count and never
applies T²: the trainer divides every term by the number of target tokens of the whole optimizer step (over
gradient-accumulation micro-batches and processes, generated on-policy tokens included) and multiplies the method's
``soft_terms`` by T² when ``loss.t2_scale`` — so the loss does not depend on how the global batch was split
(docs/design.md, "Normalization").

Return convention::

    MethodOutput(terms={"ce": ce_sum, "kd": kd_sum}, count=ctx.num_targets)

``count`` is the local number of student target positions the sums cover; the trainer checks it against its own
count, which catches a method that silently drops positions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

from crossdistill.errors import ConfigError
from crossdistill.losses.objective import HARD_TERMS
from crossdistill.typed import build

TeacherInput = Literal["none", "hidden", "logits"]
"""What the trainer computes from an online teacher for a method:

* ``none``: no teacher (CE).
* ``hidden``: the teacher's final hidden states and lm_head. Same tokenizer: at the student's positions (fused
  same-vocabulary losses); cross-tokenizer: over the teacher's own rendering (``[B, T_t, H_t]``).
* ``logits``: the teacher's logits over its own rendering (cross-tokenizer methods).

A sparse teacher (a cache) arrives as ``StepContext.teacher_signal`` instead, for methods with ``sparse_teacher``.
"""


@dataclass
class StepContext:
    """Everything a method may need for one micro-batch. Shapes: B batch, T student length, H student hidden,
    V_s student vocabulary, T_t / H_t / V_t the same for the teacher. Unused fields are ``None``."""

    student_hidden: torch.Tensor
    """``[B, T, H]`` final hidden states of the student (input of its lm_head), with grad."""
    lm_head_weight: torch.Tensor
    """``[V_s, H]`` student lm_head weight (tied or not), with grad when trainable."""
    targets: torch.Tensor
    """``[B, T]`` int64 student targets from :func:`crossdistill.positions.shift_targets` (``targets[:, j]`` is the
    token that ``logits[:, j]`` predicts; ``-100`` elsewhere)."""
    mask: torch.Tensor
    """``[B, T]`` bool, the student target positions (``targets != -100``)."""
    lm_head_bias: torch.Tensor | None = None
    """``[V_s]`` student lm_head bias, rare."""
    logit_scale: float = 1.0
    """Multiplier the model applies to its logits (e.g. Cohere ``logit_scale``); 1 for most models."""
    vocab_size: int | None = None
    """Real student vocabulary (``len(tokenizer)``); head rows beyond it are padding and are sliced off."""
    teacher_hidden: torch.Tensor | None = None
    """Teacher final hidden states, no grad: ``[B, T, H_t]`` at the student's positions for same-tokenizer methods
    (``mask`` selects the teacher rows too), ``[B, T_t, H_t]`` over the teacher's own rendering for cross-tokenizer
    methods with ``teacher="hidden"``."""
    teacher_lm_head_weight: torch.Tensor | None = None
    """``[V_t, H_t]`` teacher lm_head weight, no grad."""
    teacher_logit_scale: float = 1.0
    """The teacher's logit multiplier."""
    teacher_vocab_size: int | None = None
    """Real teacher vocabulary; rows beyond it are padding."""
    teacher_signal: Any = None
    """:class:`crossdistill.losses.signal.TeacherSignal` (a sparse teacher: cache or server). Same tokenizer: the N
    student target positions in row-major ``mask.nonzero()`` order; cross-tokenizer: the teacher's target rows in
    ``teacher_mask.nonzero()`` order."""
    teacher_logits: torch.Tensor | None = None
    """``[B, T_t, V_t]`` teacher logits at EVERY position of the teacher's own rendering, no grad — only for methods
    whose :attr:`Method.dense_teacher_rows` asks for them (e.g. positional ULD); others get
    ``teacher_target_logits``."""
    teacher_target_logits: torch.Tensor | None = None
    """``[M, V_t]`` fp32 teacher logits at its target rows only (``teacher_mask.nonzero()`` order, padding columns
    sliced off), no grad: what cross-tokenizer methods with ``teacher="logits"`` read."""
    teacher_targets: torch.Tensor | None = None
    """``[B, T_t]`` teacher targets, shifted with the same :func:`shift_targets`."""
    teacher_mask: torch.Tensor | None = None
    """``[B, T_t]`` bool, the teacher target positions."""
    teacher_batch: dict[str, Any] | None = None
    """The teacher's collated batch (``input_ids``, ``attention_mask``, ``labels``, ``offsets`` ...)."""
    alignment: Any = None
    """:class:`crossdistill.align.spans.BatchAlignment` (groups of student <-> teacher positions that cover the same
    completion text), cross-tokenizer pairs only; ``None``: built from the two collated batches on first use."""
    batch: dict[str, Any] | None = None
    """The student's collated batch (``input_ids``, ``attention_mask``, ``labels``, ``offsets`` ...)."""
    student_tokenizer: Any = None
    """The student tokenizer."""
    teacher_tokenizer: Any = None
    """The teacher tokenizer (the student's for same-tokenizer pairs)."""
    temperature: float = 1.0
    """Distillation temperature (divides both models' logits in soft-target terms). Not the sampling temperature."""
    t2_scale: bool = True
    """Whether the trainer multiplies soft terms by ``temperature**2`` (informational: methods never do)."""
    chunk_tokens: int = 1024
    """Target tokens per chunk when logits are computed from hidden states (bounds memory)."""
    own_samples: bool = False
    """The completions are the student's own samples and the terms that only reward them are off (an on-policy step
    without ``onpolicy.ce_on_samples``): a method drops the parts of a term that :attr:`Method.sample_terms`
    describes (``gold_hybrid``: its unmatched sorted-L1 half)."""

    @property
    def num_targets(self) -> int:
        """Local number of student target positions."""
        return int(self.mask.sum())

    def target_hidden(self) -> torch.Tensor:
        """``[N, H]`` student hidden states at the target positions (row-major), compacted before any lm_head GEMM."""
        return self.student_hidden[self.mask]

    def student_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[n, H] -> [n, V_s]`` fp32 student logits of some rows, padding columns sliced off."""
        z = F.linear(hidden, self.lm_head_weight, self.lm_head_bias).float() * self.logit_scale
        return z[..., : self.vocab_size] if self.vocab_size else z

    def target_logits(self) -> torch.Tensor:
        """``[N, V_s]`` fp32 student logits at the target positions (materialized: use only when V_s*N is small or
        the method needs all rows at once, e.g. cross-tokenizer merging)."""
        return self.student_logits(self.target_hidden())


@dataclass
class MethodOutput:
    """What a method returns: named term SUMS and the local count they cover (see the module docstring)."""

    terms: dict[str, torch.Tensor]
    """Term name -> scalar sum over this micro-batch's target positions."""
    count: int
    """Local number of student target positions covered (must equal ``ctx.num_targets``)."""


@dataclass(frozen=True)
class NoParams:
    """A method without parameters."""


class MethodState(Protocol):
    """Per-run state of a method (built once, before the optimizer): learned modules such as DSKD's projectors,
    or precomputed maps. The trainer treats every state alike: its parameters get their own optimizer group with
    ``lr``, their gradients are averaged over processes, and ``save``/``load`` run at every checkpoint, on resume
    and beside the final student. A state without parameters only needs ``parameters() -> []``."""

    file: str | None
    """File name the state writes inside a checkpoint / output directory (``None``: nothing to save)."""
    lr: float | None
    """Learning rate of the state's parameter group (``None``: the student's)."""

    def parameters(self) -> list[torch.nn.Parameter]: ...

    def to(self, device: torch.device | str) -> Any: ...

    def save(self, directory: str | Path) -> None: ...

    def load(self, directory: str | Path) -> None: ...


class FixedState:
    """Base of a state without parameters or files: maps precomputed from the tokenizers at every start (a
    subclass is a dataclass holding them)."""

    file: str | None = None
    lr: float | None = None

    def parameters(self) -> list[torch.nn.Parameter]:
        return []

    def to(self, device: torch.device | str) -> FixedState:
        return self

    def save(self, directory: str | Path) -> None:
        """Nothing to save: the state is rebuilt from the tokenizers."""

    def load(self, directory: str | Path) -> None:
        """Nothing to load: the state is rebuilt from the tokenizers."""


@dataclass(frozen=True)
class StateInputs:
    """What a method's state factory receives (models unwrapped from PEFT / DDP)."""

    student: torch.nn.Module
    teacher: torch.nn.Module | None
    student_tokenizer: Any
    teacher_tokenizer: Any
    params: Any
    """The method's parsed ``Params``."""


@dataclass(frozen=True)
class Setup:
    """What a method's pre-flight check sees: the run's shape, before any model or tokenizer loads."""

    params: Any
    """The parsed ``Params``."""
    teacher_source: Literal["model", "cache", "server", "none"]
    """Where the teacher signal comes from (``server``: top-k log-probs from an inference server, sparse like a
    cache)."""
    on_policy: bool
    """``onpolicy.lmbda > 0``."""
    has_teacher_tokenizer: bool
    """The recipe names a teacher model or tokenizer."""
    teacher_top_k: int | None = None
    """A sparse teacher's log-probs per position (the cache's k, the server's top_k); ``None``: dense or unknown."""


LossFn = Callable[[StepContext, Any, Any], MethodOutput]
"""``loss(ctx, params, state) -> MethodOutput``."""


@dataclass(frozen=True)
class Method:
    """A distillation method: one module in :mod:`crossdistill.methods` defines one (or a few variants) and
    registers it with :func:`crossdistill.methods.register`."""

    name: str
    """Config name (``loss.name``)."""
    loss: LossFn
    """``loss(ctx, params, state) -> MethodOutput`` (term sums; never divides, never applies T²)."""
    default_weights: Mapping[str, float]
    """Term name -> weight unless ``loss.weights`` overrides it; also the full list of term names."""
    params: type = NoParams
    """Dataclass of the method's parameters (``loss.params``), one docstring per field; a ``check()`` method, if it
    has one, raises :class:`ConfigError` for values out of range."""
    teacher: TeacherInput = "hidden"
    """What the trainer computes from an online teacher (see :data:`TeacherInput`)."""
    cross_tokenizer: bool = False
    """Works with any tokenizer pair (the trainer renders for the teacher and aligns); False: the teacher must share
    the student's vocabulary."""
    sparse_teacher: bool = False
    """Also trains from a sparse teacher signal (a top-k cache): ``ctx.teacher_signal`` instead of dense outputs."""
    soft_terms: tuple[str, ...] | None = None
    """Terms the trainer multiplies by T² (when ``loss.t2_scale``); ``None``: every term except ``ce``/``nll``."""
    sample_terms: tuple[str, ...] = ()
    """Terms that, on the student's own samples, only reward what it sampled: their target is the sampled token (like
    CE), or they compare sorted or ranked probabilities and so carry no token identity (ULD's sorted L1 makes the
    student more confident in its own top token wherever the teacher is confident). On on-policy steps the trainer
    gives them weight 0, like ``ce``/``nll``, unless ``onpolicy.ce_on_samples``; a method that mixes such a part into
    another term reads ``ctx.own_samples`` instead."""
    description: str = ""
    """One line shown in listings and errors."""
    check: Callable[[Setup], None] | None = None
    """Pre-flight check of the run's shape (raise :class:`ConfigError` naming the field and the fix)."""
    state: Callable[[StateInputs], MethodState | None] | None = None
    """Builds the per-run state (once, before the optimizer), or ``None`` for stateless methods."""
    dense_teacher_rows: Callable[[Any], bool] | None = None
    """``params -> bool``: the method reads the teacher's logits at every position (``ctx.teacher_logits``), not
    only at its target rows (``ctx.teacher_target_logits``). ``None``: target rows only, which keeps teacher memory
    independent of the prompt length."""

    @property
    def needs_teacher(self) -> bool:
        return self.teacher != "none"

    @property
    def terms_off_on_samples(self) -> frozenset[str]:
        """What gets weight 0 on the student's own samples by default: ``ce``/``nll`` and :attr:`sample_terms`."""
        return HARD_TERMS | frozenset(self.sample_terms)

    def __call__(self, ctx: StepContext, params: Mapping[str, Any] | None = None, state: Any = None) -> MethodOutput:
        """The term sums of one step, with ``params`` given as a plain mapping (checked like ``loss.params``)."""
        return self.loss(ctx, self.parse_params(params), state)

    def parse_params(self, raw: Mapping[str, Any] | None, where: str = "loss.params") -> Any:
        """``loss.params`` -> the typed ``Params``: unknown keys, wrong types, NaN and out-of-range values raise
        :class:`ConfigError` naming ``where.<key>``."""
        raw = dict(raw or {})
        if not fields(self.params) and raw:
            raise ConfigError(f"{where} has unknown keys {sorted(raw)} for loss.name={self.name!r}; it takes no "
                              "parameters: remove them")
        known = {f.name for f in fields(self.params)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{where} has unknown keys {unknown} for loss.name={self.name!r}; it accepts "
                              f"{sorted(known)}")
        try:
            params = build(self.params, raw, where)
        except (ValueError, TypeError) as err:  # a Params __post_init__ range check
            if isinstance(err, ConfigError):
                raise
            raise ConfigError(f"{where} for loss.name={self.name!r}: {err}") from None
        check = getattr(params, "check", None)
        if check is not None:
            check()
        return params


def params_dict(params: Any) -> dict[str, Any]:
    """The parsed ``Params`` as keyword arguments (for losses that take a config dataclass or keywords)."""
    return asdict(params) if is_dataclass(params) else dict(params)


def require(ok: bool, where: str, value: Any, rule: str) -> None:
    """Raise ``ConfigError("<where>=<value> <rule>")`` unless ``ok``: one phrasing for every range check."""
    if not ok:
        raise ConfigError(f"{where}={value!r} {rule}")


__all__ = ["FixedState", "Method", "MethodOutput", "MethodState", "NoParams", "Setup", "StateInputs", "StepContext",
           "TeacherInput", "params_dict", "require"]
