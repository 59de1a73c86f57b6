"""``crossdistill generate RECIPE [key=value ...] [--overwrite]``: the teacher answers every training prompt (hard
labels, SeqKD).

Writes ``generate.output/examples.jsonl`` (``{"prompt": ..., "completion": ...}``, the prompt exactly as given, so each
model renders it with its own template at training time) and ``manifest.json`` (teacher, tokenizer and template
hashes, sampling temperature, seed, source-data fingerprint). The directory is written under a temporary name and
renamed when complete, so a half-written dataset is never read. Train on it with ``data.train=<output>`` and
``loss.name=ce``.

An existing ``generate.output`` is never replaced silently:

* it holds the dataset this very config makes (same manifest, every example present): nothing is done, the command
  reports "already complete" and loads no weights;
* it holds anything else (another config's dataset, other files): refused, naming what differs, unless
  ``--overwrite`` (then the new dataset replaces it once complete; the old one stays until then).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # heavy imports wait until the command runs, so `crossdistill generate --help` is instant
    from crossdistill.config import DistillConfig
    from crossdistill.manifest import Manifest

FORMAT_VERSION = 1
EXAMPLES_NAME = "examples.jsonl"


def generate_completions(model: Any, tok: Any, prompts: list[Any], cfg: DistillConfig, progress: bool = True,
                         seed: int | None = None) -> list[str]:
    """Teacher completions (text, special tokens removed) for each prompt, rendered with the teacher's template.

    ``generate.temperature == 0`` decodes greedily; otherwise it samples (with ``seed``, reproducibly). Top-k is left
    to the teacher's own ``generation_config``, as this command has always done.
    """
    from crossdistill.models import generate

    g = cfg.generate
    gens = generate(model, tok, prompts, max_new_tokens=g.max_new_tokens, do_sample=g.temperature > 0,
                    temperature=g.temperature, top_p=g.top_p, seed=seed, batch_size=g.batch_size,
                    progress=progress, desc="generate")
    return [x.text for x in gens]


def expected_manifest(cfg: DistillConfig, tok: Any, examples: list[dict[str, Any]]) -> Manifest:
    """The manifest the generated dataset of ``cfg`` carries (everything that changes its content)."""
    from crossdistill.manifest import Manifest, dataset_fingerprint, text_hash, tokenizer_hash
    from crossdistill.version import __version__

    g = cfg.generate
    return Manifest(kind="dataset", format_version=FORMAT_VERSION, tool_version=__version__, teacher=cfg.teacher.model,
                    tokenizer_hashes={"teacher": tokenizer_hash(tok)},
                    chat_templates={"teacher": text_hash(getattr(tok, "chat_template", None))},
                    temperatures={"sampling": g.temperature}, dataset_fingerprint=dataset_fingerprint(examples),
                    extra={"max_new_tokens": g.max_new_tokens, "top_p": g.top_p,
                           "seed": cfg.train.seed if g.temperature > 0 else None})  # greedy: the seed changes nothing


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def check_output(out: Path, expected: Manifest, num_examples: int, overwrite: bool) -> bool:
    """Whether ``out`` already holds exactly the dataset ``expected`` describes (True: nothing to do).

    Raises :class:`~crossdistill.config.ConfigError` when ``out`` holds anything else and ``overwrite`` is False.
    """
    from crossdistill.config import ConfigError
    from crossdistill.manifest import MANIFEST_NAME, Manifest

    if not out.exists():
        return False
    if not out.is_dir():
        raise ConfigError(f"generate.output={str(out)!r} is a file; give a directory to write the dataset to")
    entries = [p.name for p in out.iterdir()]
    if not entries:
        return False
    hint = "choose another generate.output, or pass --overwrite to replace it"
    if not (out / MANIFEST_NAME).is_file():
        if overwrite:
            return False
        raise ConfigError(f"generate.output={str(out)!r} is not empty ({', '.join(sorted(entries)[:5])}"
                          f"{' ...' if len(entries) > 5 else ''}) and holds no generated dataset; {hint}")
    try:
        found = Manifest.read(out)
        differences = [d for d in found.diff(expected) if not d.startswith("files")]
    except (ValueError, KeyError, TypeError) as err:
        differences = [f"its {MANIFEST_NAME} is unreadable ({err})"]
    complete = (out / EXAMPLES_NAME).is_file() and _count_lines(out / EXAMPLES_NAME) == num_examples
    if not differences and complete:
        return not overwrite  # --overwrite regenerates even an identical dataset
    if overwrite:
        return False
    what = "; ".join(differences) if differences else f"{EXAMPLES_NAME} is missing or does not hold {num_examples} " \
                                                      "examples"
    raise ConfigError(f"generate.output={str(out)!r} already holds a different dataset ({what}); {hint}")


def _check_writable(out: Path) -> None:
    """The directory that will hold ``out`` can be written (a temporary directory is made and removed)."""
    import tempfile

    from crossdistill.config import ConfigError

    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:
        Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".probe.tmp", dir=parent)).rmdir()
    except OSError as err:
        from crossdistill.io import describe_os_error

        raise ConfigError(f"generate.output={str(out)!r} cannot be written: {describe_os_error(err, parent)}") \
            from None


def run_generate(cfg: DistillConfig, progress: bool = True, overwrite: bool = False) -> Path:
    """Generate the dataset of ``cfg.generate.output``; returns its directory.

    Everything is checked before the teacher's weights load: the settings, the data, the teacher's tokenizer and the
    output directory (:func:`check_output`). A directory that already holds this config's complete dataset is
    returned as it is (``overwrite=True`` regenerates it).
    """
    from crossdistill import models
    from crossdistill.config import ConfigError
    from crossdistill.config.validate import validate_generate
    from crossdistill.data.load import DataError, load_examples, prompt_messages
    from crossdistill.io import publish_dir

    if cfg.teacher is None or not cfg.teacher.model:
        raise ConfigError("crossdistill generate needs a teacher model: add teacher.model to the recipe")
    validate_generate(cfg.generate)
    examples = load_examples(cfg.data.train, cfg.data.format, cfg.data.max_examples)
    prompts = []
    for i, ex in enumerate(examples):
        prompt, _ = prompt_messages(ex)
        if prompt is None:
            raise DataError(f"data.train={cfg.data.train!r} example {i} is plain text: generation needs prompts "
                            "(messages or prompt/completion examples); give a file of prompts")
        prompts.append(prompt)
    out = Path(cfg.generate.output).expanduser()
    tok = models.load_tokenizer(cfg.teacher, "teacher")
    manifest = expected_manifest(cfg, tok, examples)
    if check_output(out, manifest, len(prompts), overwrite):
        print(f"crossdistill generate: {out} already holds this config's dataset ({len(prompts)} examples); "
              "nothing to do (pass --overwrite to generate it again)", file=sys.stderr)
        return out
    _check_writable(out)
    import torch

    model = models.freeze_teacher(models.load_model(cfg.teacher, "teacher",
                                                    device="cuda" if torch.cuda.is_available() else "cpu"))
    completions = generate_completions(model, tok, prompts, cfg, progress, seed=cfg.train.seed)
    with publish_dir(out) as tmp:  # an earlier dataset at ``out`` is replaced only by a complete new one
        with open(tmp / EXAMPLES_NAME, "w", encoding="utf-8") as f:
            for p, c in zip(prompts, completions):
                f.write(json.dumps({"prompt": p, "completion": c}, ensure_ascii=False) + "\n")
        manifest.write(tmp)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="crossdistill generate", description="Teacher generations -> dataset with "
                                "manifest, for hard-label training (loss.name=ce, data.train=<output>). A rerun of "
                                "the same config into the same directory does nothing; any other existing "
                                "generate.output is refused unless --overwrite.")
    p.add_argument("recipe", help="YAML recipe with teacher:, data.train and generate.output")
    p.add_argument("overrides", nargs="*", help="dotted overrides, e.g. generate.max_new_tokens=64")
    p.add_argument("--overwrite", action="store_true", help="replace an existing generate.output (the old dataset "
                   "stays until the new one is complete)")
    args = p.parse_args(argv)

    from crossdistill.config import ConfigError, load_config
    from crossdistill.data.load import DataError
    from crossdistill.io import os_error_message

    out = None
    try:
        cfg = load_config(args.recipe, args.overrides)
        out = Path(cfg.generate.output)
        out = run_generate(cfg, progress=cfg.train.progress_bar, overwrite=args.overwrite)
    except (ConfigError, DataError) as err:
        print(f"crossdistill generate: error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a full disk, a permission fault: say which, with the path and the free space
        message = os_error_message(err, out)
        if message is None:
            raise
        print(f"crossdistill generate: error: {message}", file=sys.stderr)
        return 1
    print(f"dataset: {out / EXAMPLES_NAME} and {out / 'manifest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
