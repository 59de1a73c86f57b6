"""Distillation scaling laws (Busbridge et al. 2025): predict, fit, plan, and decide whether to distill.

    >>> from crossdistill.scaling import supervised_loss, student_loss
    >>> round(student_loss(1e9, 2e10, 2.2), 5)
    2.31695
"""

from crossdistill.scaling.flops import (
    PAPER_SHAPE,
    SCENARIOS,
    ArchitectureShape,
    Scenario,
    distillation_flops,
    forward_flops_per_token,
    supervised_flops,
)
from crossdistill.scaling.laws import (
    PAPER,
    PRESETS,
    DistillationCoefficients,
    LawPreset,
    SupervisedCoefficients,
    optimal_teacher_loss,
    student_loss,
    supervised_loss,
    teacher_loss,
    tokens_for_supervised_loss,
)

__all__ = [
    "PAPER",
    "PRESETS",
    "PAPER_SHAPE",
    "SCENARIOS",
    "ArchitectureShape",
    "DistillationCoefficients",
    "LawPreset",
    "Scenario",
    "SupervisedCoefficients",
    "distillation_flops",
    "forward_flops_per_token",
    "optimal_teacher_loss",
    "student_loss",
    "supervised_flops",
    "supervised_loss",
    "teacher_loss",
    "tokens_for_supervised_loss",
    # lazily imported (scipy/matplotlib-heavy): fit_runs, load_runs, plan_distillation, should_distill,
    # recommend_assistant
    "fit_runs",
    "load_runs",
    "plan_distillation",
    "plan_supervised",
    "should_distill",
    "recommend_assistant",
]

_LAZY = {
    "fit_runs": "crossdistill.scaling.fit",
    "fit_supervised": "crossdistill.scaling.fit",
    "fit_distillation": "crossdistill.scaling.fit",
    "FitOptions": "crossdistill.scaling.fit",
    "load_runs": "crossdistill.scaling.runs",
    "RunTable": "crossdistill.scaling.runs",
    "plan_distillation": "crossdistill.scaling.plan",
    "plan_supervised": "crossdistill.scaling.plan",
    "should_distill": "crossdistill.scaling.plan",
    "recommend_assistant": "crossdistill.scaling.assistant",
    "Candidate": "crossdistill.scaling.assistant",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'crossdistill.scaling' has no attribute {name!r}")
