"""The whole tree passes ruff with the project's configuration (pyproject.toml ``[tool.ruff]``): undefined names,
unused imports, import order, bugbear patterns, line length.
Run: python -m pytest tests/test_lint.py -q   (fix most findings with: ruff check --fix src tests benchmarks scripts)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ruff() -> list[str]:
    exe = shutil.which("ruff", path=str(Path(sys.executable).parent)) or shutil.which("ruff")
    assert exe, "ruff is not installed: bash scripts/setup.sh dev installs it (the dev extra pins it)"
    return [exe]


def test_ruff_is_clean():
    proc = subprocess.run([*ruff(), "check", "--no-cache", "--output-format", "concise", "src", "tests",
                           "benchmarks", "scripts"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
