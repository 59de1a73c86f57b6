"""The public Python API: the CLI's commands as functions, and the method registry.

    import crossdistill as cd
    record = cd.distill("recipes/tiny.yaml", ["loss.name=forward_kl", "onpolicy.lmbda=0"])   # crossdistill train
    path = cd.generate("recipes/tiny.yaml", ["generate.output=outputs/tiny/gen"])           # crossdistill generate
    manifest = cd.build_cache("recipes/tiny_cache.yaml")                                     # crossdistill cache
    results = cd.evaluate({"student": "outputs/tiny/run"}, "outputs/tiny/chat.jsonl")        # crossdistill eval
    report = cd.align_report("smollm2", "gemma3")                                            # crossdistill align-report
    cd.register(cd.Method(...))                                                              # a method of your own

Every function takes a recipe path (or ``None`` for the defaults) plus ``key=value`` overrides, or a built config,
and validates everything before any weights load, exactly as the command does. Heavy libraries load on first call.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crossdistill.config import CacheBuildConfig, DistillConfig, load_config
from crossdistill.methods import METHODS, Method, get_method, register


def _config(config: DistillConfig | str | Path | None, overrides: Sequence[str]) -> DistillConfig:
    if isinstance(config, DistillConfig):
        if overrides:
            raise ValueError("overrides: pass key=value overrides together with a recipe path, not with a "
                             "DistillConfig (set the fields on the object instead)")
        return config
    return load_config(config, list(overrides))


def distill(config: DistillConfig | str | Path | None, overrides: Sequence[str] = (), resume: bool = False,
            overwrite: bool = False, callbacks: Sequence[Any] = ()) -> dict[str, Any]:
    """Train the student a recipe describes (``crossdistill train``). Returns the run record appended to
    ``runs.jsonl`` (sizes, tokens, validation losses, bits per byte). ``train.output_dir`` must be empty unless
    ``resume`` (continue the same config's run) or ``overwrite`` (delete the previous run first). ``callbacks``:
    ``transformers.TrainerCallback`` objects for the run."""
    from crossdistill.train.run import run_training

    return run_training(_config(config, overrides), resume=resume, overwrite=overwrite,
                        callbacks=list(callbacks) or None)


def generate(config: DistillConfig | str | Path | None, overrides: Sequence[str] = (), overwrite: bool = False
             ) -> Path:
    """Teacher generations for hard-label / SeqKD training (``crossdistill generate``); returns the dataset
    directory (with its manifest). An existing ``generate.output`` that holds this config's dataset is returned as
    it is; anything else there is refused unless ``overwrite``."""
    from crossdistill.generation import run_generate

    return run_generate(_config(config, overrides), overwrite=overwrite)


def build_cache(recipe: str | Path | Mapping[str, Any] | CacheBuildConfig | None, overrides: Sequence[str] = (),
                progress: bool = True, overwrite: bool = False) -> Any:
    """The teacher's top-k distributions as a sharded, checksummed cache (``crossdistill cache``). ``recipe``: a
    recipe path (its ``cache_build:`` section, completed from its teacher and data), the ``cache_build`` settings as
    a mapping, or a :class:`CacheBuildConfig`. Resumable; a complete cache is verified and its damaged shards
    rebuilt; a different artifact in the output directory is refused unless ``overwrite``. Returns the cache's
    manifest."""
    from crossdistill.config import cache_build_from_dict, load_cache_build_config
    from crossdistill.teacher.writer import build_cache as write

    if isinstance(recipe, CacheBuildConfig):
        cfg = recipe
    elif isinstance(recipe, Mapping):
        if overrides:
            raise ValueError("overrides: pass key=value overrides with a recipe path, not with a settings mapping")
        cfg = cache_build_from_dict(dict(recipe))
    else:
        cfg = load_cache_build_config(recipe, list(overrides))
    return write(cfg, progress=progress, overwrite=overwrite)


def evaluate(models: Mapping[str, str], data: str | Path | Sequence[Mapping[str, Any]], *,
             teacher: str | None = None, generate: bool = True, max_new_tokens: int = 64, batch_size: int = 8,
             max_length: int = 512, progress: bool = False) -> dict[str, Any]:
    """Bits per byte, cross-entropy, teacher agreement and task accuracy (``crossdistill eval``) of each named
    model (a directory, a ``.gguf`` file or a Hub id) on held-out examples (a data file or records). Returns
    ``{name: EvalResult}``."""
    from crossdistill.data.load import load_examples
    from crossdistill.evaluation import evaluate_models, load_pretrained

    records = load_examples(data, keep=("answer",)) if isinstance(data, (str, Path)) else list(data)
    loaded = {name: load_pretrained(str(ref), "student") for name, ref in models.items()}
    results, _ = evaluate_models(loaded, records, teacher=load_pretrained(teacher, "teacher") if teacher else None,
                                 generate=generate, max_new_tokens=max_new_tokens, batch_size=batch_size,
                                 max_length=max_length, progress=progress)
    return results


def align_report(teacher: str, student: str, texts: Sequence[str] | None = None, worst: int = 5) -> dict[str, Any]:
    """How well two tokenizers line up (``crossdistill align-report``): the share of tokens in 1:1 groups, group sizes,
    vocabulary overlap and the worst splits, on ``texts`` (default: built-in samples)."""
    from crossdistill.alignment_report import build_report, load_tokenizer, read_texts

    report = build_report(load_tokenizer(teacher, "teacher"), load_tokenizer(student, "student"),
                          list(texts) if texts is not None else read_texts(None), worst=worst)
    report["teacher"]["name"], report["student"]["name"] = teacher, student
    return report


def transfer_tokenizer(model: str | Path, tokenizer: str | Path, out: str | Path, *, layers: int | None = None,
                       special_map: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Save at ``out`` the pretrained ``model`` re-targeted to ``tokenizer`` (a student that starts from a pretrained
    body under its own vocabulary; :mod:`crossdistill.transfer`); returns how its vocabulary was initialised."""
    from dataclasses import asdict

    from crossdistill.transfer import transfer_model

    return asdict(transfer_model(model, tokenizer, out, layers=layers, special_map=special_map))


def list_methods() -> dict[str, Method]:
    """Every registered method by name (``loss.name``)."""
    return dict(METHODS)


__all__ = ["DistillConfig", "Method", "align_report", "build_cache", "distill", "evaluate", "generate", "get_method",
           "list_methods", "load_config", "register", "transfer_tokenizer"]
