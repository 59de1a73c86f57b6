"""Read examples from jsonl, parquet or a ``datasets`` directory and normalize them to one of three shapes.

* ``{"messages": [{"role": ..., "content": ...}, ...]}`` — a conversation; the last assistant turn is the completion.
* ``{"prompt": str | messages, "completion": str}`` — a prompt (plain text or messages) and its completion.
* ``{"text": str}`` — plain text, every token a target.

Errors name the file, the example index and the fix, before any model is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

Format = Literal["messages", "prompt_completion", "text"]


class DataError(ValueError):
    """Examples that cannot be used; the message names the file, the example and the fix."""


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """All records of a jsonl / json / parquet file or a ``datasets`` directory (``save_to_disk``) as dicts.

    A directory written by ``crossdistill generate`` holds ``examples.jsonl`` (+ ``manifest.json``) and reads as that.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file {str(p)!r} does not exist; fix data.train / data.eval")
    try:
        if p.is_dir():
            if (p / "examples.jsonl").is_file():
                return read_records(p / "examples.jsonl")
            from datasets import load_from_disk

            ds = load_from_disk(str(p))
            if hasattr(ds, "keys") and not hasattr(ds, "column_names"):  # a DatasetDict: take "train"
                ds = ds["train"] if "train" in ds else next(iter(ds.values()))
            return [dict(r) for r in ds]
        suffix = p.suffix.lower()
        if suffix in (".jsonl", ".json"):
            text = p.read_text(encoding="utf-8")
            if suffix == ".json" and text.lstrip().startswith("["):
                return list(json.loads(text))
            out = []
            for i, line in enumerate(text.splitlines()):
                if line.strip():
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError as err:
                        raise DataError(f"{p}: line {i + 1} is not valid JSON ({err.msg}); fix or remove it") from None
            return out
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(p).to_pylist()
    except DataError:
        raise
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataError(f"cannot read data file {str(p)!r}: {type(err).__name__}: {err}. It must be jsonl (UTF-8), "
                        "parquet, or a datasets directory saved with save_to_disk") from None
    raise DataError(f"data file {str(p)!r} has unsupported extension {p.suffix!r}; use .jsonl, .parquet or a "
                    "datasets directory")


def detect_format(record: dict[str, Any], where: str) -> Format:
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "text" in record:
        return "text"
    raise DataError(f"{where}: cannot tell the format from keys {sorted(record)}; an example needs 'messages', "
                    "'prompt' + 'completion', or 'text' (or set data.format)")


def normalize(record: dict[str, Any], fmt: Format, where: str) -> dict[str, Any]:
    """Check one record and keep only the fields of its format."""
    if fmt == "messages":
        msgs = record.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
        for m in msgs:
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise DataError(f"{where}: every message needs 'role' and 'content', got {m!r}")
        if msgs[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant's (the completion); got role "
                            f"{msgs[-1]['role']!r}")
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]}
    if fmt == "prompt_completion":
        if "prompt" not in record or "completion" not in record:
            raise DataError(f"{where}: data.format=prompt_completion needs 'prompt' and 'completion'")
        if not isinstance(record["completion"], str):
            raise DataError(f"{where}: 'completion' must be a string")
        return {"prompt": record["prompt"], "completion": record["completion"]}
    if not isinstance(record.get("text"), str):
        raise DataError(f"{where}: data.format=text needs a string 'text'")
    return {"text": record["text"]}


def load_examples(path: str | Path, fmt: str = "auto", limit: int | None = None) -> list[dict[str, Any]]:
    """Read and normalize every example of ``path``; raise :class:`DataError` on an empty file or a bad record."""
    records = read_records(path)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise DataError(f"data file {str(path)!r} has no examples; give a file with at least one example")
    out = []
    for i, rec in enumerate(records):
        where = f"{path}: example {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where} is a {type(rec).__name__}, not an object")
        f = detect_format(rec, where) if fmt == "auto" else fmt
        out.append(normalize(rec, f, where))  # type: ignore[arg-type]
    return out


def prompt_messages(example: dict[str, Any]) -> tuple[list[dict[str, str]] | str | None, str]:
    """``(prompt, completion)`` of a normalized example: the prompt as messages or text (``None`` for plain
    text), the completion as text."""
    if "messages" in example:
        return example["messages"][:-1], example["messages"][-1]["content"]
    if "prompt" in example:
        return example["prompt"], example["completion"]
    return None, example["text"]
