"""``crossdistill cache RECIPE [key=value ...] [--overwrite]`` and ``crossdistill cache-info PATH [--verify]``.

What the commands do is in :data:`CACHE_HELP`, the text ``crossdistill cache --help`` prints (plain text: argparse
prints a description as it is, so it carries no markup). The recipe's section is
:class:`crossdistill.config.CacheBuildConfig`.
"""

from __future__ import annotations

import argparse
import json
import sys

CACHE_HELP = """\
Write the teacher's top-k (or sampled) distributions over a dataset's completions to a sharded, checksummed cache
that training reads instead of running the teacher (teacher.cache=DIR).

examples (CPU):
  crossdistill cache recipes/tiny_cache.yaml output=outputs/cache k=32
  crossdistill cache teacher=path/to/teacher data=train.jsonl output=outputs/cache
  crossdistill cache-info outputs/cache --verify

The recipe's cache_build: section holds the settings; a key=value without a dot sets a cache_build field, a dotted
one any recipe field (data.max_length=64). Rerunning with the same settings resumes an interrupted run at the first
incomplete shard; on a complete cache it verifies every shard and rebuilds only the damaged ones. An output
directory that holds another config's cache, or files that are not a cache, is refused unless --overwrite.
Many GPUs: accelerate launch -m crossdistill cache RECIPE (each rank writes its own shards).
"""


def main_cache(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="crossdistill cache", description=CACHE_HELP,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", nargs="?", help="YAML recipe with a cache_build: section (a training recipe may "
                        "hold one)")
    parser.add_argument("overrides", nargs="*", help="key=value settings, e.g. k=64 output=outputs/cache (cache_build "
                        "fields) or data.max_length=64")
    parser.add_argument("--workers", type=int, default=None, help="local worker processes (default: recipe, 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--overwrite", action="store_true", help="delete whatever the output directory holds (another "
                        "config's cache, other files) and build the cache afresh")
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
    from crossdistill.io import os_error_message

    try:
        manifest = build_cache(cfg, progress=not args.no_progress, overwrite=args.overwrite)
    except (FileExistsError, FileNotFoundError, ValueError, ServerError) as err:  # bad data, tokenizer, a foreign
        print(f"crossdistill cache: {err}", file=sys.stderr)                     # output dir, a failing server
        return 1
    except Exception as err:  # a full disk, a permission fault: say which, with the path and the free space
        message = os_error_message(err, cfg.output)
        if message is None:
            raise
        print(f"crossdistill cache: error: {message}", file=sys.stderr)
        return 1
    tokens = sum(f["tokens"] for f in manifest.files)
    print(f"cache complete: {cfg.output} ({len(manifest.files)} shards verified, {tokens} tokens, k={manifest.k})")
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
                                     description="size, bytes per token, k, teacher, coverage and tail mass of a "
                                     "cache; --verify also checks every shard and lists the damaged ones (exit 1)")
    parser.add_argument("path", help="cache directory")
    parser.add_argument("--verify", action="store_true", help="also verify every shard's sha256 (reads everything)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    from crossdistill.teacher.reader import CacheError, CacheReader, repair_hint

    try:
        reader = CacheReader(args.path, check_sizes=not args.verify)
        if args.verify:
            bad = reader.verify_report()
            if bad:
                lines = "\n".join(f"  {reader.path / name}: {why}" for name, why in bad)
                hint = repair_hint(reader.path)
                print(f"crossdistill cache-info: {len(bad)} of {reader.num_shards} shards of {reader.path} are "
                      f"damaged:\n{lines}\n{hint[0].upper() + hint[1:]}", file=sys.stderr)
                return 1
        stats = reader.stats()
        if args.verify:
            stats["verified"] = f"all {reader.num_shards} shards OK"
    except (CacheError, FileNotFoundError) as err:
        print(f"crossdistill cache-info: {err}", file=sys.stderr)
        return 1
    print(json.dumps(stats, indent=1) if args.json else format_info(stats))
    return 0


main = main_cache
