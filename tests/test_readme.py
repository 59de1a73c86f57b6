"""The README's "Use it" block runs exactly as written, line by line, from a copy of the repository's recipes.

Run: python -m pytest tests/test_readme.py -q   (about a minute: it builds the tiny assets and trains them)
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def use_it_block() -> list[str]:
    """The command lines of the first ```bash block after the README's "## Use it" heading."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Use it"):]
    block = section[section.index("```bash") + len("```bash"):]
    block = block[: block.index("```")]
    return [line for line in block.strip().splitlines() if line.strip()]


def argv_of(line: str) -> list[str]:
    """The line as the user's shell would split it, with ``crossdistill`` / ``python`` as this environment's."""
    words = shlex.split(line, comments=True)
    if words[0] == "crossdistill":
        return [sys.executable, "-m", "crossdistill", *words[1:]]
    if words[0] == "python":
        return [sys.executable, *words[1:]]
    raise AssertionError(f"README line does not start with crossdistill or python: {line!r}")


def test_the_block_is_concrete():
    lines = use_it_block()
    assert len(lines) >= 10
    for line in lines:
        assert not any(w.isupper() and w.isalpha() and len(w) > 3 for w in shlex.split(line, comments=True)), line


def test_use_it_block_runs_as_written(tmp_path):
    shutil.copytree(ROOT / "recipes", tmp_path / "recipes")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    for line in use_it_block():
        proc = subprocess.run(argv_of(line), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"{line}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    assert (tmp_path / "outputs" / "tiny" / "run-gkd" / "manifest.json").is_file()
    assert (tmp_path / "outputs" / "tiny" / "run-fkl" / "manifest.json").is_file()
    assert (tmp_path / "outputs" / "tiny" / "run-cache-uld" / "manifest.json").is_file()
