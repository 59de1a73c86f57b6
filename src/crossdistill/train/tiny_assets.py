"""``python -m crossdistill.train.tiny_assets DIR``: the tiny models and data that ``recipes/tiny*.yaml`` train on.

Builds (no network) a byte-level BPE teacher (Llama-style) and student (Qwen2-style) sharing one tokenizer, a
Unigram student (a cross-tokenizer pair with the teacher), and ``chat.jsonl`` with short arithmetic conversations.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def chat_examples(n: int = 64) -> list[dict]:
    """``n`` tiny conversations ("What is a plus b?" -> "The answer is c.")."""
    out = []
    for i in range(n):
        a, b = (7 * i) % 23, (5 * i + 3) % 19
        out.append({"messages": [{"role": "user", "content": f"What is {a} plus {b}?"},
                                 {"role": "assistant", "content": f"The answer is {a + b}."}]})
    return out


def build(root: str | Path, n_examples: int = 64) -> dict[str, Path]:
    """Write everything under ``root`` (skipping what exists); returns the paths by name."""
    from crossdistill.testing.tiny import save_model, save_tokenizer

    root = Path(root)
    paths = {"tok_bpe": root / "tok-bpe", "tok_unigram": root / "tok-unigram", "teacher": root / "teacher_bpe",
             "student": root / "student_bpe", "student_unigram": root / "student_unigram",
             "data": root / "chat.jsonl"}
    if not (paths["tok_bpe"] / "tokenizer.json").exists():
        save_tokenizer("bpe", paths["tok_bpe"])
    if not (paths["tok_unigram"] / "tokenizer.json").exists():
        save_tokenizer("unigram", paths["tok_unigram"])
    for key, arch, tok, hidden, seed in (("teacher", "llama", "tok_bpe", 48, 1), ("student", "qwen2", "tok_bpe", 32, 2),
                                         ("student_unigram", "mistral", "tok_unigram", 32, 3)):
        if not (paths[key] / "config.json").exists():
            save_model(arch, paths[tok], paths[key], hidden=hidden, seed=seed)
    if not paths["data"].exists():
        paths["data"].write_text("".join(json.dumps(e) + "\n" for e in chat_examples(n_examples)))
    return paths


if __name__ == "__main__":
    for name, path in build(sys.argv[1] if len(sys.argv) > 1 else "outputs/tiny").items():
        print(f"{name}: {path}")
