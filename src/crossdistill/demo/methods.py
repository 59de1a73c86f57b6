"""What each demo method trains: the demo's method names, their descriptions, and one function that turns a loss
and a student/teacher/data triple into a training config on the demo's budget (:func:`run_config`, shared with the
benchmarks that train on the demo's pair)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crossdistill.demo.budget import MAX_LENGTH, DemoBudget

METHODS = ("ce", "hard_label", "uld", "gold_hybrid", "cdm")
DEFAULT_METHODS = ("ce", "hard_label", "gold_hybrid")
"""What ``crossdistill demo`` trains without ``--methods`` (the 15-minute budget with a 107M student): CE-only, CE on
the teacher's text, and the recommended soft method. ``uld`` (measured below CE-only here) and ``cdm`` (teacher online)
are opt-in: ``--methods ce,hard_label,uld,gold_hybrid,cdm``."""
RECOMMENDED = "gold_hybrid"
"""The demo's highlighted method (docs/demo.md and benchmarks/results/demo.md have the measurements)."""
WHY_RECOMMENDED = (
    "GOLD's hybrid loss keeps CE on the ground truth and adds forward KL on the vocabulary columns the two tokenizers "
    "share (every digit, most words here), so the student sees the teacher's whole distribution over the next "
    "number, and it needs only the teacher's top-k (it trains from the run's cache, no teacher model in memory). "
    "Measured over 3 seeds on this demo (benchmarks/results/demo.md): the lowest mean bits per byte of the default "
    "methods (0.2165 vs CE-only 0.2237), but task accuracy on par with CE-only (0.320 vs 0.333, within one standard "
    "error): at 16 steps the soft term does not yet buy answers a user can count.")
SOFT_METHODS = ("uld", "gold_hybrid", "cdm")
"""Methods that distil the teacher's distribution (across tokenizers)."""
CACHED_METHODS = ("uld", "gold_hybrid")
"""Methods that train from the demo's offline teacher cache (top-k + tail); ``cdm`` needs the full logits online."""
DESCRIPTIONS = {
    "untrained": "the initial student, before any training",
    "ce": "cross-entropy on the ground-truth completions (no teacher)",
    "hard_label": "cross-entropy on the teacher's text: its greedy answers to the same prompts (SeqKD)",
    "uld": "CE (w=1) + ULD sorted-L1 (w=1.5) over aligned token groups",
    "gold_hybrid": "CE (w=1) + GOLD hybrid: forward KL (JSD beta=0, w=1) on matched vocab columns (unmatched part off)",
    "cdm": "0.9 CE + 0.1 CDM: KL on contextually mapped logits over entropy-weighted DTW alignment (T=0.8)",
    "teacher": "the teacher itself (SmolLM2-135M-Instruct, fine-tuned on the task)",
}


GOLD_PARAMS = {"matched_weight": 1.0, "unmatched_weight": 0.0, "beta": 0.0}
"""``gold_hybrid``'s loss params in the demo (see :func:`method_config` for why fixed weights and beta=0). The
unmatched sorted-L1 half is off: it carries no token identity, its value stayed ~0.2-0.3 nats per token, and
weight 0 measured no worse than weight 1 (benchmarks/results/demo.md, "Levers")."""


@dataclass
class MethodRun:
    """One trained student."""

    name: str
    output_dir: str
    seconds: float
    steps: int
    log_history: list[dict[str, Any]] = field(default_factory=list)


def run_config(loss: str, *, student: Path, teacher: str, data: Path, output_dir: Path, budget: DemoBudget,
               seed: int, label: str, runs_file: Path, cache: Path | None = None,
               params: dict[str, Any] | None = None, weights: dict[str, float] | None = None, lmbda: float = 0.0,
               progress: bool = True) -> dict[str, Any]:
    """The :class:`~crossdistill.config.DistillConfig` (as a dict) of one student trained with ``loss`` on the demo's
    budget (epochs, batch, learning rate with 10 % warm-up and cosine decay, ``MAX_LENGTH``).

    Args:
        data: the training file (ground-truth completions, or the teacher's answers for hard labels).
        label: the run's ``method`` field, ``"<caller>:<name>"``; :func:`train_method` names the run by ``<name>``.
        cache: a teacher cache; methods that can train from a sparse teacher (the registry's
            ``sparse_teacher_methods``) read it instead of running the teacher, off-policy. ``None``: teacher online.
        params, weights: ``loss.params`` and ``loss.weights``; empty means the method's recipe defaults.
        lmbda: GKD's λ; above 0 the student also samples its own completions (``budget.gen_tokens`` new tokens,
            temperature 1), which only an online teacher can score.
    """
    from crossdistill.methods import sparse_teacher_methods

    loss_cfg: dict[str, Any] = {"name": loss, **({"params": dict(params)} if params else {}),
                                **({"weights": dict(weights)} if weights else {})}
    cfg: dict[str, Any] = {
        "student": {"model": str(student)},
        "data": {"train": str(data), "eval_fraction": 0.0, "max_length": MAX_LENGTH},
        "loss": loss_cfg,
        "train": {"output_dir": str(output_dir), "seed": seed, "num_epochs": budget.epochs,
                  "per_device_batch_size": budget.batch_size, "learning_rate": budget.learning_rate,
                  "warmup_ratio": 0.1, "lr_scheduler": "cosine", "weight_decay": 0.0, "logging_steps": 2,
                  "report_to": [], "runs_file": str(runs_file), "progress_bar": progress},
        "method": label,
    }
    if lmbda:
        cfg["onpolicy"] = {"lmbda": lmbda, "max_new_tokens": budget.gen_tokens, "temperature": 1.0}
    if loss == "ce":
        return cfg
    if cache is not None and loss in sparse_teacher_methods() and not lmbda:
        # The tokenizer (not the model) is what the vocabulary maps and the cache's provenance check need.
        cfg["teacher"] = {"cache": str(cache), "tokenizer": teacher, "missing_mass": "tail_bucket"}
        if loss == "uld" and "top_k" not in loss_cfg.get("params", {}):
            # sort the cache's k entries (ULD's default top-256 exceeds what a cache holds)
            from crossdistill.manifest import Manifest

            loss_cfg.setdefault("params", {})["top_k"] = int(Manifest.read(cache).k)
    else:
        cfg["teacher"] = {"model": teacher}
    return cfg


def method_config(method: str, *, student: Path, teacher: str, train: Path, generated: Path | None, out: Path,
                  budget: DemoBudget, seed: int, cache: Path | None = None) -> dict[str, Any]:
    """:func:`run_config` of one demo method (:data:`METHODS`), trained into ``out/students/<method>``; ``cache``: the
    teacher cache that :data:`CACHED_METHODS` read instead of running the teacher."""
    if method == "hard_label" and generated is None:
        raise ValueError("method_config: 'hard_label' trains on the teacher's answers; pass generated=")
    # GOLD's adaptive weights give the matched columns |matched| / |V_teacher| ~ 1% here (a ~600-token student
    # against 49k teacher tokens), although nearly all of the teacher's probability mass sits on matched tokens; a
    # fixed weight keeps the token-identity term in play. beta=0 makes the matched term forward KL: JSD (beta=0.5)
    # saturates at ln 2 while student and teacher are far apart -- a randomly initialised student always is -- and
    # its gradient vanishes (measured: the training CE then tracks CE-only's).
    return run_config("ce" if method in ("ce", "hard_label") else method, student=student, teacher=teacher,
                      data=generated if method == "hard_label" else train,
                      output_dir=out / "students" / method, budget=budget, seed=seed, label=f"demo:{method}",
                      runs_file=out / "runs.jsonl", cache=cache if method in CACHED_METHODS else None,
                      params=GOLD_PARAMS if method == "gold_hybrid" else None)


def train_method(cfg_dict: dict[str, Any]) -> MethodRun:
    """Train one student through the training engine (``crossdistill train`` in-process) and read back its log."""
    from crossdistill.config import config_from_dict
    from crossdistill.train.run import run_training

    cfg = config_from_dict(cfg_dict)
    start = time.perf_counter()
    record = run_training(cfg, overwrite=True)  # a rerun of the demo trains each method afresh
    seconds = time.perf_counter() - start
    state = Path(cfg.train.output_dir) / "trainer_state.json"
    history = json.loads(state.read_text())["log_history"] if state.is_file() else []
    return MethodRun(cfg_dict["method"].split(":", 1)[1], cfg.train.output_dir, seconds, int(record["steps"]),
                     history)
