"""Tokenizer-level checks of a student–teacher pair, shared by a run's teacher and every extra teacher."""

from __future__ import annotations

from typing import Any

from crossdistill.config import ConfigError, DistillConfig
from crossdistill.methods import Method, cross_tokenizer_methods


def check_pair(cfg: DistillConfig, method: Method, student_tok: Any, teacher_tok: Any | None) -> bool:
    """Tokenizer-level checks; returns whether the teacher needs its own rendering."""
    if teacher_tok is None:
        return False
    # Same-vocabulary objectives need the same id <-> token-string map. Two loadings of one vocabulary may still differ
    # in normalizer / pre-tokenizer (transformers picks a tokenizer class from the model type), which only changes
    # how text is split; the teacher then scores the student's ids, which is what it does on-policy anyway.
    same_tok = student_tok.get_vocab() == teacher_tok.get_vocab()
    uses_vocab = method.needs_teacher and not method.cross_tokenizer
    if uses_vocab and not same_tok:
        cross = cross_tokenizer_methods()
        raise ConfigError(
            f"loss.name={cfg.loss.name!r} compares the two vocabularies id by id, but the student tokenizer "
            f"({cfg.student.tokenizer or cfg.student.model}, {len(student_tok)} tokens) and the teacher tokenizer "
            f"({cfg.teacher.tokenizer or cfg.teacher.model}, {len(teacher_tok)} tokens) have different vocabularies; "
            f"use a cross-tokenizer objective (loss.name one of {cross}) or a teacher with the student's tokenizer")
    same_template = getattr(student_tok, "chat_template", None) == getattr(teacher_tok, "chat_template", None)
    return method.cross_tokenizer or not (same_tok and same_template)
