"""The repository stands on its own: no comment, docstring or page points at a document that is not in it.

Scanned: every ``.py`` under src/, tests/, benchmarks/ and scripts/; every ``.md`` under docs/ and benchmarks/ and
README.md; and, because they carry comments too, scripts/*.sh and recipes/**/*.yaml.

Two rules, each checked line by line:

1. **Document names.** The names ``design``, ``methods``, ``performance`` and ``landscape`` followed by the ``.md``
   suffix (as a whole file name: ``cross_tokenizer_methods`` + ``.md`` does not count) may appear only as the
   repository's own page, written ``docs/<name>`` + ``.md``, and that page must exist. A bare name, or one under any
   other folder, pointed at design notes readers do not have.
2. **Numbered contracts.** A line that says ``contract`` or ``contracts`` followed by a number must name
   ``docs/design.md`` on that line or on the line before it (docs/design.md's "Contracts" section is where they are
   numbered). docs/design.md itself is exempt from this rule.

Fix a failure by saying the rule in words, or by pointing at the repository's own docs, e.g.
"(docs/design.md, contract 2: normalization)" or "(docs/losses.md)". Paper citations (authors, year, equation or
table numbers) are fine. The self-tests at the bottom build their sample strings by concatenation so that this file
passes its own scan.

Run: python -m pytest tests/test_repo_stands_alone.py -q
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NAMES = ("design", "methods", "performance", "landscape")
# An optional folder path, then one of the names as a whole file name (not the tail of a longer name).
DOC_REF = re.compile(r"(?<![\w.\-/])((?:[\w.\-]+/)*)(" + "|".join(NAMES) + r")\.md(?![\w\-])")
CONTRACT = re.compile(r"\bcontracts? +\d", re.IGNORECASE)
OWN_DESIGN = "docs/design" + ".md"


def scanned_files() -> list[Path]:
    files: set[Path] = set()
    for folder in ("src", "tests", "benchmarks", "scripts"):
        files.update((ROOT / folder).rglob("*.py"))
    for folder in ("docs", "benchmarks"):
        files.update((ROOT / folder).rglob("*.md"))
    files.update((ROOT / "scripts").rglob("*.sh"))
    files.update((ROOT / "recipes").rglob("*.yaml"))
    files.add(ROOT / "README.md")
    skip = ("__pycache__", ".egg-info")
    return sorted(p for p in files if p.is_file() and not any(s in part for part in p.parts for s in skip))


def problems(lines: list[str], where: str, check_contracts: bool = True, root: Path = ROOT) -> list[str]:
    """``where:line: reason`` for every line of ``lines`` that breaks one of the two rules."""
    out = []
    for i, line in enumerate(lines):
        for m in DOC_REF.finditer(line):
            folder, name = m.group(1), m.group(2)
            if folder != "docs/" or not (root / "docs" / f"{name}.md").is_file():
                out.append(f"{where}:{i + 1}: {m.group(0)!r} is not a page of this repository: {line.strip()}")
        if check_contracts and CONTRACT.search(line):
            context = line + (lines[i - 1] if i > 0 else "")
            if OWN_DESIGN not in context:
                out.append(f"{where}:{i + 1}: a numbered contract without {OWN_DESIGN} on this or the previous "
                           f"line: {line.strip()}")
    return out


def test_no_reference_to_documents_outside_the_repository():
    found = []
    for path in scanned_files():
        rel = path.relative_to(ROOT).as_posix()
        lines = path.read_text(encoding="utf-8").splitlines()
        found += problems(lines, rel, check_contracts=(rel != OWN_DESIGN))
    assert not found, "references to documents outside the repository:\n" + "\n".join(found)


def test_the_scan_covers_the_tree():
    rels = {p.relative_to(ROOT).as_posix() for p in scanned_files()}
    assert {"README.md", OWN_DESIGN, "src/crossdistill/positions.py", "tests/test_repo_stands_alone.py"} <= rels
    assert not any(".egg-info" in r or "__pycache__" in r for r in rels)


MD = ".md"


@pytest.mark.parametrize("text, bad", [
    ("# see methods" + MD + " §3", True),
    ('"""Rule (design' + MD + ' contract' + ' 4)."""', True),
    ("# as performance" + MD + " A.1 says", True),
    ("(landscape" + MD + " §4.15: GKD's coin flip)", True),
    ("see ../design" + MD, True),
    ("see notes/methods" + MD, True),
    ("see docs/methods" + MD + " (no such page here)", True),
    ("# the toy example (contract" + " 2)", True),
    ("# normalized once (contracts" + " 2 and 3)", True),
    ("see docs/design" + MD + ", contract" + " 2: normalization", False),
    ("Busbridge et al. 2025, Eq. 8 and Table 6", False),
    ("docs/cross_tokenizer_methods" + MD + " lists the differences", False),
    ("results in benchmarks/results/cross_tokenizer_methods" + MD, False),
    ("a method's record (methods/base.py)", False),
    ("no contract here, and a contractual clause", False),
])
def test_rule_on_single_lines(text, bad):
    assert bool(problems([text], "x.py")) is bad


def test_contract_may_lean_on_the_previous_line():
    ok = ["the objective divides by the global count (docs/design" + MD + ",", "contract" + " 2) and applies T²."]
    assert problems(ok, "x.py") == []
    far = ["see docs/design" + MD, "", "contract" + " 2"]
    (msg,) = problems(far, "x.py")
    assert msg.startswith("x.py:3: a numbered contract without")


def test_failures_name_file_and_line():
    lines = ["fine", "# see methods" + MD + " §3"]
    (msg,) = problems(lines, "src/crossdistill/x.py")
    assert msg.startswith("src/crossdistill/x.py:2: ")
