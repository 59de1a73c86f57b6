"""Training-objective adapters for MultiLevelOT, CDM and DSKD (``multilevel_ot``, ``multilevel_ot_official``,
``cdm``, ``dskd``, ``dskd_cma``, ``dskd_eta``), registered in :mod:`crossdistill.train.objectives`.

Each adapter turns a :class:`~crossdistill.train.objectives.StepContext` into the pure loss's inputs and returns
term SUMS plus the student's target count (the trainer divides by the global count). Every objective includes the
student's cross-entropy (contract 10); default weights are each method's recipe.

Per-run state lives in ``ctx.extras`` (the trainer keeps that dict for the whole run):

* ``cdm``: the :class:`~crossdistill.align.dynamic_map.DynamicVocabMap` (it grows over training) and the vocabulary
  strings, built on first use from the two tokenizers (exact-match base map: :mod:`crossdistill.align.vocab_map`).
* DSKD variants: an :class:`XtokState` holding the projectors (``nn.Module``), built ONCE by the trainer with
  :func:`build_objective_state` — see that function for the trainer contract (own param group with
  ``projector_lr``, saved with the run as ``projectors.safetensors``, not with the student).

Teacher inputs: ``multilevel_ot`` / ``cdm`` / ``dskd_cma`` / ``dskd_eta`` use ``ctx.teacher_logits`` over the
teacher's own rendering (or, for the first two, a ``ctx.teacher_signal`` over the teacher's target rows, in
``teacher_mask.nonzero()`` order). ``dskd_cma`` / ``dskd_eta`` also need the teacher's hidden states over its own
rendering: ``ctx.teacher_hidden`` ``[B, T_t, H_t]`` when the trainer provides it, else they are computed here from
the teacher model held by the state (one extra no-grad teacher forward).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from crossdistill.losses.cdm import DEFAULT_WEIGHTS as CDM_WEIGHTS
from crossdistill.losses.cdm import CDMConfig, cdm_terms
from crossdistill.losses.dskd import DEFAULT_WEIGHTS as DSKD_WEIGHTS
from crossdistill.losses.dskd import (
    DSKDProjectors,
    dskd_cma_terms,
    dskd_eta_terms,
    dskd_terms,
    load_projectors,
    pinv_projector_init,
    require_hidden,
    save_projectors,
)
from crossdistill.losses.mlot import DEFAULT_WEIGHTS as MLOT_WEIGHTS
from crossdistill.losses.mlot import OFFICIAL_WEIGHTS as MLOT_OFFICIAL_WEIGHTS
from crossdistill.losses.mlot import MultiLevelOTConfig, multilevel_ot_terms
from crossdistill.losses.signal import TeacherSignal
from crossdistill.train.objectives import ObjectiveOutput, StepContext, ce_sum, register_objective

PROJECTOR_FILE = "projectors.safetensors"
DSKD_OBJECTIVES = ("dskd", "dskd_cma", "dskd_eta")

# ------------------------------------------------------------------------------------------------ shared helpers


def _teacher_rows(ctx: StepContext) -> tuple[list[Any], torch.Tensor]:
    """Per example, the teacher at its target rows (``[m_b, V_t]`` logits or a TeacherSignal), and ``[B]`` counts."""
    if ctx.teacher_mask is None:
        raise ValueError("cross-tokenizer objectives need ctx.teacher_mask (the teacher's shifted target positions)")
    counts = ctx.teacher_mask.sum(1)
    if ctx.teacher_logits is not None:
        z = ctx.teacher_logits
        z = z[..., : ctx.teacher_vocab_size] if ctx.teacher_vocab_size else z
        return [z[b][ctx.teacher_mask[b]] for b in range(z.shape[0])], counts
    if isinstance(ctx.teacher_signal, TeacherSignal):
        starts = torch.cumsum(counts, 0) - counts
        return [ctx.teacher_signal.select(torch.arange(int(s), int(s + c), device=counts.device))
                for s, c in zip(starts.tolist(), counts.tolist())], counts
    raise ValueError("cross-tokenizer objectives need ctx.teacher_logits [B, T_t, V_t] or a ctx.teacher_signal over "
                     "the teacher's target rows")


def _student_rows(ctx: StepContext) -> list[torch.Tensor]:
    """Per example, ``[n_b, V_s]`` fp32 student logits at its target positions (grad)."""
    z = ctx.target_logits()
    return list(torch.split(z, ctx.mask.sum(1).tolist()))


def _extra(ctx: StepContext, key: str, build):
    if key not in ctx.extras:
        ctx.extras[key] = build()
    return ctx.extras[key]


# ------------------------------------------------------------------------------------------------ MultiLevelOT

MLOT_PARAMS = {"top_k": 50, "temperature": 1.0, "sd_temperature": 2.0, "sinkhorn_epsilon": 0.1, "sinkhorn_iters": 20,
               "sinkhorn_grad": "unroll", "student_ranking": "assignment", "student_candidates": 400,
               "reference_impl": "paper"}


def _mlot(ctx: StepContext, **params: Any) -> ObjectiveOutput:
    cfg = MultiLevelOTConfig(**params)
    teacher, _ = _teacher_rows(ctx)
    terms = multilevel_ot_terms(_student_rows(ctx), teacher, cfg, teacher_vocab_size=ctx.teacher_vocab_size)
    if cfg.reference_impl == "official":
        # The official code's terms are batch means; scaled by the local count so that the trainer's division by
        # the step's count gives back the official value when one micro-batch is the whole step.
        terms = {k: v * ctx.num_targets for k, v in terms.items()}
    return ObjectiveOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)


@register_objective("multilevel_ot", needs_teacher=True, cross_tokenizer=True, teacher_input="logits",
                    default_weights=MLOT_WEIGHTS, params=MLOT_PARAMS, soft_terms=(),
                    description="MultiLevelOT (paper): sequence-ranked top-k HAD + SL + sequence-level Sinkhorn "
                                "distance, + student CE")
def multilevel_ot_objective(ctx: StepContext, **params: Any) -> ObjectiveOutput:
    """Paper weights CE + 0.15·(HAD + 0.1·SL + 0.1·SD). With ``reference_impl=official`` set the official weights
    (had 1.5, sl 0.15, sd 0.15) or use ``multilevel_ot_official``."""
    return _mlot(ctx, **params)


@register_objective("multilevel_ot_official", needs_teacher=True, cross_tokenizer=True, teacher_input="logits",
                    default_weights=MLOT_OFFICIAL_WEIGHTS,
                    params={**MLOT_PARAMS, "reference_impl": "official", "sinkhorn_iters": 10,
                            "student_ranking": "own"},
                    soft_terms=(), description="MultiLevelOT as the official code computes it (methods.md §7.3)")
def multilevel_ot_official_objective(ctx: StepContext, **params: Any) -> ObjectiveOutput:
    return _mlot(ctx, **params)


# ------------------------------------------------------------------------------------------------ CDM


def _cdm_state(ctx: StepContext, threshold: float) -> dict[str, Any]:
    def build():
        from crossdistill.align.dynamic_map import DynamicVocabMap, vocab_strings
        from crossdistill.align.vocab_map import build_vocab_map

        if ctx.teacher_tokenizer is None or ctx.student_tokenizer is None:
            raise ValueError("cdm needs both tokenizers in the step context (token strings, vocabulary map)")
        t_str, s_str = vocab_strings(ctx.teacher_tokenizer), vocab_strings(ctx.student_tokenizer)
        base = build_vocab_map(ctx.teacher_tokenizer, ctx.student_tokenizer).teacher_to_student
        eos = (ctx.teacher_tokenizer.eos_token, ctx.student_tokenizer.eos_token)
        return {"map": DynamicVocabMap(base, t_str, s_str, threshold), "t_str": np.array(t_str, dtype=object),
                "s_str": np.array(s_str, dtype=object),
                "zero": frozenset({eos} if None not in eos else set())}

    return _extra(ctx, "cdm", build)


@register_objective("cdm", needs_teacher=True, cross_tokenizer=True, teacher_input="logits",
                    default_weights=CDM_WEIGHTS, params={"kd_temperature": 0.8, "top_k": 100, "threshold": 0.3},
                    soft_terms=(), description="CDM: entropy-weighted DTW + contextual dynamic vocabulary map, KL "
                                               "on mapped logits (0.1) + student CE (0.9)")
def cdm_objective(ctx: StepContext, kd_temperature: float = 0.8, top_k: int = 100,
                  threshold: float = 0.3) -> ObjectiveOutput:
    state = _cdm_state(ctx, threshold)
    cfg = CDMConfig(kd_temperature=kd_temperature, top_k=top_k, threshold=threshold, zero_cost_pairs=state["zero"])
    teacher, _ = _teacher_rows(ctx)
    s_ids = [ctx.targets[b][ctx.mask[b]].cpu().numpy() for b in range(ctx.mask.shape[0])]
    t_ids = [ctx.teacher_targets[b][ctx.teacher_mask[b]].cpu().numpy() for b in range(ctx.teacher_mask.shape[0])]
    terms = cdm_terms(_student_rows(ctx), teacher, [list(state["s_str"][i]) for i in s_ids],
                      [list(state["t_str"][i]) for i in t_ids], state["map"], cfg,
                      teacher_vocab_size=ctx.teacher_vocab_size)
    return ObjectiveOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)


# ------------------------------------------------------------------------------------------------ DSKD state


@dataclass
class XtokState:
    """Per-run state of a DSKD objective: the projectors (trained, saved with the run) and frozen references."""

    projectors: DSKDProjectors
    """Learnable projectors; optimize ``projector_parameters()`` with their own learning rate."""
    projector_lr: float
    """Learning rate of the projector param group (official scripts: 1e-3 for DSKD/CMA, 5e-4 for DSKDv2)."""
    teacher: torch.nn.Module | None = None
    """Teacher model, only to compute its hidden states when the trainer does not provide them (never saved)."""
    student_embed: torch.Tensor | None = None
    """Student input embedding table (CMA queries), used detached."""
    teacher_embed: torch.Tensor | None = None
    """Teacher input embedding table (CMA keys), used detached."""
    teacher_to_student: torch.Tensor | None = None
    """ETA: ``[V_t]`` teacher id -> the one student token with the same bytes (EOS -> EOS), else -1."""
    keys: dict[str, Any] = field(default_factory=dict)
    """ETA: cached canonical token keys of both tokenizers."""

    def projector_parameters(self) -> list[torch.nn.Parameter]:
        return self.projectors.projector_parameters()

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.projectors.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.projectors.load_state_dict(state)

    def save(self, output_dir: str | Path) -> Path:
        """``<output_dir>/projectors.safetensors``, atomically."""
        return save_projectors(self.projectors, Path(output_dir) / PROJECTOR_FILE)

    def load(self, output_dir: str | Path) -> None:
        self.projectors.load_state_dict(load_projectors(Path(output_dir) / PROJECTOR_FILE).state_dict())


def _base(model):
    from crossdistill.train.models import base_model

    return base_model(model)


def build_objective_state(name: str, student: torch.nn.Module, teacher: torch.nn.Module | None, student_tok: Any,
                          teacher_tok: Any, params: dict[str, Any]) -> XtokState | None:
    """Build the per-run state of objective ``name`` (None for objectives without one). Trainer contract:

    1. call once before creating the optimizer, put the result in ``extras["xtok_state"]`` and move
       ``state.projectors`` to the student's device;
    2. add ``state.projector_parameters()`` as their own optimizer param group with ``lr=state.projector_lr``;
    3. at every checkpoint and at the end, ``state.save(dir)`` (``projectors.safetensors`` next to the student, not
       inside its weights); on resume, ``state.load(checkpoint_dir)``.
    """
    if name not in DSKD_OBJECTIVES:
        return None
    s_model = _base(student)
    hs = int(s_model.get_output_embeddings().weight.shape[1])
    if teacher is None:
        raise ValueError(f"{name} needs an online teacher model (its hidden states feed the projectors)")
    t_model = _base(teacher)
    ht = int(t_model.get_output_embeddings().weight.shape[1])
    with torch.random.fork_rng(devices=[]):  # seeded init without moving the run's global RNG stream
        torch.manual_seed(int(params.get("projector_seed", 0)))
        proj = DSKDProjectors(hs, ht, cross_attention=(name == "dskd_cma"))
    state = XtokState(proj, float(params.get("projector_lr") or (5e-4 if name == "dskd_eta" else 1e-3)),
                      teacher=teacher)
    if name == "dskd_cma":
        state.student_embed = s_model.get_input_embeddings().weight
        state.teacher_embed = t_model.get_input_embeddings().weight
    if name == "dskd_eta":
        from crossdistill.align.vocab_map import build_vocab_map, token_keys

        vm = build_vocab_map(teacher_tok, student_tok)
        t2s = torch.as_tensor(vm.teacher_to_student.copy())
        if teacher_tok.eos_token_id is not None and student_tok.eos_token_id is not None:
            t2s[teacher_tok.eos_token_id] = student_tok.eos_token_id
        state.teacher_to_student = t2s
        state.keys = {"teacher": token_keys(teacher_tok), "student": token_keys(student_tok)}
        if params.get("init_projectors", True):
            ov_t = torch.as_tensor(vm.matched_teacher)
            ov_s = torch.as_tensor(vm.matched_student)
            pinv_projector_init(proj, s_model.get_output_embeddings().weight.detach().float().cpu(),
                                t_model.get_output_embeddings().weight.detach().float().cpu(), ov_t, ov_s,
                                topk_vocab=params.get("topk_vocab"), init_s2t=True,
                                freeze_s2t=bool(params.get("freeze_s2t", True)))
    return state


def _state(ctx: StepContext, name: str) -> XtokState:
    state = ctx.extras.get("xtok_state")
    if state is None:
        raise ValueError(f"{name} needs its projector state in ctx.extras['xtok_state'], built once per run by "
                         "crossdistill.train.xtok_objectives.build_objective_state (the trainer does this and trains "
                         "the projectors with their own learning rate)")
    return state


def _own_teacher_hidden(ctx: StepContext, state: XtokState, name: str) -> torch.Tensor:
    """``[B, T_t, H_t]`` teacher hidden states over the teacher's own rendering (no grad)."""
    tb = ctx.teacher_batch
    if tb is None:
        raise ValueError(f"{name} needs ctx.teacher_batch (the teacher's own rendering: input_ids, attention_mask)")
    length = tb["input_ids"].shape[1]
    if ctx.teacher_hidden is not None and tuple(ctx.teacher_hidden.shape[:2]) == (tb["input_ids"].shape[0], length):
        return ctx.teacher_hidden.detach()
    if state.teacher is None:
        require_hidden(None, name)
    from crossdistill.train.trainer import hidden_states

    dev = next(state.teacher.parameters()).device
    with torch.no_grad():
        h = hidden_states(state.teacher, {"input_ids": tb["input_ids"].to(dev),
                                          "attention_mask": tb["attention_mask"].to(dev)})
    return h.to(ctx.student_hidden.device)


def _check_plain_head(ctx: StepContext, name: str) -> None:
    if ctx.lm_head_bias is not None or ctx.logit_scale != 1.0:
        raise NotImplementedError(f"{name}: students with an lm_head bias or a logit scale are not supported yet")


DSKD_PARAMS = {"kd_temperature": 2.0, "kd_divergence": "forward_kl", "projector_lr": None, "projector_seed": 0}


@register_objective("dskd", needs_teacher=True, cross_tokenizer=False, teacher_input="hidden",
                    default_weights=DSKD_WEIGHTS, params=DSKD_PARAMS, soft_terms=(),
                    description="DSKD (same vocabulary): dual-space KD with learnable projectors, + student CE")
def dskd_objective(ctx: StepContext, kd_temperature: float = 2.0, kd_divergence: str = "forward_kl",
                   projector_lr: float | None = None, projector_seed: int = 0) -> ObjectiveOutput:
    _check_plain_head(ctx, "dskd")
    state = _state(ctx, "dskd")
    h_t = require_hidden(ctx.teacher_hidden, "dskd")
    if ctx.teacher_lm_head_weight is None:
        raise ValueError("dskd needs ctx.teacher_lm_head_weight")
    terms = dskd_terms(ctx.target_hidden(), ctx.lm_head_weight, h_t[ctx.mask], ctx.teacher_lm_head_weight,
                       ctx.targets[ctx.mask], state.projectors, temperature=kd_temperature,
                       kd_divergence=kd_divergence, chunk_tokens=ctx.chunk_tokens, vocab_size=ctx.vocab_size)
    return ObjectiveOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)


@register_objective("dskd_cma", needs_teacher=True, cross_tokenizer=True, teacher_input="logits",
                    default_weights=DSKD_WEIGHTS, params=DSKD_PARAMS, soft_terms=(),
                    description="DSKD-CMA (different vocabularies): cross-model attention projectors, + student CE")
def dskd_cma_objective(ctx: StepContext, kd_temperature: float = 2.0, kd_divergence: str = "forward_kl",
                       projector_lr: float | None = None, projector_seed: int = 0) -> ObjectiveOutput:
    _check_plain_head(ctx, "dskd_cma")
    state = _state(ctx, "dskd_cma")
    if state.student_embed is None or state.teacher_embed is None:
        raise ValueError("dskd_cma state has no embedding tables; build it with build_objective_state('dskd_cma', ...)")
    h_t = _own_teacher_hidden(ctx, state, "dskd_cma")
    w_t = _base(state.teacher).get_output_embeddings().weight
    terms = dskd_cma_terms(ctx.student_hidden, ctx.lm_head_weight, state.student_embed, ctx.batch["input_ids"],
                           ctx.targets, ctx.mask, h_t, w_t.to(h_t.device), state.teacher_embed.to(h_t.device),
                           ctx.teacher_batch["input_ids"].to(h_t.device), ctx.teacher_targets, ctx.teacher_mask,
                           state.projectors, temperature=kd_temperature, kd_divergence=kd_divergence,
                           student_vocab_size=ctx.vocab_size, teacher_vocab_size=ctx.teacher_vocab_size)
    return ObjectiveOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)


@register_objective("dskd_eta", needs_teacher=True, cross_tokenizer=True, teacher_input="logits",
                    default_weights={**DSKD_WEIGHTS, "aligned": 0.0},
                    params={**DSKD_PARAMS, "t2s_agreement": 1.0, "init_projectors": True, "freeze_s2t": True,
                            "topk_vocab": None},
                    soft_terms=(), description="DSKDv2 exact token alignment: projectors on exactly aligned "
                                               "tokens (pinv init), + student CE")
def dskd_eta_objective(ctx: StepContext, kd_temperature: float = 2.0, kd_divergence: str = "forward_kl",
                       projector_lr: float | None = None, projector_seed: int = 0, t2s_agreement: float = 1.0,
                       init_projectors: bool = True, freeze_s2t: bool = True,
                       topk_vocab: int | None = None) -> ObjectiveOutput:
    from crossdistill.align.eta import eta_align, eta_token_strings

    _check_plain_head(ctx, "dskd_eta")
    state = _state(ctx, "dskd_eta")
    h_t = _own_teacher_hidden(ctx, state, "dskd_eta")
    t_tok, s_tok = ctx.teacher_tokenizer, ctx.student_tokenizer
    t_eos = eta_token_strings(t_tok, [t_tok.eos_token_id], state.keys.get("teacher"))[0] \
        if t_tok.eos_token_id is not None else None
    s_eos = eta_token_strings(s_tok, [s_tok.eos_token_id], state.keys.get("student"))[0] \
        if s_tok.eos_token_id is not None else None
    t_rows, s_rows = [], []
    t_off = s_off = 0
    for b in range(ctx.mask.shape[0]):
        s_ids = ctx.targets[b][ctx.mask[b]].tolist()
        t_ids = ctx.teacher_targets[b][ctx.teacher_mask[b]].tolist()
        pairs = eta_align(eta_token_strings(t_tok, t_ids, state.keys.get("teacher")),
                          eta_token_strings(s_tok, s_ids, state.keys.get("student")),
                          teacher_eos=t_eos, student_eos=s_eos, strip=False)
        t_rows += [t_off + i for i, _ in pairs]
        s_rows += [s_off + j for _, j in pairs]
        t_off += len(t_ids)
        s_off += len(s_ids)
    dev = ctx.student_hidden.device
    w_t = _base(state.teacher).get_output_embeddings().weight.to(dev)
    terms = dskd_eta_terms(ctx.target_hidden(), ctx.lm_head_weight, h_t[ctx.teacher_mask.to(h_t.device)].to(dev),
                           w_t, torch.tensor(t_rows, dtype=torch.long, device=dev),
                           torch.tensor(s_rows, dtype=torch.long, device=dev), state.teacher_to_student,
                           state.projectors, temperature=kd_temperature, kd_divergence=kd_divergence,
                           t2s_agreement=t2s_agreement, student_vocab_size=ctx.vocab_size,
                           teacher_vocab_size=ctx.teacher_vocab_size)
    return ObjectiveOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)
