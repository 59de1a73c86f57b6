"""Dual-Space Knowledge Distillation: ``dskd`` (same vocabulary), ``dskd_cma`` (different vocabularies, cross-model
attention) and ``dskd_eta`` (DSKDv2's exact token alignment) — learnable projectors map each model's hidden states
into the other's space, plus the student's cross-entropy.

The projectors are this method's per-run state (:class:`ProjectorState`): trained with their own learning rate
(the official scripts: 1e-3 for DSKD / CMA, 5e-4 for DSKDv2), saved beside the student as
``projectors.safetensors`` and in every checkpoint, never inside the student's weights. The teacher's hidden states
come from the online teacher (``teacher="hidden"``: at the student's positions for ``dskd``, over the teacher's own
rendering for the cross-tokenizer variants); a cache cannot feed them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from crossdistill.align.eta import eta_align, eta_token_strings
from crossdistill.align.vocab_map import build_vocab_map, token_keys
from crossdistill.losses.divergences import ALIASES, DIVERGENCES
from crossdistill.losses.dskd import (
    DEFAULT_WEIGHTS,
    DSKDProjectors,
    dskd_cma_terms,
    dskd_eta_terms,
    dskd_terms,
    load_projectors,
    pinv_projector_init,
    require_hidden,
    save_projectors,
)
from crossdistill.methods.base import Method, MethodOutput, StateInputs, StepContext, require
from crossdistill.methods.common import ce_sum, check_plain_head

PROJECTOR_FILE = "projectors.safetensors"


@dataclass(frozen=True)
class DSKDParams:
    """Parameters of ``dskd`` and ``dskd_cma``."""

    kd_temperature: float = 2.0
    """Temperature of the KD terms in both spaces."""
    kd_divergence: str = "forward_kl"
    """Divergence of the KD terms (a name or alias of :mod:`crossdistill.losses.divergences`)."""
    projector_lr: float | None = None
    """Learning rate of the projectors; ``null``: 1e-3 (5e-4 for ``dskd_eta``), the official scripts' values."""
    projector_seed: int = 0
    """Seed of the projectors' initialization (drawn without moving the run's RNG stream)."""

    def check(self) -> None:
        require(self.kd_temperature > 0, "loss.params.kd_temperature", self.kd_temperature, "must be > 0")
        require(ALIASES.get(self.kd_divergence, self.kd_divergence) in DIVERGENCES, "loss.params.kd_divergence",
                self.kd_divergence, f"is not a divergence; choose one of {sorted(DIVERGENCES) + sorted(ALIASES)}")
        require(self.projector_lr is None or self.projector_lr > 0, "loss.params.projector_lr", self.projector_lr,
                "must be > 0 or null")


@dataclass(frozen=True)
class DSKDEtaParams(DSKDParams):
    """Parameters of ``dskd_eta``."""

    t2s_agreement: float = 1.0
    """Weight of the teacher-to-student agreement inside the t2s terms."""
    init_projectors: bool = True
    """Initialize the projectors by pseudo-inverse on exactly matched tokens (DSKDv2)."""
    freeze_s2t: bool = True
    """Keep the student-to-teacher projector at its pseudo-inverse initialization."""
    topk_vocab: int | None = None
    """Use only the k most frequent matched tokens for the initialization; ``null``: all."""

    def check(self) -> None:
        super().check()
        require(self.topk_vocab is None or self.topk_vocab >= 1, "loss.params.topk_vocab", self.topk_vocab,
                "must be >= 1 or null")


@dataclass
class ProjectorState:
    """The projectors (trained, saved with the run) and the frozen references the variants read."""

    projectors: DSKDProjectors
    lr: float
    """Learning rate of the projector parameter group."""
    student_embed: torch.Tensor | None = None
    """CMA: the student's input embedding table (queries), used detached."""
    teacher_embed: torch.Tensor | None = None
    """CMA: the teacher's input embedding table (keys), used detached."""
    teacher_to_student: torch.Tensor | None = None
    """ETA: ``[V_t]`` teacher id -> the one student token with the same bytes (EOS -> EOS), else -1."""
    keys: dict[str, Any] = field(default_factory=dict)
    """ETA: cached canonical token keys of both tokenizers."""
    file: str = PROJECTOR_FILE

    def parameters(self) -> list[torch.nn.Parameter]:
        return self.projectors.projector_parameters()

    def to(self, device) -> ProjectorState:
        self.projectors.to(device)
        return self

    def save(self, directory: str | Path) -> None:
        """``<directory>/projectors.safetensors``, atomically."""
        save_projectors(self.projectors, Path(directory) / self.file)

    def load(self, directory: str | Path) -> None:
        self.projectors.load_state_dict(load_projectors(Path(directory) / self.file).state_dict())


def build_state(name: str, inputs: StateInputs) -> ProjectorState:
    """Projectors of ``name`` sized from both heads; ETA also gets its token map and pseudo-inverse init."""
    student, teacher, params = inputs.student, inputs.teacher, inputs.params
    if teacher is None:
        raise ValueError(f"{name} needs an online teacher model (its hidden states feed the projectors)")
    hs = int(student.get_output_embeddings().weight.shape[1])
    ht = int(teacher.get_output_embeddings().weight.shape[1])
    with torch.random.fork_rng(devices=[]):  # seeded init without moving the run's global RNG stream
        torch.manual_seed(params.projector_seed)
        proj = DSKDProjectors(hs, ht, cross_attention=(name == "dskd_cma"))
    state = ProjectorState(proj, float(params.projector_lr or (5e-4 if name == "dskd_eta" else 1e-3)))
    if name == "dskd_cma":
        state.student_embed = student.get_input_embeddings().weight
        state.teacher_embed = teacher.get_input_embeddings().weight
    if name == "dskd_eta":
        s_tok, t_tok = inputs.student_tokenizer, inputs.teacher_tokenizer
        vm = build_vocab_map(t_tok, s_tok)
        t2s = torch.as_tensor(vm.teacher_to_student.copy())
        if t_tok.eos_token_id is not None and s_tok.eos_token_id is not None:
            t2s[t_tok.eos_token_id] = s_tok.eos_token_id
        state.teacher_to_student = t2s
        state.keys = {"teacher": token_keys(t_tok), "student": token_keys(s_tok)}
        if params.init_projectors:
            pinv_projector_init(proj, student.get_output_embeddings().weight.detach().float().cpu(),
                                teacher.get_output_embeddings().weight.detach().float().cpu(),
                                torch.as_tensor(vm.matched_teacher), torch.as_tensor(vm.matched_student),
                                topk_vocab=params.topk_vocab, init_s2t=True, freeze_s2t=params.freeze_s2t)
    return state


def _state(state: ProjectorState | None, name: str) -> ProjectorState:
    if state is None:
        raise ValueError(f"{name} needs its projector state, built once per run by the method's state factory "
                         f"(crossdistill.methods.get_method({name!r}).state); the trainer builds it and trains the "
                         "projectors with their own learning rate")
    return state


def _teacher_head(ctx: StepContext, name: str) -> torch.Tensor:
    if ctx.teacher_lm_head_weight is None:
        raise ValueError(f"{name} needs ctx.teacher_lm_head_weight")
    return ctx.teacher_lm_head_weight.to(ctx.student_hidden.device)


def dskd_loss(ctx: StepContext, params: DSKDParams, state: ProjectorState | None) -> MethodOutput:
    check_plain_head(ctx, "dskd")
    state = _state(state, "dskd")
    h_t = require_hidden(ctx.teacher_hidden, "dskd")
    terms = dskd_terms(ctx.target_hidden(), ctx.lm_head_weight, h_t[ctx.mask], _teacher_head(ctx, "dskd"),
                       ctx.targets[ctx.mask], state.projectors, temperature=params.kd_temperature,
                       kd_divergence=params.kd_divergence, chunk_tokens=ctx.chunk_tokens, vocab_size=ctx.vocab_size)
    return MethodOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)


def dskd_cma_loss(ctx: StepContext, params: DSKDParams, state: ProjectorState | None) -> MethodOutput:
    check_plain_head(ctx, "dskd_cma")
    state = _state(state, "dskd_cma")
    if state.student_embed is None or state.teacher_embed is None:
        raise ValueError("dskd_cma state has no embedding tables; build it with the dskd_cma method's state factory")
    h_t = require_hidden(ctx.teacher_hidden, "dskd_cma").to(ctx.student_hidden.device)
    dev = h_t.device
    terms = dskd_cma_terms(ctx.student_hidden, ctx.lm_head_weight, state.student_embed, ctx.batch["input_ids"],
                           ctx.targets, ctx.mask, h_t, _teacher_head(ctx, "dskd_cma"), state.teacher_embed.to(dev),
                           ctx.teacher_batch["input_ids"].to(dev), ctx.teacher_targets, ctx.teacher_mask,
                           state.projectors, temperature=params.kd_temperature, kd_divergence=params.kd_divergence,
                           student_vocab_size=ctx.vocab_size, teacher_vocab_size=ctx.teacher_vocab_size)
    return MethodOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)


def _eos_key(tok: Any, keys: Any) -> Any:
    return eta_token_strings(tok, [tok.eos_token_id], keys)[0] if tok.eos_token_id is not None else None


def dskd_eta_loss(ctx: StepContext, params: DSKDEtaParams, state: ProjectorState | None) -> MethodOutput:
    check_plain_head(ctx, "dskd_eta")
    state = _state(state, "dskd_eta")
    dev = ctx.student_hidden.device
    h_t = require_hidden(ctx.teacher_hidden, "dskd_eta").to(dev)
    t_tok, s_tok = ctx.teacher_tokenizer, ctx.student_tokenizer
    t_keys, s_keys = state.keys.get("teacher"), state.keys.get("student")
    t_eos, s_eos = _eos_key(t_tok, t_keys), _eos_key(s_tok, s_keys)
    t_rows, s_rows = [], []
    t_off = s_off = 0
    for b in range(ctx.mask.shape[0]):
        s_ids = ctx.targets[b][ctx.mask[b]].tolist()
        t_ids = ctx.teacher_targets[b][ctx.teacher_mask[b]].tolist()
        pairs = eta_align(eta_token_strings(t_tok, t_ids, t_keys), eta_token_strings(s_tok, s_ids, s_keys),
                          teacher_eos=t_eos, student_eos=s_eos, strip=False)
        t_rows += [t_off + i for i, _ in pairs]
        s_rows += [s_off + j for _, j in pairs]
        t_off += len(t_ids)
        s_off += len(s_ids)
    terms = dskd_eta_terms(ctx.target_hidden(), ctx.lm_head_weight, h_t[ctx.teacher_mask.to(dev)],
                           _teacher_head(ctx, "dskd_eta"), torch.tensor(t_rows, dtype=torch.long, device=dev),
                           torch.tensor(s_rows, dtype=torch.long, device=dev), state.teacher_to_student,
                           state.projectors, temperature=params.kd_temperature, kd_divergence=params.kd_divergence,
                           t2s_agreement=params.t2s_agreement, student_vocab_size=ctx.vocab_size,
                           teacher_vocab_size=ctx.teacher_vocab_size)
    return MethodOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)


SAMPLE_TERMS = ("t2s_ce",)
"""``t2s_ce`` trains the teacher-to-student projector to predict the target token; on the student's own samples
that target is what it sampled, and ``t2s_kd`` then pulls the student towards the projector: CE on its own samples
by another path. Off on on-policy steps (:attr:`crossdistill.methods.base.Method.sample_terms`)."""

METHODS = (
    Method("dskd", dskd_loss, default_weights=DEFAULT_WEIGHTS, params=DSKDParams, teacher="hidden", soft_terms=(),
           sample_terms=SAMPLE_TERMS, state=lambda inputs: build_state("dskd", inputs),
           description="DSKD (same vocabulary): dual-space KD with learnable projectors, + student CE"),
    Method("dskd_cma", dskd_cma_loss, default_weights=DEFAULT_WEIGHTS, params=DSKDParams, teacher="hidden",
           cross_tokenizer=True, soft_terms=(), sample_terms=SAMPLE_TERMS,
           state=lambda inputs: build_state("dskd_cma", inputs),
           description="DSKD-CMA (different vocabularies): cross-model attention projectors, + student CE"),
    Method("dskd_eta", dskd_eta_loss, default_weights={**DEFAULT_WEIGHTS, "aligned": 0.0}, params=DSKDEtaParams,
           teacher="hidden", cross_tokenizer=True, soft_terms=(), sample_terms=SAMPLE_TERMS,
           state=lambda inputs: build_state("dskd_eta", inputs),
           description="DSKDv2 exact token alignment: projectors on exactly aligned tokens (pinv init), + student CE"),
)
