"""Combine named loss-term SUMS into one objective, normalized once globally (docs/design.md, contracts 2 and 3).

Every loss in crossdistill returns a SUM over target positions. The objective multiplies each sum by its weight,
multiplies soft-target terms by T² (switchable), and divides everything by the number of target positions of the
whole optimizer step (across micro-batches and processes), clamped at 1 so an all-masked step gives 0, not NaN.
Because the divisor is the GLOBAL count, summing the objectives of micro-batches gives exactly the objective of the
whole batch; dividing each micro-batch by its own count does not (docs/losses.md §2 has a worked example).

Example::

    sums = {"ce": ce_sum, "kd": kd_sum}            # from chunked.fused_distill_loss or any pure loss
    out = combine_terms(sums, {"ce": 0.5, "kd": 0.5}, num_targets=global_count, temperature=2.0)
    out.loss.backward(); log(out.metrics())       # every term reported separately
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch

HARD_TERMS: frozenset[str] = frozenset({"ce", "nll"})
"""Terms treated as hard-label losses (no T²) when ``soft_terms`` is not given."""


@dataclass(frozen=True)
class Objective:
    """The combined loss and its parts."""

    loss: torch.Tensor
    """Scalar to backpropagate: Σ_name weight · scale · sum / count."""

    terms: dict[str, torch.Tensor]
    """Per-term normalized value (scale · sum / count, WITHOUT the weight), detached, for logging."""

    weighted: dict[str, torch.Tensor]
    """Per-term contribution to ``loss`` (weight · scale · sum / count), detached."""

    num_targets: float
    """The clamped divisor that was used."""

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """Plain floats for loggers: ``{prefix+name: value}`` for every term plus ``loss``."""
        out = {f"{prefix}{name}": float(v) for name, v in self.terms.items()}
        out[f"{prefix}loss"] = float(self.loss.detach())
        return out


def normalize(term_sum: torch.Tensor, num_targets: int | float | torch.Tensor) -> torch.Tensor:
    """``term_sum / max(num_targets, 1)``: a term sum over the global number of target positions."""
    if isinstance(num_targets, torch.Tensor):
        return term_sum / num_targets.to(term_sum.dtype).clamp(min=1)
    return term_sum / max(float(num_targets), 1.0)


def combine_terms(
    sums: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    num_targets: int | float | torch.Tensor,
    *,
    temperature: float = 1.0,
    scale_soft_by_t2: bool = True,
    soft_terms: Iterable[str] | None = None,
) -> Objective:
    """Weighted sum of named term sums, divided by the global target count.

    Args:
        sums: name -> scalar SUM over this micro-batch's target positions.
        weights: name -> weight; every name in ``sums`` must have one (0 disables a term but still reports it).
        num_targets: number of target positions in the whole optimizer step (all micro-batches, all processes);
            clamped at 1.
        temperature: the distillation temperature T of the soft terms.
        scale_soft_by_t2: multiply soft terms by T² (Hinton et al.: soft-target gradients scale as 1/T²). Default on.
        soft_terms: names of the soft-target terms; default every name except ``ce``/``nll``.

    Returns:
        :class:`Objective` with the loss and every term reported separately.
    """
    missing = sorted(set(sums) - set(weights))
    if missing:
        raise ValueError(f"no weight given for term(s) {missing}; weights has {sorted(weights)}")
    if not temperature > 0:
        raise ValueError(f"temperature={temperature} must be > 0")
    soft = set(soft_terms) if soft_terms is not None else set(sums) - HARD_TERMS
    unknown = sorted(soft - set(sums))
    if unknown:
        raise ValueError(f"soft_terms {unknown} are not among the term sums {sorted(sums)}")
    t2 = temperature**2 if scale_soft_by_t2 else 1.0
    loss: torch.Tensor | None = None
    terms: dict[str, torch.Tensor] = {}
    weighted: dict[str, torch.Tensor] = {}
    for name, term_sum in sums.items():
        scaled = normalize(term_sum * (t2 if name in soft else 1.0), num_targets)
        contribution = float(weights[name]) * scaled
        terms[name] = scaled.detach()
        weighted[name] = contribution.detach()
        loss = contribution if loss is None else loss + contribution
    if loss is None:
        raise ValueError("combine_terms needs at least one term sum")
    divisor = float(num_targets.clamp(min=1)) if isinstance(num_targets, torch.Tensor) else max(float(num_targets), 1.0)
    return Objective(loss=loss, terms=terms, weighted=weighted, num_targets=divisor)
