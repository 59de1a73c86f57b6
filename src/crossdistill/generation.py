"""``crossdistill generate RECIPE [key=value ...]``: the teacher answers every training prompt (hard labels, SeqKD).

Writes ``generate.output/examples.jsonl`` (``{"prompt": ..., "completion": ...}``, the prompt exactly as given, so each
model renders it with its own template at training time) and ``manifest.json`` (teacher, tokenizer and template
hashes, sampling temperature, source-data fingerprint). The directory is written under a temporary name and renamed
when complete, so a half-written dataset is never read. Train on it with ``data.train=<output>`` and ``loss.name=ce``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

from crossdistill.config import ConfigError, DistillConfig, load_config
from crossdistill.data.load import DataError, load_examples, prompt_messages
from crossdistill.io import publish_dir
from crossdistill.models import generate

FORMAT_VERSION = 1


def generate_completions(model: Any, tok: Any, prompts: list[Any], cfg: DistillConfig, progress: bool = True,
                         seed: int | None = None) -> list[str]:
    """Teacher completions (text, special tokens removed) for each prompt, rendered with the teacher's template.

    ``generate.temperature == 0`` decodes greedily; otherwise it samples (with ``seed``, reproducibly). Top-k is left
    to the teacher's own ``generation_config``, as this command has always done.
    """
    g = cfg.generate
    gens = generate(model, tok, prompts, max_new_tokens=g.max_new_tokens, do_sample=g.temperature > 0,
                    temperature=g.temperature, top_p=g.top_p, seed=seed, batch_size=g.batch_size,
                    progress=progress, desc="generate")
    return [x.text for x in gens]


def run_generate(cfg: DistillConfig, progress: bool = True) -> Path:
    """Generate the dataset of ``cfg.generate.output``; returns its directory."""
    from crossdistill import models
    from crossdistill.version import __version__
    from crossdistill.manifest import Manifest, dataset_fingerprint, text_hash, tokenizer_hash

    if cfg.teacher is None:
        raise ConfigError("crossdistill generate needs a teacher: add teacher.model to the recipe")
    if not cfg.generate.output:
        raise ConfigError("generate.output is empty; give the directory to write the generated dataset to")
    if cfg.generate.max_new_tokens < 1:
        raise ConfigError(f"generate.max_new_tokens={cfg.generate.max_new_tokens} must be >= 1")
    examples = load_examples(cfg.data.train, cfg.data.format, cfg.data.max_examples)
    prompts = []
    for i, ex in enumerate(examples):
        prompt, _ = prompt_messages(ex)
        if prompt is None:
            raise DataError(f"data.train example {i} is plain text: generation needs prompts (messages or "
                            "prompt/completion examples)")
        prompts.append(prompt)
    tok = models.load_tokenizer(cfg.teacher, "teacher")
    model = models.freeze_teacher(models.load_model(cfg.teacher, "teacher",
                                                    device="cuda" if torch.cuda.is_available() else "cpu"))
    completions = generate_completions(model, tok, prompts, cfg, progress, seed=cfg.train.seed)
    out = Path(cfg.generate.output)
    with publish_dir(out) as tmp:  # an earlier dataset at ``out`` is replaced only by a complete new one
        with open(tmp / "examples.jsonl", "w", encoding="utf-8") as f:
            for p, c in zip(prompts, completions):
                f.write(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n")
        Manifest(kind="dataset", format_version=FORMAT_VERSION, tool_version=__version__, teacher=cfg.teacher.model,
                 tokenizer_hashes={"teacher": tokenizer_hash(tok)},
                 chat_templates={"teacher": text_hash(getattr(tok, "chat_template", None))},
                 temperatures={"sampling": cfg.generate.temperature},
                 dataset_fingerprint=dataset_fingerprint(examples),
                 extra={"max_new_tokens": cfg.generate.max_new_tokens, "top_p": cfg.generate.top_p}).write(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="crossdistill generate", description="Teacher generations -> dataset with "
                                "manifest, for hard-label training (loss.name=ce, data.train=<output>).")
    p.add_argument("recipe", help="YAML recipe with teacher:, data.train and generate.output")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. generate.max_new_tokens=64")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.recipe, args.overrides)
        out = run_generate(cfg, progress=cfg.train.progress_bar)
    except (ConfigError, DataError) as err:
        print(f"crossdistill generate: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'examples.jsonl'} and {out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
