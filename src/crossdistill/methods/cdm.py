"""``cdm``: Contextual Dynamic Mapping — entropy-weighted DTW alignment of the two token sequences, a vocabulary map
that grows with contextual matches during training, and KL on the mapped top-k logits (weight 0.1) beside the
student's cross-entropy (weight 0.9)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from crossdistill.align.dynamic_map import DynamicVocabMap, vocab_strings
from crossdistill.align.vocab_map import build_vocab_map
from crossdistill.losses.cdm import DEFAULT_WEIGHTS, CDMConfig, cdm_terms
from crossdistill.methods.base import FixedState, Method, MethodOutput, StateInputs, StepContext, require
from crossdistill.methods.common import ce_sum, student_rows_per_example, teacher_rows_per_example


@dataclass(frozen=True)
class CDMParams:
    """Parameters of ``cdm``."""

    kd_temperature: float = 0.8
    """Temperature dividing both sides' gathered logits in the KL."""
    top_k: int = 100
    """Top-k ids per side used by the dynamic map and the gather."""
    threshold: float = 0.3
    """Normalized edit distance in (0, 1] below which a context pair joins the map."""

    def check(self) -> None:
        require(self.kd_temperature > 0, "loss.params.kd_temperature", self.kd_temperature, "must be > 0")
        require(self.top_k >= 1, "loss.params.top_k", self.top_k, "must be >= 1")
        require(0.0 < self.threshold <= 1.0, "loss.params.threshold", self.threshold, "must be in (0, 1]")


@dataclass
class CDMState(FixedState):
    """The growing vocabulary map and both vocabularies' strings (rebuilt, not saved: the map is a cache of
    matches, recomputed from the data on resume)."""

    map: DynamicVocabMap
    teacher_strings: np.ndarray
    student_strings: np.ndarray
    zero_cost: frozenset = field(default_factory=frozenset)
    """(teacher EOS, student EOS): aligned at zero cost."""


def build_state(inputs: StateInputs) -> CDMState:
    t_tok, s_tok = inputs.teacher_tokenizer, inputs.student_tokenizer
    if t_tok is None or s_tok is None:
        raise ValueError("cdm needs both tokenizers (token strings, vocabulary map)")
    t_str, s_str = vocab_strings(t_tok), vocab_strings(s_tok)
    base = build_vocab_map(t_tok, s_tok).teacher_to_student
    eos = (t_tok.eos_token, s_tok.eos_token)
    return CDMState(DynamicVocabMap(base, t_str, s_str, inputs.params.threshold), np.array(t_str, dtype=object),
                    np.array(s_str, dtype=object), frozenset({eos} if None not in eos else set()))


def cdm_loss(ctx: StepContext, params: CDMParams, state: CDMState | None) -> MethodOutput:
    if state is None:
        state = build_state(StateInputs(None, None, ctx.student_tokenizer, ctx.teacher_tokenizer, params))
    cfg = CDMConfig(kd_temperature=params.kd_temperature, top_k=params.top_k, threshold=params.threshold,
                    zero_cost_pairs=state.zero_cost)
    teacher, _ = teacher_rows_per_example(ctx)
    s_ids = [ctx.targets[b][ctx.mask[b]].cpu().numpy() for b in range(ctx.mask.shape[0])]
    t_ids = [ctx.teacher_targets[b][ctx.teacher_mask[b]].cpu().numpy() for b in range(ctx.teacher_mask.shape[0])]
    terms = cdm_terms(student_rows_per_example(ctx), teacher, [list(state.student_strings[i]) for i in s_ids],
                      [list(state.teacher_strings[i]) for i in t_ids], state.map, cfg,
                      teacher_vocab_size=ctx.teacher_vocab_size)
    return MethodOutput({"ce": ce_sum(ctx), **terms}, ctx.num_targets)


METHOD = Method("cdm", cdm_loss, default_weights=DEFAULT_WEIGHTS, params=CDMParams, teacher="logits",
                cross_tokenizer=True, soft_terms=(), state=build_state,
                description="CDM: entropy-weighted DTW + contextual dynamic vocabulary map, KL on mapped logits "
                            "(0.1) + student CE (0.9)")

