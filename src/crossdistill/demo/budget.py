"""How much the demo does: :class:`DemoBudget` and its presets in :data:`BUDGETS`."""

from __future__ import annotations

from dataclasses import dataclass

MAX_LENGTH = 384
"""``data.max_length`` of every demo run (and of its teacher cache, which must render the same way)."""

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
