"""``crossdistill cache RECIPE [key=value ...]`` and ``crossdistill cache-info PATH``.

Examples (CPU)::

    crossdistill cache recipes/tiny_cache.yaml output=outputs/cache k=32
    crossdistill cache teacher=path/to/teacher data=train.jsonl output=outputs/cache
    crossdistill cache-info outputs/cache --verify

``cache`` reads the recipe's ``cache_build:`` section (:class:`crossdistill.config.CacheBuildConfig`); a ``key=value``
without a dot sets a ``cache_build`` field, a dotted one any recipe field (``data.max_length=64``). Rerunning ``cache``
with the same recipe resumes an interrupted run at the first incomplete shard; a complete cache is left as it is.
Many GPUs: ``accelerate launch -m crossdistill cache RECIPE`` (each rank writes its own shards).
"""

from __future__ import annotations

import argparse
import json
import sys


def main_cache(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="crossdistill cache", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", help="YAML recipe with a cache_build: section (a training recipe may "
                        "hold one)")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. k=64 output=outputs/cache (cache_build "
                        "fields) or data.max_length=64")
    parser.add_argument("--workers", type=int, default=None, help="local worker processes (default: recipe, 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)

    from crossdistill.config import load_cache_build_config
    from crossdistill.teacher.server import ServerError
    from crossdistill.teacher.writer import build_cache

    recipe, overrides = args.recipe, list(args.overrides)
    if recipe is not None and "=" in recipe:  # only overrides were given
        recipe, overrides = None, [recipe] + overrides
    if args.workers is not None:
        overrides.append(f"workers={args.workers}")
    try:
        cfg = load_cache_build_config(recipe, overrides)
    except ValueError as err:  # ConfigError: a missing recipe, a wrong type or range, a renamed section
        print(f"crossdistill cache: {err}", file=sys.stderr)
        return 2
    try:
        manifest = build_cache(cfg, progress=not args.no_progress)
    except (FileExistsError, FileNotFoundError, ValueError, ServerError) as err:  # bad data, tokenizer, a foreign
        print(f"crossdistill cache: {err}", file=sys.stderr)                     # output dir, a failing server
        return 1
    tokens = sum(f["tokens"] for f in manifest.files)
    print(f"cache complete: {cfg.output} ({len(manifest.files)} shards, {tokens} tokens, k={manifest.k})")
    return 0


def format_info(stats: dict) -> str:
    rows = [
        ("path", stats["path"]), ("teacher", stats["teacher"]),
        ("support", f"{stats['support']} k={stats['k']} ({stats['value_dtype']} values, {stats['id_bits']}-bit ids, "
                    f"V={stats['vocab_size']})"),
        ("temperature", stats["temperature"]),
        ("examples", f"{stats['examples']} ({stats['examples_with_tokens']} with completion tokens)"),
        ("coverage", f"{100 * stats['coverage']:.1f}% of the dataset's examples"),
        ("tokens", stats["tokens"]), ("shards", stats["shards"]),
        ("size", f"{stats['bytes']:,} bytes ({stats['bytes'] / 2**20:.2f} MiB)"),
        ("bytes/token", f"{stats['bytes_per_token']:.2f} (shards only: {stats['shard_bytes_per_token']:.2f})"),
        ("mean tail mass", f"{stats['mean_tail_mass']:.4f} (teacher mass outside the stored ids)"),
    ]
    if "verified" in stats:
        rows.append(("checksums", stats["verified"]))
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main_cache_info(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="crossdistill cache-info",
                                     description="size, bytes per token, k, teacher, coverage and tail mass of a cache")
    parser.add_argument("path", help="cache directory")
    parser.add_argument("--verify", action="store_true", help="also verify every shard's sha256 (reads everything)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    from crossdistill.teacher.reader import CacheError, CacheReader

    try:
        reader = CacheReader(args.path)
        stats = reader.stats()
        if args.verify:
            reader.verify_all()
            stats["verified"] = f"all {reader.num_shards} shards OK"
    except (CacheError, FileNotFoundError) as err:
        print(f"crossdistill cache-info: {err}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=1) if args.json else format_info(stats))
    return 0


main = main_cache
