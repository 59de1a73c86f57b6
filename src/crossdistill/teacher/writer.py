"""Write a teacher cache: plan, shards (atomic, checksummed, resumable), then the manifest.

Life of a cache directory::

    .plan.json                  the manifest without files, written first; a resumed run must match it exactly
    shard-00000.safetensors     written to a temporary file and renamed (atomic)
    shard-00000.done.json       {name, bytes, sha256, examples, tokens}, written (atomically) after its shard
    ...
    manifest.json               plan + every shard record; written LAST: its presence means "complete"

A shard is done when its ``.done.json`` exists and the shard file has that size and sha256, so a rerun after a crash
(or a kill at any instant) redoes exactly the first incomplete shards. A rerun on a COMPLETE cache verifies every
shard against the manifest; if any fails, the cache goes back to the in-progress state (plan and the good shards'
records first, the manifest removed last) and only the damaged shards are rebuilt. An output directory that holds
anything else (another config's cache, other files) is refused unless ``overwrite``. Shard i holds examples
``[i * examples_per_shard, (i + 1) * examples_per_shard)``, batches inside it are fixed, sampled supports are seeded
per example, and file names carry the global shard index rather than the rank: the bytes do not depend on
interruptions or on the number of workers. Workers (local processes or accelerate ranks) take every
``world``-th shard; the merge step (rank 0) turns the records into the manifest and removes the scaffolding.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from crossdistill.config import CacheBuildConfig, validate_cache_build
from crossdistill.io import sha256_file, write_bytes, write_text
from crossdistill.manifest import MANIFEST_NAME, Manifest, dataset_fingerprint, text_hash, tokenizer_hash, vocab_hash
from crossdistill.teacher.bitpack import bits_for
from crossdistill.teacher.format import FORMAT_VERSION, concat_examples, encode_shard, shard_name
from crossdistill.version import __version__

PLAN_NAME = ".plan.json"
FAIL_ENV = "CROSSDISTILL_CACHE_FAIL_AFTER"
"""Test hook: ``N`` — after N shards written by this process, leave half of the next shard in a temporary file and
raise ``InjectedFailure``; ``N:kill`` — the same, then SIGKILL the process (no Python cleanup runs)."""


class InjectedFailure(RuntimeError):
    """Raised by the :data:`FAIL_ENV` test hook to simulate a crash mid-run."""


def done_name(index: int) -> str:
    return shard_name(index).replace(".safetensors", ".done.json")


def load_cache_examples(cfg: CacheBuildConfig) -> list[dict[str, Any]]:
    """Normalized examples (``crossdistill.data.load``), the same ones the fingerprint and training use."""
    from crossdistill.data.load import load_examples

    return load_examples(cfg.data, limit=cfg.limit)


def plan_manifest(cfg: CacheBuildConfig, tokenizer: Any, examples: list[dict[str, Any]]) -> Manifest:
    """The manifest this run will produce, without the shard records."""
    vocab = len(tokenizer)
    num_shards = -(-len(examples) // cfg.examples_per_shard)
    extra = {
        "support": cfg.support, "value_dtype": cfg.value_dtype, "bits": bits_for(vocab), "vocab_size": vocab,
        "num_examples": len(examples), "num_shards": num_shards, "examples_per_shard": cfg.examples_per_shard,
        "batch_size": cfg.batch_size, "max_length": cfg.max_length, "seed": cfg.seed if cfg.support == "sampled"
        else None, "teacher_dtype": cfg.teacher_dtype,
    }
    if cfg.server is not None:  # scored by a served teacher: its model name (never the URL's key or credentials)
        extra["teacher_server_model"] = cfg.server.model
    return Manifest(
        kind="cache", format_version=FORMAT_VERSION, tool_version=__version__, teacher=cfg.teacher,
        tokenizer_hashes={"teacher": tokenizer_hash(tokenizer), "teacher_vocab": vocab_hash(tokenizer)},
        chat_templates={"teacher": text_hash(getattr(tokenizer, "chat_template", None))},
        temperatures={"distillation": float(cfg.temperature)}, k=cfg.k,
        dataset_fingerprint=dataset_fingerprint(examples), extra=extra,
    )


def _shard_complete(out: Path, index: int) -> dict[str, Any] | None:
    """The shard's record if it is fully written and intact, else None."""
    done, shard = out / done_name(index), out / shard_name(index)
    if not done.exists() or not shard.exists():
        return None
    record = json.loads(done.read_text())
    if shard.stat().st_size != record["bytes"] or sha256_file(shard) != record["sha256"]:
        return None
    return record


CACHE_FILE = re.compile(r"^(shard-\d+\.safetensors|shard-\d+\.done\.json|manifest\.json|\.plan\.json|\..*\.tmp)$")
"""Names a cache directory may hold (anything else means the directory is not, or not only, a cache)."""


def verify_files(out: Path, files: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """``[(shard index, what is wrong)]`` for every shard of ``files`` (manifest records) that is missing, has
    another size or another sha256."""
    bad = []
    for i, record in enumerate(files):
        shard = out / record["name"]
        if not shard.is_file():
            bad.append((i, "missing"))
        elif shard.stat().st_size != record["bytes"]:
            bad.append((i, f"{shard.stat().st_size} bytes, the manifest records {record['bytes']}"))
        elif sha256_file(shard) != record["sha256"]:
            bad.append((i, "sha256 differs from the manifest's (corrupted)"))
    return bad


def _reopen_for_repair(out: Path, plan: Manifest, found: Manifest, bad: list[tuple[int, str]]) -> None:
    """Turn a complete cache with damaged shards back into an in-progress one, so the normal resume path rebuilds
    exactly the damaged shards. Kill-safe at every step: the plan and the good shards' records are written before
    the manifest is removed, and a rerun at any point verifies and resumes again."""
    for i, why in bad:
        print(f"crossdistill cache: {out / found.files[i]['name']} failed verification ({why}); rebuilding it",
              file=sys.stderr)
    write_text(out / PLAN_NAME, plan.to_json())
    damaged = {i for i, _ in bad}
    for i, record in enumerate(found.files):
        if i not in damaged:
            write_text(out / done_name(i), json.dumps(record, sort_keys=True))
    (out / MANIFEST_NAME).unlink()


def _artifact_kind(manifest: Path) -> str | None:
    """The ``kind`` a manifest file declares, or ``None`` (no file, or not readable as one)."""
    try:
        return json.loads(manifest.read_text()).get("kind") if manifest.is_file() else None
    except (ValueError, AttributeError, OSError):
        return None


def _refuse(out: Path, what: str) -> None:
    raise FileExistsError(f"cache_build.output={str(out)!r} {what}. Choose another output, or pass --overwrite to "
                          "replace it")


def prepare_output(cfg: CacheBuildConfig, plan: Manifest, overwrite: bool = False) -> bool:
    """Create the output directory and check it against the plan. Returns True when the cache is already complete
    and every shard verifies; a complete cache with damaged shards is reopened so they are rebuilt.

    Raises ``FileExistsError`` when the output is a file, or holds a (partial) cache of a different config or files
    that are not a cache, unless ``overwrite`` (then the directory is deleted first).
    """
    out = Path(cfg.output)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"cache_build.output={str(out)!r} is a file; give a directory for the cache")
    foreign = sorted(p.name for p in out.iterdir() if not CACHE_FILE.match(p.name)) if out.is_dir() else []
    problem = None
    other_kind = _artifact_kind(out / MANIFEST_NAME)
    if other_kind not in (None, "cache"):
        problem = f"holds a {other_kind!r} artifact (its {MANIFEST_NAME} says so), not a teacher cache"
    elif foreign:
        problem = (f"holds files that are not part of a cache ({', '.join(foreign[:5])}"
                   f"{' ...' if len(foreign) > 5 else ''})")
    elif (out / MANIFEST_NAME).exists():
        try:
            found = Manifest.read(out)
            differences = replace(found, files=[]).diff(plan, include_informational=False)
        except (ValueError, KeyError, TypeError) as err:
            found, differences = None, [f"its {MANIFEST_NAME} cannot be read ({err})"]
        if differences:
            problem = "already holds a different cache (" + "; ".join(differences) + ")"
        elif not overwrite:
            bad = verify_files(out, found.files)
            if not bad:
                return True
            _reopen_for_repair(out, plan, found, bad)
    elif (out / PLAN_NAME).exists():
        try:
            differences = Manifest.read(out / PLAN_NAME).diff(plan)
        except (ValueError, KeyError, TypeError) as err:
            differences = [f"its {PLAN_NAME} cannot be read ({err})"]
        if differences:
            problem = "holds a partial cache of a different config (" + "; ".join(differences) + ")"
    if problem is not None or (overwrite and out.is_dir() and any(out.iterdir())):
        if not overwrite:
            _refuse(out, problem)
        shutil.rmtree(out)
    write_text(out / PLAN_NAME, plan.to_json())
    return False


def write_shards(cfg: CacheBuildConfig, examples: list[dict[str, Any]], rank: int = 0, world: int = 1,
                 device: str | torch.device = "cpu", progress: bool = True) -> int:
    """Write this rank's missing shards; return how many were written. Loads the teacher only if there is work."""
    from tqdm.auto import tqdm

    from crossdistill.data.load import prompt_messages
    from crossdistill.data.render import render
    from crossdistill.teacher.forward import load_teacher, teacher_records

    out = Path(cfg.output)
    num_shards = -(-len(examples) // cfg.examples_per_shard)
    todo = [i for i in range(rank, num_shards, world) if _shard_complete(out, i) is None]
    if not todo:
        return 0
    if cfg.server is not None:  # a served teacher: only its tokenizer loads here, the server scores
        from crossdistill.teacher.forward import load_tokenizer
        from crossdistill.teacher.server import ServedTeacher, server_records

        tok = load_tokenizer(cfg.teacher)
        served = ServedTeacher.connect(cfg.server, tok, k=cfg.k, where="cache_build.server",
                                       longest=cfg.max_length)
    else:
        model, tok = load_teacher(cfg.teacher, cfg.teacher_dtype, device)
    bits = bits_for(len(tok))
    hook = os.environ.get(FAIL_ENV, "")
    fail_after = int(hook.split(":")[0]) if hook else None
    written = 0
    for i in tqdm(todo, desc=f"cache rank {rank}", disable=not progress, position=rank, unit="shard"):
        lo, hi = i * cfg.examples_per_shard, min((i + 1) * cfg.examples_per_shard, len(examples))
        records: list[dict[str, torch.Tensor]] = []
        for s in range(lo, hi, cfg.batch_size):
            idx = list(range(s, min(s + cfg.batch_size, hi)))
            rendered = []
            for j in idx:
                prompt, completion = prompt_messages(examples[j])
                rendered.append(render(tok, prompt if prompt is not None else "", completion,
                                       max_length=cfg.max_length))
            if cfg.server is not None:
                records += server_records(served, rendered)
                continue
            records += teacher_records(model, tok, rendered, idx, k=cfg.k, support=cfg.support,
                                       temperature=cfg.temperature, seed=cfg.seed)
        blob = encode_shard(concat_examples(records, list(range(lo, hi))), bits=bits, value_dtype=cfg.value_dtype,
                            shard_index=i, support=cfg.support)
        if fail_after is not None and written >= fail_after:
            # Simulate a kill in the middle of a write: a half-written temporary file and no rename.
            (out / f".{shard_name(i)}.killed.tmp").write_bytes(blob[: len(blob) // 2])
            if hook.endswith(":kill"):
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFailure(f"{FAIL_ENV}={fail_after}: simulated crash while writing shard {i}")
        write_bytes(out / shard_name(i), blob)
        record = {"name": shard_name(i), "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest(),
                  "examples": [lo, hi], "tokens": sum(int(r["token_ids"].shape[0]) for r in records)}
        write_text(out / done_name(i), json.dumps(record, sort_keys=True))
        written += 1
    return written


def merge(cfg: CacheBuildConfig, plan: Manifest) -> Manifest:
    """After every rank finished: check every shard, write ``manifest.json`` (last), remove the scaffolding."""
    out = Path(cfg.output)
    num_shards = plan.extra["num_shards"]
    records = []
    for i in range(num_shards):
        record = _shard_complete(out, i)
        if record is None:
            raise RuntimeError(f"shard {i} of {cfg.output} is missing or damaged after all workers finished; rerun "
                               "`crossdistill cache` to redo it")
        records.append(record)
    manifest = replace(plan, files=records)
    manifest.write(out)
    for i in range(num_shards):
        (out / done_name(i)).unlink(missing_ok=True)
    (out / PLAN_NAME).unlink(missing_ok=True)
    for stale in out.glob(".*.tmp"):
        stale.unlink()
    return manifest


def _worker(cfg: CacheBuildConfig, examples: list[dict[str, Any]], rank: int, world: int, threads: int,
            progress: bool) -> None:
    torch.set_num_threads(threads)
    write_shards(cfg, examples, rank, world, "cpu", progress=progress)


def _resolve_device(cfg: CacheBuildConfig, state: Any = None) -> torch.device:
    if cfg.device != "auto":
        return torch.device(cfg.device)
    if state is not None:
        return state.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_cache(cfg: CacheBuildConfig, progress: bool = True, overwrite: bool = False) -> Manifest:
    """Run the whole cache job (resuming what a previous run left) and return the final manifest.

    A complete cache is verified (every shard's size and sha256) and its damaged shards are rebuilt. ``overwrite``
    deletes whatever ``cfg.output`` holds first; without it another config's cache, or files that are not a cache,
    are refused (``FileExistsError``).

    Under ``accelerate launch`` every process takes its share of shards and rank 0 merges; with ``cfg.workers > 1``
    local worker processes do the same on CPU.
    """
    from crossdistill.teacher.forward import load_tokenizer

    validate_cache_build(cfg)  # settings built by hand (not by the config loaders) are checked before any work too
    examples = load_cache_examples(cfg)
    tokenizer = load_tokenizer(cfg.teacher)  # cheap; the model loads only if work remains
    if cfg.server is not None:  # check the served teacher before any work, and record the model it serves
        from crossdistill.teacher.server import ServedTeacher

        served = ServedTeacher.connect(cfg.server, tokenizer, k=cfg.k, where="cache_build.server",
                                       longest=cfg.max_length)
        cfg = replace(cfg, server=replace(cfg.server, model=served.client.model))
        served.close()
    plan = plan_manifest(cfg, tokenizer, examples)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # accelerate / torchrun ranks
        from accelerate import PartialState

        state = PartialState()
        done = prepare_output(cfg, plan, overwrite) if state.is_main_process else False
        state.wait_for_everyone()
        done = done or (Path(cfg.output) / MANIFEST_NAME).exists()
        if not done:
            write_shards(cfg, examples, state.process_index, state.num_processes, _resolve_device(cfg, state),
                         progress)
        state.wait_for_everyone()
        if state.is_main_process and not done:
            merge(cfg, plan)
        state.wait_for_everyone()
        return Manifest.read(cfg.output)
    if prepare_output(cfg, plan, overwrite):
        return Manifest.read(cfg.output)
    if cfg.workers > 1:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        threads = max(1, torch.get_num_threads() // cfg.workers)
        procs = [ctx.Process(target=_worker, args=(cfg, examples, r, cfg.workers, threads, progress))
                 for r in range(cfg.workers)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        failed = [r for r, p in enumerate(procs) if p.exitcode != 0]
        if failed:
            raise RuntimeError(f"cache worker(s) {failed} failed; rerun the same command to resume")
    else:
        write_shards(cfg, examples, 0, 1, _resolve_device(cfg), progress)
    return merge(cfg, plan)
