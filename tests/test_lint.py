"""Static check of the whole tree with pyflakes: undefined names, unused imports, shadowed loop variables.
Run: python -m pytest tests/test_lint.py -q"""

from __future__ import annotations

from pathlib import Path

from pyflakes import api
from pyflakes.reporter import Reporter

ROOT = Path(__file__).resolve().parents[1]


def test_pyflakes_is_clean():
    class Collect(Reporter):
        def __init__(self):
            self.messages: list[str] = []

        def unexpectedError(self, filename, msg):
            self.messages.append(f"{filename}: {msg}")

        def syntaxError(self, filename, msg, lineno, offset, text):
            self.messages.append(f"{filename}:{lineno}: {msg}")

        def flake(self, message):
            self.messages.append(str(message))

    report = Collect()
    for folder in ("src", "tests", "benchmarks", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            api.checkPath(str(path), report)
    assert not report.messages, "\n".join(report.messages)
