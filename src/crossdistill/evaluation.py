"""``crossdistill eval``: bits per byte, cross-entropy, teacher agreement and task accuracy on held-out examples.

Usage::

    crossdistill eval RECIPE [key=value ...]          # the recipe's trained student (train.output_dir) vs its teacher
    crossdistill eval --model DIR [--teacher DIR|FILE.gguf] --data held_out.jsonl [--json]

Metrics (docs/demo.md defines them with an example):

* **bits per byte (bpb)** — the tokenizer-independent one. Each model renders the prompt with its own chat template
  and scores the same completion text followed by its own end-of-turn token:
  ``bpb = sum of NLL (nats) over the completion's target tokens / (ln 2 * UTF-8 bytes of the completion text)``,
  summed over all examples before dividing. Both the numerator (the log-probability of exactly this response) and
  the denominator (bytes of text) mean the same thing for any tokenizer, so students with different tokenizers
  compare on equal terms.
* **CE** — the same NLL sum divided by the number of target tokens (nats per token; depends on the tokenizer).
* **agreement** — across tokenizers, the completion is cut into aligned groups (:mod:`crossdistill.align`: groups of
  student tokens and teacher tokens covering identical text). At the start of every group both models predict their
  next token greedily; they agree when the two tokens have the same text (after undoing byte-level / ``▁`` /
  ``##`` encodings, so ``Ġapples`` equals ``▁apples``), or both predict their end-of-turn token. Reported as the
  fraction of groups. Exact equality is deliberately strict: a looser "one is a prefix of the other" rule lets a
  student that always predicts a bare space agree with every teacher token that starts with one.
* **accuracy** — greedy generation from the prompt, scored by :func:`crossdistill.tasks.score` against the
  example's ``answer`` field (only for examples that have one).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy, torch and the loaders import when a command runs, so `crossdistill eval --help` is instant
    import numpy as np
    import torch


@dataclass
class ForwardOutputs:
    """One model's pass over examples: per-example target NLLs and greedy predictions (completion tokens)."""

    nll: list[np.ndarray]
    """Per example ``[n]`` float64 NLL (nats) of each completion token (EOS included), in token order."""
    argmax: list[np.ndarray]
    """Per example ``[n]`` int64 id the model ranks first at the row that predicts each completion token."""
    spans: list[list[tuple[int, int]]]
    """Per example character span of each completion token in the completion text."""
    nbytes: list[int]
    """Per example UTF-8 bytes of the completion text the tokens cover."""

    @property
    def total_nll(self) -> float:
        return float(sum(x.sum() for x in self.nll))

    @property
    def tokens(self) -> int:
        return int(sum(x.size for x in self.nll))

    @property
    def bytes(self) -> int:
        return int(sum(self.nbytes))


@dataclass
class EvalResult:
    """Metrics of one model on one example set (``None`` when not measured)."""

    name: str
    examples: int
    tokens: int
    bytes: int
    nll_nats: float
    """Total NLL (nats) of all completion tokens."""
    ce: float
    """Nats per completion token."""
    bpb: float
    """Bits per UTF-8 byte of completion text."""
    agreement: float | None = None
    """Fraction of aligned groups where the greedy next tokens agree with the teacher's."""
    accuracy: float | None = None
    """Fraction of examples with an ``answer`` whose greedy generation scores correct."""
    scored: int = 0
    """Examples with an ``answer`` (the accuracy's denominator)."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    """A few generations, for the report."""


def _render_all(tok: Any, records: Sequence[dict[str, Any]], max_length: int) -> list[Any]:
    from crossdistill.data.load import prompt_messages
    from crossdistill.data.render import render

    out = []
    for i, rec in enumerate(records):
        prompt, completion = prompt_messages(rec)
        r = render(tok, "" if prompt is None else prompt, completion, max_length=max_length)
        if "prompt_truncated" in r.flags:
            from crossdistill.data.load import DataError

            raise DataError(f"example {i}: the prompt alone is longer than max_length={max_length} tokens; raise "
                            "--max-length or drop the example")
        out.append(r)
    return out


def forward_outputs(model: torch.nn.Module, tok: Any, records: Sequence[dict[str, Any]], *, batch_size: int = 8,
                    max_length: int = 512, progress: bool = True, desc: str = "score",
                    chunk_tokens: int = 1024) -> ForwardOutputs:
    """Score every example's completion with ``model`` (teacher forcing, its own rendering of the prompt).

    Args:
        records: normalized examples (``prompt`` + ``completion``, ``messages`` or ``text``).
        batch_size: examples per forward pass (sorted by length, right-padded).
        chunk_tokens: target tokens per lm_head call (logits exist only for target rows, ``chunk_tokens`` at a time).

    Returns:
        :class:`ForwardOutputs` in the order of ``records``.
    """
    import torch

    with torch.no_grad():
        return _forward_outputs(model, tok, records, batch_size=batch_size, max_length=max_length, progress=progress,
                                desc=desc, chunk_tokens=chunk_tokens)


def _forward_outputs(model: torch.nn.Module, tok: Any, records: Sequence[dict[str, Any]], *, batch_size: int,
                     max_length: int, progress: bool, desc: str, chunk_tokens: int) -> ForwardOutputs:
    from tqdm.auto import tqdm

    from crossdistill.data.render import collate_rendered
    from crossdistill.metrics import completion_bytes, token_nll
    from crossdistill.models import hidden_states, output_head
    from crossdistill.positions import shift_targets

    rendered = _render_all(tok, records, max_length)
    pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)
    device = next(model.parameters()).device
    weight, bias, scale, softcap = output_head(model)
    was_training = model.training
    model.eval()
    n = len(rendered)
    nll: list[np.ndarray | None] = [None] * n
    top: list[np.ndarray | None] = [None] * n
    order = sorted(range(n), key=lambda i: len(rendered[i].input_ids))
    for s in tqdm(range(0, n, batch_size), desc=desc, disable=not progress, leave=False):
        idx = order[s:s + batch_size]
        batch = collate_rendered([rendered[i] for i in idx], pad)
        hidden = hidden_states(model, {"input_ids": batch["input_ids"].to(device),
                                       "attention_mask": batch["attention_mask"].to(device)})  # [B, T, H]
        labels = batch["labels"].to(device)
        batch_nll, batch_top = token_nll(hidden, weight, bias, scale, len(tok), labels, chunk_tokens,
                                         softcap=softcap, with_argmax=True)  # [N], [N] in row-major order
        batch_nll, batch_top = batch_nll.double().cpu().numpy(), batch_top.cpu().numpy()
        counts = shift_targets(labels)[1].sum(1).tolist()
        at = 0
        for i, c in zip(idx, counts):
            nll[i], top[i] = batch_nll[at:at + c], batch_top[at:at + c]
            at += c
    model.train(was_training)
    nbytes = [completion_bytes(r) for r in rendered]
    # A completion token with no predictor row (completion at index 0, no prompt) has no NLL; its span is dropped.
    spans = [list(r.spans[len(r.spans) - len(x):]) for r, x in zip(rendered, nll)]
    return ForwardOutputs(nll=nll, argmax=top, spans=spans, nbytes=nbytes)  # type: ignore[arg-type]


def _token_texts(tok: Any) -> tuple[list[bytes | None], set[int]]:
    """Canonical bytes of every token id (byte-level / ``▁`` / ``##`` undone) and the end-of-turn ids."""
    from crossdistill.align.vocab_map import token_keys

    keys = token_keys(tok)
    ends = {i for i in (tok.eos_token_id, tok.pad_token_id) if i is not None}
    return keys, ends


def _same_text(a: bytes | None, b: bytes | None) -> bool:
    return bool(a) and a == b


def agreement(student: ForwardOutputs, teacher: ForwardOutputs, student_tok: Any, teacher_tok: Any) -> float:
    """Fraction of aligned groups whose first-token greedy predictions have the same text (module docstring).

    Groups come from :func:`crossdistill.align.spans.align_spans` over each example's completion spans.
    """
    from crossdistill.align.spans import align_spans

    s_keys, s_end = _token_texts(student_tok)
    t_keys, t_end = _token_texts(teacher_tok)
    agree = total = 0
    for s_sp, t_sp, s_top, t_top in zip(student.spans, teacher.spans, student.argmax, teacher.argmax):
        al = align_spans(s_sp, t_sp)
        s_first = _first_index(al.student_group, al.num_groups)
        t_first = _first_index(al.teacher_group, al.num_groups)
        for g in range(al.num_groups):
            i, j = s_first[g], t_first[g]
            if i < 0 or j < 0:
                continue
            a, b = int(s_top[i]), int(t_top[j])
            total += 1
            if a in s_end or b in t_end:
                agree += a in s_end and b in t_end
            else:
                agree += _same_text(s_keys[a] if a < len(s_keys) else None, t_keys[b] if b < len(t_keys) else None)
    return agree / total if total else float("nan")


def _first_index(groups: np.ndarray, num_groups: int) -> np.ndarray:
    """``[G]`` index of the first token of each group (-1 for a group with no token on this side)."""
    import numpy as np

    first = np.full(num_groups, -1, dtype=np.int64)
    for i in range(groups.size - 1, -1, -1):
        if groups[i] >= 0:
            first[groups[i]] = i
    return first


def generate_answers(model: torch.nn.Module, tok: Any, prompts: Sequence[Any], *, max_new_tokens: int = 64,
                     batch_size: int = 16, progress: bool = True, desc: str = "generate") -> list[str]:
    """Greedy completions (special tokens removed) of each prompt, rendered with the model's own template.

    Prompts are batched shortest rendered text first, so a batch pads little; results come back in input order.
    """
    from crossdistill.data.render import render_prompt
    from crossdistill.models import generate

    lengths = [len(render_prompt(tok, p)[0]) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: lengths[i])
    gens = generate(model, tok, [prompts[i] for i in order], max_new_tokens=max_new_tokens, batch_size=batch_size,
                    progress=progress, desc=desc)
    out: list[str] = [""] * len(prompts)
    for i, g in zip(order, gens):
        out[i] = g.text
    return out


def task_accuracy(model: torch.nn.Module, tok: Any, records: Sequence[dict[str, Any]], *, max_new_tokens: int = 64,
                  batch_size: int = 16, progress: bool = True, desc: str = "generate",
                  keep_samples: int = 3) -> tuple[float | None, int, list[dict[str, Any]]]:
    """Greedy-generation accuracy over the records that carry an ``answer``.

    Returns:
        ``(accuracy or None when no record has an answer, number scored, a few samples)``.
    """
    from crossdistill.data.load import prompt_messages
    from crossdistill.tasks import score

    keep = [r for r in records if r.get("answer") is not None]
    if not keep:
        return None, 0, []
    prompts = [prompt_messages(r)[0] or "" for r in keep]
    answers = generate_answers(model, tok, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size,
                               progress=progress, desc=desc)
    correct = [score(a, r["answer"]) for a, r in zip(answers, keep)]
    samples = [{"prompt": _prompt_text(p), "output": a, "answer": r["answer"], "correct": c}
               for p, a, r, c in zip(prompts[:keep_samples], answers, keep, correct)]
    return sum(correct) / len(keep), len(keep), samples


def _prompt_text(prompt: Any) -> str:
    return prompt if isinstance(prompt, str) else " / ".join(m["content"] for m in prompt)


def result_from(name: str, out: ForwardOutputs) -> EvalResult:
    """bpb and CE of one :class:`ForwardOutputs` (agreement and accuracy are filled in by the caller)."""
    from crossdistill.metrics import bits_per_byte

    return EvalResult(name=name, examples=len(out.nll), tokens=out.tokens, bytes=out.bytes, nll_nats=out.total_nll,
                      ce=out.total_nll / max(out.tokens, 1), bpb=bits_per_byte(out.total_nll, out.bytes))


def evaluate_models(students: dict[str, tuple[torch.nn.Module, Any]], records: Sequence[dict[str, Any]], *,
                    teacher: tuple[torch.nn.Module, Any] | None = None,
                    teacher_outputs: ForwardOutputs | None = None, teacher_result: EvalResult | None = None,
                    generate: bool = True, teacher_generate: bool | None = None, max_new_tokens: int = 64,
                    batch_size: int = 8, max_length: int = 512, progress: bool = True,
                    ) -> tuple[dict[str, EvalResult], ForwardOutputs | None]:
    """Evaluate several models on the same held-out ``records``; the teacher is scored (and generates) once.

    Args:
        students: name -> (model, tokenizer).
        teacher: (model, tokenizer) for agreement and the teacher's own row; its row is named ``teacher``.
        generate: measure task accuracy of the students by greedy generation.
        teacher_generate: the same for the teacher (default: ``generate``).
        teacher_outputs / teacher_result: reuse an earlier pass of the same teacher on the same records (the demo
            evaluates students at several points and scores the teacher once).

    Returns:
        ``({name: EvalResult}, teacher ForwardOutputs or None)``.
    """
    results: dict[str, EvalResult] = {}
    if teacher is not None:
        t_model, t_tok = teacher
        if teacher_outputs is None:
            teacher_outputs = forward_outputs(t_model, t_tok, records, batch_size=batch_size, max_length=max_length,
                                              progress=progress, desc="score teacher")
        if teacher_result is None:
            teacher_result = result_from("teacher", teacher_outputs)
            if generate if teacher_generate is None else teacher_generate:
                acc, n, samples = task_accuracy(t_model, t_tok, records, max_new_tokens=max_new_tokens,
                                                batch_size=batch_size, progress=progress, desc="generate teacher")
                teacher_result.accuracy, teacher_result.scored, teacher_result.samples = acc, n, samples
        results["teacher"] = teacher_result
    for name, (model, tok) in students.items():
        out = forward_outputs(model, tok, records, batch_size=batch_size, max_length=max_length, progress=progress,
                              desc=f"score {name}")
        res = result_from(name, out)
        if teacher is not None and teacher_outputs is not None:
            res.agreement = agreement(out, teacher_outputs, tok, teacher[1])
        if generate:
            res.accuracy, res.scored, res.samples = task_accuracy(model, tok, records, max_new_tokens=max_new_tokens,
                                                                  batch_size=16, progress=progress,
                                                                  desc=f"generate {name}")
        results[name] = res
    return results, teacher_outputs


# ---------------------------------------------------------------------------------------------------------- output
COLUMNS = (("bpb", "bits/byte", "{:.4f}"), ("ce", "CE nats/tok", "{:.4f}"), ("agreement", "agreement", "{:.3f}"),
           ("accuracy", "accuracy", "{:.3f}"), ("tokens", "tokens", "{:d}"), ("bytes", "bytes", "{:d}"))


def format_table(results: dict[str, EvalResult] | Sequence[EvalResult], markdown: bool = False,
                 extra: dict[str, dict[str, str]] | None = None) -> str:
    """A fixed-width (or markdown) table of results, one row per model; ``extra`` adds columns by row name."""
    rows = list(results.values()) if isinstance(results, dict) else list(results)
    extra = extra or {}
    extra_cols = list(dict.fromkeys(k for v in extra.values() for k in v))
    head = ["model"] + [c[1] for c in COLUMNS] + extra_cols
    body = []
    for r in rows:
        cells = [r.name]
        for key, _, fmt in COLUMNS:
            v = getattr(r, key)
            cells.append("—" if v is None or (isinstance(v, float) and math.isnan(v)) else fmt.format(v))
        cells += [extra.get(r.name, {}).get(c, "") for c in extra_cols]
        body.append(cells)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt_row = lambda cells: "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)  # noqa: E731
                                      for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([fmt_row(head), fmt_row(["-" * w for w in widths])] + [fmt_row(c) for c in body])


def results_json(results: dict[str, EvalResult]) -> str:
    return json.dumps({k: asdict(v) for k, v in results.items()}, indent=2)


# ------------------------------------------------------------------------------------------------------------- CLI
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="crossdistill eval",
        description="Bits per byte, cross-entropy, teacher agreement and task accuracy of a student on held-out "
                    "examples. Give a RECIPE (evaluates its train.output_dir against its teacher on data.eval) or "
                    "--model and --data.")
    p.add_argument("recipe", nargs="?", help="YAML recipe; key=value overrides may follow")
    p.add_argument("overrides", nargs="*", help="recipe overrides, e.g. data.eval=held.jsonl")
    p.add_argument("--model", help="student directory or Hub id (default: the recipe's train.output_dir)")
    p.add_argument("--teacher", help="teacher directory, Hub id or .gguf (default: the recipe's teacher)")
    p.add_argument("--data", help="held-out jsonl/parquet (default: the recipe's data.eval)")
    p.add_argument("--limit", type=int, help="use only the first N examples")
    p.add_argument("--max-new-tokens", type=int, default=64, help="generation length for task accuracy")
    p.add_argument("--no-generate", action="store_true", help="skip generation (no task accuracy)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=512, help="tokens per rendered example")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def _check_ref(ref: str, flag: str) -> None:
    """A model reference meant as a path must exist; said before anything loads (Hub ids: models.resolve_ref)."""
    from crossdistill.io import looks_like_path

    if looks_like_path(ref) and not Path(ref).expanduser().exists():
        raise SystemExit(f"crossdistill eval: {flag} {ref!r} does not exist; give a model directory (e.g. a run's "
                         "train.output_dir), a .gguf file or a Hub id")


def _resolve(args: argparse.Namespace) -> tuple[str, str | None, list[dict[str, Any]], str]:
    """``(student ref, teacher ref or None, held-out examples, where they come from)`` from the recipe and the flags;
    errors name the fix. Examples keep their ``answer`` field (task accuracy).

    With a recipe and no ``--data``: ``data.eval``, or else the examples training held out of ``data.train`` by
    ``data.eval_fraction`` (the same split: the last ``round(n * fraction)`` examples)."""
    from crossdistill.data.load import load_examples, split_eval

    model, teacher, data = args.model, args.teacher, args.data
    fmt, records, source = "auto", None, None
    if args.recipe:
        from crossdistill.config import load_config
        from crossdistill.manifest import MANIFEST_NAME

        cfg = load_config(args.recipe, args.overrides, validate_paths=False)
        fmt = cfg.data.format
        if model is None:
            out = Path(cfg.train.output_dir)
            if (out / "config.json").is_file():
                model = str(out)
            elif (out / "resolved_config.yaml").is_file() and not (out / MANIFEST_NAME).is_file():
                _refuse_unfinished_run(str(out))
            else:
                print(f"crossdistill eval: train.output_dir={str(out)!r} holds no trained student yet; evaluating "
                      f"student.model={cfg.student.model!r} (pass --model to choose)", file=sys.stderr)
                model = cfg.student.model
        if teacher is None and cfg.teacher is not None:
            teacher = cfg.teacher.model
        data = data or cfg.data.eval
        if data is None:
            if cfg.data.eval_fraction <= 0:
                raise SystemExit("crossdistill eval: the recipe has neither data.eval nor data.eval_fraction; pass "
                                 "--data held_out.jsonl (or set data.eval=... or data.eval_fraction=0.1)")
            _check_ref(model, "--model" if args.model else "the recipe's model")
            examples = load_examples(cfg.data.train, fmt, cfg.data.max_examples, keep=("answer",))
            records = split_eval(examples, cfg.data.eval_fraction)[1]
            if not records:
                raise SystemExit(f"crossdistill eval: data.train={cfg.data.train!r} has {len(examples)} example(s), "
                                 "too few to hold any out by data.eval_fraction; pass --data held_out.jsonl (or set "
                                 "data.eval=...)")
            source = (f"data.train={cfg.data.train} (its last {len(records)} of {len(examples)}, held out by "
                      f"data.eval_fraction={cfg.data.eval_fraction} as in training)")
    elif args.overrides:
        raise SystemExit("crossdistill eval: key=value overrides need a RECIPE first")
    if not model:
        raise SystemExit("crossdistill eval: give a RECIPE or --model DIR")
    _check_ref(model, "--model" if args.model or not args.recipe else "the recipe's model")
    if teacher:
        _check_ref(teacher, "--teacher" if args.teacher else "the recipe's teacher.model")
    if records is None:
        if not data:
            raise SystemExit("crossdistill eval: give --data held_out.jsonl (prompt+completion records)")
        if not Path(data).exists():
            raise SystemExit(f"crossdistill eval: --data {data!r} does not exist; give a jsonl/parquet file of "
                             "held-out examples")
        records, source = load_examples(data, fmt, keep=("answer",)), str(data)
    if args.limit:
        records = records[: args.limit]
    return model, teacher, records, source


def _refuse_unfinished_run(ref: str) -> None:
    """A ``train.output_dir`` whose final student was never completed (killed before or during the save) holds
    checkpoints but no manifest: say so, instead of failing on whatever files happen to be there."""
    from pathlib import Path

    from crossdistill.config import ConfigError
    from crossdistill.manifest import MANIFEST_NAME

    p = Path(ref).expanduser()
    if p.is_dir() and (p / "resolved_config.yaml").is_file() and not (p / MANIFEST_NAME).is_file():
        raise ConfigError(f"{ref!r} is the output directory of a training run that has not finished (no "
                          f"{MANIFEST_NAME} beside a final student): finish it with `crossdistill train RECIPE "
                          "--resume`, or evaluate one of its checkpoint-N directories")


def load_pretrained(ref: str, role: str = "model") -> tuple[torch.nn.Module, Any]:
    """Model (eval mode, float32) + tokenizer from a directory, Hub id or ``.gguf`` (converted once and cached).

    Loads through :mod:`crossdistill.models`, so a tokenizer that is slow or drops characters is refused here as in
    training (:class:`~crossdistill.config.ConfigError` naming the fix), before any weights load.
    """
    from crossdistill.config import ModelConfig
    from crossdistill.models import load_model, load_tokenizer

    _refuse_unfinished_run(ref)
    mc = ModelConfig(model=ref, dtype="float32")
    tok = load_tokenizer(mc, role)
    model = load_model(mc, role)
    model.eval()
    return model, tok


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.batch_size < 1 or args.max_new_tokens < 1 or (args.limit is not None and args.limit < 1):
        raise SystemExit("crossdistill eval: --batch-size, --max-new-tokens and --limit must be >= 1")
    from crossdistill.data.load import DataError
    from crossdistill.errors import ConfigError
    from crossdistill.io import os_error_message

    try:
        model_ref, teacher_ref, records, source = _resolve(args)
        student = load_pretrained(model_ref, "student")
        teacher = load_pretrained(teacher_ref, "teacher") if teacher_ref else None
        results, _ = evaluate_models({"student": student}, records, teacher=teacher, generate=not args.no_generate,
                                     max_new_tokens=args.max_new_tokens, batch_size=args.batch_size,
                                     max_length=args.max_length, progress=not args.quiet)
    except (ConfigError, DataError) as err:
        print(f"crossdistill eval: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a disk or permission fault: say which, with the path
        message = os_error_message(err)
        if message is None:
            raise
        print(f"crossdistill eval: error: {message}", file=sys.stderr)
        return 1
    if args.json:
        print(results_json(results))
    else:
        print(f"held-out examples: {len(records)} from {source}")
        print(format_table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
