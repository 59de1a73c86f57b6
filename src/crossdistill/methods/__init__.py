"""Distillation methods: one module per method, each the one adapter between a training step and its loss.

A method is a :class:`Method` record — name, typed parameters, the teacher input it needs, whether it works across
tokenizers or from a sparse (cached) teacher, default weights and soft terms, pre-flight checks and an optional
per-run state — plus a pure ``loss(ctx, params, state)`` that returns term sums. The math lives in
:mod:`crossdistill.losses` and :mod:`crossdistill.align`; the trainer never names a method.

    >>> from crossdistill.methods import get_method
    >>> get_method("uld").default_weights
    {'ce': 1.0, 'uld': 1.5}

Register your own with :func:`register` (see docs/design.md, "Adding a method").
"""

from crossdistill.methods import alm, cdm, ce, divergence, dskd, gold_hybrid, multilevel_ot, uld, xtoken
from crossdistill.methods.base import Method, MethodOutput, MethodState, NoParams, Setup, StateInputs, StepContext
from crossdistill.methods.registry import (
    METHODS,
    cross_tokenizer_methods,
    get_method,
    register,
    sparse_teacher_methods,
    unregister,
)

for _m in (ce.METHOD, *divergence.METHODS, uld.METHOD, gold_hybrid.METHOD, *multilevel_ot.METHODS, cdm.METHOD,
           *dskd.METHODS, *xtoken.METHODS, alm.METHOD):
    register(_m)

__all__ = ["METHODS", "Method", "MethodOutput", "MethodState", "NoParams", "Setup", "StateInputs", "StepContext",
           "cross_tokenizer_methods", "get_method", "register", "sparse_teacher_methods", "unregister"]
