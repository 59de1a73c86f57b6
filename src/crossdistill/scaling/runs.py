"""Training-run records for fitting: ``runs.jsonl`` written by ``crossdistill train``, or a CSV.

JSONL: one object per line with ``student_non_embedding_params`` (N_S), ``student_tokens`` (D_S), ``teacher_loss``
(L_T, validation cross-entropy in nats; ``null`` for a supervised run) and ``student_loss`` (validation CE). Other
fields are ignored. With ``metric="bpb"`` the ``student_bpb`` / ``teacher_bpb`` fields are used instead: per-token
cross-entropies of a student and a teacher with *different tokenizers* are not comparable, bits per byte are.
CSV: columns ``N, D, L`` (supervised runs) or ``N_S, D_S, L_T, L_S`` (distillation runs; an empty ``L_T`` marks a
supervised run).
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["RunTable", "load_runs", "RunsError"]

_JSON_FIELDS = {
    "N": ("student_non_embedding_params", "N_S", "N"),
    "D": ("student_tokens", "D_S", "D"),
    "L_T": ("teacher_loss", "L_T"),
    "L": ("student_loss", "L_S", "L"),
}
_EXPECTED = (
    "JSONL with student_non_embedding_params, student_tokens, teacher_loss (null if supervised), student_loss; "
    "or CSV with columns N,D,L (supervised) or N_S,D_S,L_T,L_S (distillation)"
)


class RunsError(ValueError):
    """A run file or run table that cannot be fitted; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class RunTable:
    """Runs as float64 arrays of equal length n. ``L_T`` is NaN for supervised runs."""

    N: np.ndarray
    """[n] student non-embedding parameters."""
    D: np.ndarray
    """[n] student training / distillation tokens."""
    L_T: np.ndarray
    """[n] teacher validation cross-entropy (nats), NaN for supervised runs."""
    L: np.ndarray
    """[n] student validation cross-entropy (nats)."""

    def __post_init__(self) -> None:
        n = len(self.L)
        for name in ("N", "D", "L_T"):
            if len(getattr(self, name)) != n:
                raise RunsError(f"RunTable.{name} has {len(getattr(self, name))} entries but L has {n}.")
        for name in ("N", "D", "L"):
            arr = getattr(self, name)
            bad = ~np.isfinite(arr) | (arr <= 0)
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise RunsError(f"run {i}: {name} = {arr[i]!r}; must be a positive finite number.")
        bad = ~np.isnan(self.L_T) & (~np.isfinite(self.L_T) | (self.L_T <= 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise RunsError(f"run {i}: L_T = {self.L_T[i]!r}; must be a positive finite loss, or null for supervised.")

    def __len__(self) -> int:
        return len(self.L)

    @classmethod
    def from_arrays(cls, N, D, L, L_T=None) -> RunTable:
        N = np.atleast_1d(np.asarray(N, dtype=np.float64))
        L_T = np.full(N.shape, np.nan) if L_T is None else np.atleast_1d(np.asarray(L_T, dtype=np.float64))
        return cls(N, np.atleast_1d(np.asarray(D, np.float64)), L_T, np.atleast_1d(np.asarray(L, np.float64)))

    @property
    def is_distillation(self) -> np.ndarray:
        return ~np.isnan(self.L_T)

    def subset(self, mask_or_index) -> RunTable:
        return RunTable(self.N[mask_or_index], self.D[mask_or_index], self.L_T[mask_or_index], self.L[mask_or_index])

    def supervised(self) -> RunTable:
        return self.subset(~self.is_distillation)

    def distillation(self) -> RunTable:
        return self.subset(self.is_distillation)


def _number(value, *, where: str, field: str, nullable: bool = False) -> float:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        if nullable:
            return math.nan
        raise RunsError(f"{where}: field {field!r} is missing or empty; every run needs it ({_EXPECTED}).")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RunsError(f"{where}: field {field!r} = {value!r} is not a number.") from None
    if math.isnan(x):
        raise RunsError(
            f"{where}: field {field!r} is NaN. A NaN loss usually means a diverged or unfinished run; remove the line "
            "or rerun the evaluation."
        )
    if not math.isfinite(x) or x <= 0:
        raise RunsError(f"{where}: field {field!r} = {x!r}; "
                        "sizes, token counts and losses must be positive and finite.")
    return x


_BPB_FIELDS = {**_JSON_FIELDS, "L_T": ("teacher_bpb",), "L": ("student_bpb",)}


def _pick(record: dict, key: str, fields_: dict = _JSON_FIELDS):
    for name in fields_[key]:
        if name in record:
            return name, record[name]
    return fields_[key][0], None


def _parse_record(record: dict, where: str, metric: str = "loss") -> tuple[float, float, float, float]:
    out = []
    for key in ("N", "D", "L_T", "L"):
        name, value = _pick(record, key, _BPB_FIELDS if metric == "bpb" else _JSON_FIELDS)
        out.append(_number(value, where=where, field=name, nullable=key == "L_T"))
    # A cross-entropy-only run evaluates its teacher too (for comparison), but the student never saw it: it is a
    # supervised run for the laws.
    if record.get("mode") == "sft":
        out[2] = math.nan
    return tuple(out)


def load_runs(path: str | Path, metric: str = "loss") -> RunTable:
    """Read runs from a ``.jsonl`` (training's run records) or ``.csv`` file; raises :class:`RunsError` on bad input.

    ``metric``: ``loss`` (per-token validation cross-entropy, the paper's quantity) or ``bpb`` (bits per byte, JSONL
    only; use it when the teacher's tokenizer differs from the student's).
    """
    if metric not in ("loss", "bpb"):
        raise RunsError(f"metric = {metric!r}: choose loss or bpb.")
    path = Path(path)
    if not path.is_file():
        raise RunsError(f"{path}: no such file. Pass the runs.jsonl written by `crossdistill train`, or a CSV.")
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        raise RunsError(f"{path}: the file is empty; expected at least one run ({_EXPECTED}).")
    rows: list[tuple[float, float, float, float]] = []
    if path.suffix.lower() == ".csv":
        if metric != "loss":
            raise RunsError(f"{path}: metric = {metric!r} needs a runs.jsonl with student_bpb / teacher_bpb fields.")
        reader = csv.DictReader(text.splitlines())
        cols = set(reader.fieldnames or [])
        if {"N", "D", "L"} <= cols:
            names = ("N", "D", None, "L")
        elif {"N_S", "D_S", "L_T", "L_S"} <= cols:
            names = ("N_S", "D_S", "L_T", "L_S")
        else:
            raise RunsError(f"{path}: CSV columns {sorted(cols)} are not recognized; "
                            "expected N,D,L or N_S,D_S,L_T,L_S.")
        for i, row in enumerate(reader, start=2):
            where = f"{path}:{i}"
            rows.append(
                tuple(
                    math.nan if name is None
                    else _number(row.get(name), where=where, field=name, nullable=name == "L_T")
                    for name in names
                )
            )
    else:
        for i, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{i}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RunsError(f"{where}: not valid JSON ({exc.msg}); expected one JSON object per line.") from None
            if not isinstance(record, dict):
                raise RunsError(f"{where}: expected a JSON object, got {type(record).__name__}.")
            rows.append(_parse_record(record, where, metric))
    if not rows:
        raise RunsError(f"{path}: no runs found; expected {_EXPECTED}.")
    arr = np.asarray(rows, dtype=np.float64)
    return RunTable(N=arr[:, 0], D=arr[:, 1], L_T=arr[:, 2], L=arr[:, 3])
