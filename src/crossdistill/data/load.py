"""Read examples from jsonl, parquet or a ``datasets`` directory and normalize them to one of three shapes.

* ``{"messages": [{"role": ..., "content": ...}, ...]}`` — a conversation; the last assistant turn is the completion.
* ``{"prompt": str | messages, "completion": str}`` — a prompt (plain text or messages) and its completion.
* ``{"text": str}`` — plain text, every token a target.

Errors name the file, the example index and the fix, before any model is loaded.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
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


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    """What a JSON value is, as a data file's author would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"


def _content_error(where: str, field: str, content: Any) -> DataError:
    """The error for a message ``content`` that is not a string (``field`` is e.g. ``messages[1].content``)."""
    if content is None:
        return DataError(f"{where}: {field} is null; give the message's text as a string (\"\" for an empty turn) or "
                         "remove the message")
    if isinstance(content, list):
        return DataError(f"{where}: {field} is a list ({_short(content)}), not a string; crossdistill renders text "
                         "turns only: join the parts into one string (it would otherwise be rendered as the text "
                         "of the list)")
    return DataError(f"{where}: {field} is {_kind(content)} ({_short(content)}), not a string; give the message's "
                     "text as a string")


def check_messages(msgs: Any, where: str, field: str = "messages") -> None:
    """Refuse chat messages that would render wrongly: not a non-empty list, a message without a string ``role``
    and ``content`` (list, ``null`` or number contents are refused, never rendered as their ``repr``)."""
    if not isinstance(msgs, list) or not msgs:
        raise DataError(f"{where}: {field!r} must be a non-empty list of {{\"role\": ..., \"content\": ...}} messages; "
                        f"got {_short(msgs)}")
    for j, m in enumerate(msgs):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise DataError(f"{where}: {field}[{j}] needs 'role' and 'content', got {_short(m)}; write each message "
                            "as {\"role\": \"user\", \"content\": \"...\"}")
        if not isinstance(m["role"], str) or not m["role"]:
            raise DataError(f"{where}: {field}[{j}].role is {_short(m['role'])}; give a role name such as \"user\" or "
                            "\"assistant\"")
        if not isinstance(m["content"], str):
            raise _content_error(where, f"{field}[{j}].content", m["content"])


def normalize(record: dict[str, Any], fmt: Format, where: str) -> dict[str, Any]:
    """Check one record and keep only the fields of its format. Every check runs when the data is read, before any
    model loads; each :class:`DataError` names the file, the example, the field and the fix."""
    if fmt == "messages":
        msgs = record.get("messages")
        check_messages(msgs, where)
        if msgs[-1]["role"] != "assistant":
            raise DataError(f"{where}: the last message must be the assistant's (the completion); got "
                            f"messages[{len(msgs) - 1}].role={msgs[-1]['role']!r}; end the conversation with the "
                            "assistant turn to train on")
        if len(msgs) == 1:
            raise DataError(f"{where}: 'messages' holds only the assistant's turn, so there is no prompt; add the "
                            "user turn before it, or write the example as {\"text\": ...} to train on all of its text")
        return {"messages": [{"role": m["role"], "content": m["content"]} for m in msgs]}
    if fmt == "prompt_completion":
        if "prompt" not in record or "completion" not in record:
            raise DataError(f"{where}: data.format=prompt_completion needs 'prompt' and 'completion'; got keys "
                            f"{sorted(record)}")
        prompt = record["prompt"]
        if isinstance(prompt, list):
            check_messages(prompt, where, "prompt")
        elif not isinstance(prompt, str):
            raise DataError(f"{where}: 'prompt' is {_kind(prompt)} ({_short(prompt)}); give the prompt as a string or "
                            "as a list of chat messages")
        if not isinstance(record["completion"], str):
            raise DataError(f"{where}: 'completion' must be a string, got {_kind(record['completion'])} "
                            f"({_short(record['completion'])}); give the answer text as a string")
        return {"prompt": prompt, "completion": record["completion"]}
    if not isinstance(record.get("text"), str):
        raise DataError(f"{where}: data.format=text needs a string 'text', got {_kind(record.get('text'))} "
                        f"({_short(record.get('text'))}); give the text as a string")
    return {"text": record["text"]}


def load_examples(path: str | Path, fmt: str = "auto", limit: int | None = None,
                  keep: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Read and normalize every example of ``path``; raise :class:`DataError` on an empty file or a bad record.

    ``keep``: extra fields copied as they are when a record has them (``crossdistill eval`` keeps ``answer``); the
    default keeps only the format's fields, which is what dataset fingerprints are computed over.
    """
    records = read_records(path)
    if limit is not None:
        records = records[:limit]
    if not records:
        raise DataError(f"data file {str(path)!r} has no examples; give a file with at least one example")
    out = []
    for i, rec in enumerate(records):
        where = f"{path}: example {i}"
        if not isinstance(rec, dict):
            raise DataError(f"{where} is a {type(rec).__name__}, not an object; write one JSON object per line "
                            "(messages, prompt + completion, or text)")
        f = detect_format(rec, where) if fmt == "auto" else fmt
        example = normalize(rec, f, where)  # type: ignore[arg-type]
        example.update({k: rec[k] for k in keep if k in rec})
        out.append(example)
    return out


def split_eval(examples: list[dict[str, Any]], fraction: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(train, held_out)``: the last ``max(1, round(n * fraction))`` examples are held out (none when ``fraction``
    is 0 or there are fewer than 2 examples). Training and ``crossdistill eval`` both split by this rule, so eval
    scores exactly the examples the run held out."""
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    n_eval = max(1, int(round(len(examples) * fraction)))
    return examples[:-n_eval], examples[-n_eval:]


def prompt_messages(example: dict[str, Any]) -> tuple[list[dict[str, str]] | str | None, str]:
    """``(prompt, completion)`` of a normalized example: the prompt as messages or text (``None`` for plain
    text), the completion as text."""
    if "messages" in example:
        return example["messages"][:-1], example["messages"][-1]["content"]
    if "prompt" in example:
        return example["prompt"], example["completion"]
    return None, example["text"]
